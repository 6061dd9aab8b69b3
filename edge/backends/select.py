"""Hardware probe and backend choice: which board this is, which runtimes import, and
which backend each model runs on. `edge doctor` prints the decision with its reasons."""

from __future__ import annotations

import importlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from . import FORMATS


@dataclass(frozen=True)
class Board:
    kind: str    # "jetson" | "raspberry_pi" | "generic"
    model: str   # what the board says it is


@dataclass(frozen=True)
class Runtimes:
    onnxruntime: str | None          # version, or None when it does not import
    onnx_providers: tuple[str, ...]
    litert: str | None               # "ai_edge_litert x.y" / "tflite_runtime x.y" / None
    opencv: str | None
    opencv_cuda: bool
    edgetpu: bool


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
    def version(module: str) -> str | None:
        try:
            return getattr(importlib.import_module(module), "__version__", "?")
        except ImportError:
            return None

    ort_version = version("onnxruntime")
    providers: tuple[str, ...] = ()
    if ort_version:
        import onnxruntime
        providers = tuple(onnxruntime.get_available_providers())
    litert = None
    for module in ("ai_edge_litert", "tflite_runtime"):
        if version(module + ".interpreter") is not None:
            litert = f"{module} {version(module) or ''}".strip()
            break
    from .litert import edgetpu_available
    from .opencv_dnn import opencv_cuda_available
    cv_version = version("cv2")
    return Runtimes(ort_version, providers, litert, cv_version, bool(cv_version) and opencv_cuda_available(),
                    edgetpu_available())


def choose_backend(board: Board, runtimes: Runtimes, formats: set[str], requested: str = "auto",
                   machine: str | None = None) -> tuple[str, str]:
    """(backend key, why) for one model offered in `formats` (e.g. {"onnx", "tflite"}); `machine` is the CPU
    architecture (default platform.machine())."""
    usable = {
        "onnxruntime": runtimes.onnxruntime is not None and "onnx" in formats,
        "litert": runtimes.litert is not None and "tflite" in formats,
        "opencv": runtimes.opencv is not None and "onnx" in formats,
    }
    if requested != "auto":
        if not usable[requested]:
            return requested, f"{requested} requested in config, but it is not usable here " \
                              f"(runtime missing or no {FORMATS[requested]} file)"
        return requested, "requested in config"
    gpu = [p for p in runtimes.onnx_providers if p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")]
    if board.kind == "jetson" and usable["onnxruntime"] and gpu:
        return "onnxruntime", f"Jetson with {gpu[0]}"
    if board.kind == "jetson" and usable["opencv"] and runtimes.opencv_cuda:
        return "opencv", "Jetson: OpenCV built with CUDA, onnxruntime has no GPU provider"
    if board.kind == "raspberry_pi" and usable["litert"]:
        return "litert", "Raspberry Pi: LiteRT with XNNPACK is the fastest CPU runtime on ARM"
    machine = machine or platform.machine()
    # The runtimes were timed against each other on x86 only; other CPUs get the default, said as such.
    cpu_default = "fastest CPU runtime measured on x86" if machine.lower() in ("x86_64", "amd64", "i686") else \
        "the default CPU runtime off a Raspberry Pi or Jetson; not timed against LiteRT on this CPU, " \
        "compare with --set models.backend=litert"
    for key, why in (("onnxruntime", cpu_default),
                     ("litert", "onnxruntime not available"),
                     ("opencv", "only OpenCV DNN is available")):
        if usable[key]:
            return key, f"{board.kind} {machine}: {why}"
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
