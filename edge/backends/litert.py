"""LiteRT (TFLite) backend: ai_edge_litert first, tflite_runtime as the fallback."""

from __future__ import annotations

import ctypes.util
from pathlib import Path

import numpy as np

from . import ModelLoadError, register


def import_interpreter():
    """Return (Interpreter class, load_delegate function, runtime name), or raise ImportError."""
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate
        return Interpreter, load_delegate, "ai_edge_litert"
    except ImportError:
        # tflite_runtime is what older Raspberry Pi OS images carry.
        from tflite_runtime.interpreter import Interpreter, load_delegate
        return Interpreter, load_delegate, "tflite_runtime"


def edgetpu_available() -> bool:
    return ctypes.util.find_library("edgetpu") is not None


@register("litert")
class LiteRtBackend:
    name = "litert"
    file_format = "tflite"
    generic_rank, generic_why = 1, "onnxruntime not available"

    @staticmethod
    def probe() -> str | None:
        """"ai_edge_litert x.y" / "tflite_runtime x.y", or None."""
        try:
            _, _, runtime = import_interpreter()
        except ImportError:
            return None
        import importlib
        return f"{runtime} {getattr(importlib.import_module(runtime), '__version__', '')}".strip()

    def __init__(self, path: Path, threads: int = 0, edgetpu: bool = False, **_ignored):
        try:
            Interpreter, load_delegate, runtime = import_interpreter()
        except ImportError as exc:
            raise ModelLoadError(f"cannot load {path}: no LiteRT runtime (pip install ai-edge-litert)") from exc
        delegates = []
        if edgetpu:
            # The Coral delegate only accelerates models compiled for it (*_edgetpu.tflite).
            delegates.append(load_delegate("libedgetpu.so.1"))
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads or None,
                                       experimental_delegates=delegates or None)
        self.interpreter.allocate_tensors()
        self.device = f"{runtime} {'EdgeTPU' if edgetpu else 'XNNPACK'} x{threads or 'auto'}"
        self._input = self.interpreter.get_input_details()[0]
        self._outputs = sorted(self.interpreter.get_output_details(), key=lambda d: d["index"])
        self._shape = tuple(self._input["shape"])
        self.max_batch = int(self._shape[0])

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.shape != self._shape:
            # Needed for the fully convolutional MTCNN P-Net, whose input size follows the pyramid.
            self.interpreter.resize_tensor_input(self._input["index"], list(batch.shape))
            self.interpreter.allocate_tensors()
            self._input = self.interpreter.get_input_details()[0]
            self._outputs = sorted(self.interpreter.get_output_details(), key=lambda d: d["index"])
            self._shape = batch.shape
        self.interpreter.set_tensor(self._input["index"], batch)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]).copy() for d in self._outputs]
