"""Inference backends: each runs tensors through one model file and knows nothing of faces.

Every backend implements :class:`Backend`; models (``edge.models``) own pre/post-processing.
Backends register themselves by key so config can name them (``backend: onnxruntime``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np


class ModelLoadError(RuntimeError):
    """A model file is missing, corrupt or cannot be loaded by the chosen runtime."""


class Backend(Protocol):
    name: str          # e.g. "onnxruntime"
    device: str        # e.g. "CPUExecutionProvider" or "XNNPACK x2"
    max_batch: int     # 0 = any batch size, 1 = fixed batch of one

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run one NCHW float32 batch; return the model outputs in file order."""
        ...


BackendFactory = Callable[..., Backend]
REGISTRY: dict[str, BackendFactory] = {}
# Which model-file format each backend key loads.
FORMATS: dict[str, str] = {"onnxruntime": "onnx", "opencv": "onnx", "litert": "tflite"}


def register(key: str):
    def wrap(factory: BackendFactory) -> BackendFactory:
        REGISTRY[key] = factory
        return factory
    return wrap


def load_backend(key: str, path: Path, **options) -> Backend:
    """Instantiate backend `key` on model file `path`; errors always name the file."""
    _import_plugins()
    if key not in REGISTRY:
        raise ModelLoadError(f"unknown backend {key!r} (known: {', '.join(sorted(REGISTRY))})")
    if not Path(path).is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        return REGISTRY[key](Path(path), **options)
    except ModelLoadError:
        raise
    except Exception as exc:  # runtimes raise their own types; give one clear message
        raise ModelLoadError(f"cannot load model file {path} with {key}: {exc}") from exc


def run_batched(backend: Backend, batch: np.ndarray) -> list[np.ndarray]:
    """Run a batch on a backend, splitting it when the backend has a fixed batch size."""
    if backend.max_batch == 0 or len(batch) <= backend.max_batch:
        return backend.run(batch)
    parts = [backend.run(batch[i:i + backend.max_batch]) for i in range(0, len(batch), backend.max_batch)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def _import_plugins() -> None:
    # Importing registers; each module imports its runtime lazily so a missing runtime
    # only matters when that backend is chosen.
    from . import litert, onnxruntime, opencv_dnn  # noqa: F401
