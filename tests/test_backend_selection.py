"""Hardware probe and backend choice on faked board files (a temporary root) and on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.backends.onnxruntime import choose_providers
from edge.backends.select import Runtimes, choose_backend, probe_board, probe_runtimes
from edge.config import load_config
from edge.models.loader import plan

CPU_ONLY = ("CPUExecutionProvider",)
JETSON_ORT = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def runtimes(providers=CPU_ONLY, litert="ai_edge_litert 2.3.0", ort="1.30.0", cuda=False):
    return Runtimes({"onnxruntime": ort, "litert": litert, "opencv": "4.14.0"}, providers, cuda, False)


def fake_root(tmp_path: Path, model: str | None = None, tegra: bool = False) -> Path:
    if model is not None:
        (tmp_path / "proc/device-tree").mkdir(parents=True)
        (tmp_path / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
    if tegra:
        (tmp_path / "etc").mkdir(parents=True, exist_ok=True)
        (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.0\n")
    return tmp_path


def test_raspberry_pi_picks_litert(tmp_path):
    board = probe_board(fake_root(tmp_path, "Raspberry Pi 5 Model B Rev 1.0"))
    assert board.kind == "raspberry_pi"
    key, why = choose_backend(board, runtimes(), {"onnx", "tflite"})
    assert key == "litert" and "Raspberry Pi" in why
    # A model offered only as ONNX still runs, on onnxruntime.
    assert choose_backend(board, runtimes(), {"onnx"})[0] == "onnxruntime"


def test_jetson_picks_onnxruntime_with_tensorrt_then_cuda(tmp_path):
    board = probe_board(fake_root(tmp_path, "NVIDIA Jetson Orin Nano Developer Kit", tegra=True))
    assert board.kind == "jetson"
    key, why = choose_backend(board, runtimes(JETSON_ORT), {"onnx", "tflite"})
    assert key == "onnxruntime" and "TensorrtExecutionProvider" in why
    assert choose_providers(list(JETSON_ORT)) == list(JETSON_ORT)
    assert choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == \
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
    # Only nv_tegra_release (older L4T images have no device-tree model string).
    assert probe_board(fake_root(tmp_path / "old", tegra=True)).kind == "jetson"
    # A Jetson whose onnxruntime is CPU-only but whose OpenCV has CUDA uses OpenCV DNN.
    assert choose_backend(board, runtimes(CPU_ONLY, cuda=True), {"onnx"})[0] == "opencv"


def test_generic_machine_picks_onnxruntime_and_config_overrides(tmp_path):
    board = probe_board(fake_root(tmp_path))
    assert board.kind == "generic"
    assert choose_backend(board, runtimes(), {"onnx", "tflite"})[0] == "onnxruntime"
    assert choose_backend(board, runtimes(ort=None), {"onnx", "tflite"})[0] == "litert"
    assert choose_backend(board, runtimes(), {"onnx", "tflite"}, "opencv") == ("opencv", "requested in config")


def test_this_machine_plan_per_model_and_override():
    cfg = load_config(overrides=["models.embedding_backend=litert"])
    choices = {name: (key, file.format) for name, key, file, why in plan(cfg, probe_board(), probe_runtimes())}
    assert choices["age"] == ("onnxruntime", "onnx")
    assert choices["embedding"] == ("litert", "tflite")


def test_cpu_provider_is_always_kept():
    assert choose_providers(["CPUExecutionProvider"], ["CUDAExecutionProvider"]) == ["CPUExecutionProvider"]


def test_model_threads_follow_the_board_unless_set():
    from edge.backends.select import model_threads
    assert model_threads(0, cores=2) == 1      # a 2-core x86 box: one per model (measured best)
    assert model_threads(0, cores=4) == 2      # Raspberry Pi 4/5
    assert model_threads(0, cores=1) == 1
    assert model_threads(3, cores=2) == 3      # an explicit setting wins
