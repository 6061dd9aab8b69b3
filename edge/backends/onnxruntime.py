"""ONNX Runtime backend: execution providers picked from what this build offers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import register

DEFAULT_PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(available: list[str], preferred: tuple[str, ...] | list[str] = DEFAULT_PROVIDER_ORDER) -> list[str]:
    """Keep the preferred providers this build offers, in preference order; CPU always last."""
    chosen = [p for p in preferred if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def provider_options(chosen: list[str], cache_dir: Path | None) -> list:
    """Providers as ONNX Runtime takes them. TensorRT builds an engine per model when a session starts (minutes
    on a Jetson); its engine cache keeps them in the state directory (beside the database, writable by the
    service) so later starts load them in seconds. A changed model file gets a new engine (ORT hashes the model)."""
    if cache_dir is None or "TensorrtExecutionProvider" not in chosen:
        return list(chosen)
    return [("TensorrtExecutionProvider", {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir)})
            if p == "TensorrtExecutionProvider" else p for p in chosen]


@register("onnxruntime")
class OnnxRuntimeBackend:
    name = "onnxruntime"
    file_format = "onnx"
    generic_rank, generic_why = 0, "the fastest CPU runtime measured here (README, Performance)"
    max_batch = 0

    @staticmethod
    def probe() -> str | None:
        try:
            import onnxruntime
        except ImportError:
            return None
        return onnxruntime.__version__

    def __init__(self, path: Path, threads: int = 0, providers: list[str] | None = None,
                 optimization: str = "all", cache_dir: Path | None = None, **_ignored):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # 0 lets ORT decide; on a small board the daemon sets it so models do not fight.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Memory patterns are planned per input shape; P-Net sees a new shape at every pyramid level and
        # the face models a new batch size per face count. Off: MTCNN on 6 faces peaks at 273 MB instead
        # of 329 MB, at the same speed (benchmarks/bench_pipeline.py, README Performance).
        options.enable_mem_pattern = False
        options.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        chosen = choose_providers(ort.get_available_providers(), providers or DEFAULT_PROVIDER_ORDER)
        if cache_dir is not None and "TensorrtExecutionProvider" in chosen:
            Path(cache_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.session = ort.InferenceSession(str(path), sess_options=options,
                                            providers=provider_options(chosen, cache_dir))
        self.device = self.session.get_providers()[0]
        self.input_name = self.session.get_inputs()[0].name
        shape0 = self.session.get_inputs()[0].shape[0]
        self.max_batch = shape0 if isinstance(shape0, int) and shape0 > 0 else 0

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
