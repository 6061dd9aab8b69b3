"""Hardware probe and backend choice: which board this is, which runtimes import, and
which backend each model runs on. `edge doctor` prints the decision with its reasons."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from . import file_format, registered


@dataclass(frozen=True)
class Board:
    kind: str    # "jetson" | "raspberry_pi" | "generic"
    model: str   # what the board says it is


@dataclass(frozen=True)
class Runtimes:
    versions: dict[str, str | None]  # backend key -> its runtime's version, None when it does not import
    onnx_providers: tuple[str, ...] = ()
    opencv_cuda: bool = False
    edgetpu: bool = False

    @property
    def onnxruntime(self) -> str | None:
        return self.versions.get("onnxruntime")

    @property
    def litert(self) -> str | None:
        return self.versions.get("litert")

    @property
    def opencv(self) -> str | None:
        return self.versions.get("opencv")


def probe_board(root: Path = Path("/")) -> Board:
    """Identify the board from files the OS provides; `root` lets tests fake them."""
    model = ""
    for name in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        path = root / name
        if path.is_file():
            model = path.read_bytes().rstrip(b"\x00").decode(errors="replace").strip()
            break
    if (root / "etc/nv_tegra_release").is_file() or "jetson" in model.lower() or "nvidia" in model.lower():
        return Board("jetson", model or "NVIDIA Jetson (nv_tegra_release)")
    if "raspberry pi" in model.lower():
        return Board("raspberry_pi", model)
    return Board("generic", model or "generic computer")


def probe_runtimes() -> Runtimes:
    """Every registered backend's runtime version, and the accelerators the board-specific rules look at."""
    versions = {key: backend.probe() for key, backend in registered().items()}
    providers: tuple[str, ...] = ()
    if versions.get("onnxruntime"):
        import onnxruntime
        providers = tuple(onnxruntime.get_available_providers())
    from .litert import edgetpu_available
    from .opencv_dnn import opencv_cuda_available
    return Runtimes(versions, providers, bool(versions.get("opencv")) and opencv_cuda_available(),
                    edgetpu_available())


def choose_backend(board: Board, runtimes: Runtimes, formats: set[str], requested: str = "auto") -> tuple[str, str]:
    """(backend key, why) for one model offered in `formats` (e.g. {"onnx", "tflite"})."""
    backends = registered()
    usable = {key: runtimes.versions.get(key) is not None and file_format(key) in formats for key in backends}
    if requested != "auto":
        if not usable.get(requested):
            return requested, f"{requested} requested in config, but it is not usable here " \
                              f"(runtime missing or no {file_format(requested)} file)"
        return requested, "requested in config"
    gpu = [p for p in runtimes.onnx_providers if p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")]
    if board.kind == "jetson" and usable["onnxruntime"] and gpu:
        return "onnxruntime", f"Jetson with {gpu[0]}"
    if board.kind == "jetson" and usable["opencv"] and runtimes.opencv_cuda:
        return "opencv", "Jetson: OpenCV built with CUDA, onnxruntime has no GPU provider"
    if board.kind == "raspberry_pi" and usable["litert"]:
        return "litert", "Raspberry Pi: LiteRT with XNNPACK is the fastest CPU runtime on ARM"
    for key in sorted(backends, key=lambda k: backends[k].generic_rank):
        if usable[key]:
            return key, f"{board.kind} ({platform.machine()}): {backends[key].generic_why}"
    raise RuntimeError(f"no runtime can run any of {sorted(formats)}: install onnxruntime or ai-edge-litert")


def model_threads(requested: int, cores: int | None = None) -> int:
    """Intra-op threads per model runtime: `requested`, or for 0 half the board's cores (at least one).

    Detection and the model thread run at the same time (fastpath.overlap), so a runtime that takes
    every core fights them: measured on 2 cores, 1 thread per model gave the best frames/s
    (benchmarks/bench_batching.py); a 4-core Pi gets 2, a 6-core Jetson CPU 3.
    """
    if requested > 0:
        return requested
    return max(1, (cores or os.cpu_count() or 1) // 2)
