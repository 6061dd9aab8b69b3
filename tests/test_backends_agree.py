"""Every model on every backend available here, on real aligned face chips: the backends agree."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import DEMO_GALLERY, require_module
from edge.backends import load_backend
from edge.backends.select import probe_runtimes
from edge.config import load_config
from edge.models.age import AgeModel
from edge.models.embedding import EmbeddingModel
from edge.models.gender import GenderModel
from edge.models.loader import load_models
from edge.models.manifest import load_manifest, model_files
from edge.pipeline import analyze_faces

RUNTIMES = probe_runtimes()
BACKENDS = [key for key, present in (("onnxruntime", RUNTIMES.onnxruntime), ("litert", RUNTIMES.litert),
                                     ("opencv", RUNTIMES.opencv)) if present]
FORMAT = {"onnxruntime": "onnx", "opencv": "onnx", "litert": "tflite"}
# Measured differences are ~1e-5 or below (training/reports/*); these bounds leave room for other CPUs.
TOLERANCE = {"age": 0.05, "gender": 1e-3, "embedding": 1e-3}   # years, probability, per component


@pytest.fixture(scope="module")
def faces(hopper_photo):
    """Landmarks of real faces: the demo gallery photo, the astronaut photo, Grace Hopper."""
    skimage_data = require_module("skimage.data", "scikit-image", "its astronaut sample photo")
    images = [cv2.imread(str(DEMO_GALLERY / "eileen_collins.jpg")),
              np.ascontiguousarray(skimage_data.astronaut()[:, :, ::-1]),
              cv2.imread(str(hopper_photo))]
    models = load_models(load_config())
    found = []
    for image in images:
        rgb, detected = analyze_faces(models, image)
        assert detected, "each test photo has a face"
        found.append((rgb, [f.landmarks for f in detected]))
    return found


@pytest.mark.parametrize("model_class", [AgeModel, GenderModel, EmbeddingModel], ids=lambda c: c.name)
def test_model_agrees_on_every_backend(model_class, faces):
    cfg = load_config()
    files = model_files(cfg.models.dir, load_manifest(cfg.models.dir), model_class.name)
    outputs = {}
    for key in BACKENDS:
        if FORMAT[key] not in files:
            continue
        model = model_class(load_backend(key, files[FORMAT[key]].path, threads=1))
        outputs[key] = np.concatenate([np.atleast_1d(model.predict(rgb, landmarks)) for rgb, landmarks in faces])
    assert "onnxruntime" in outputs and len(outputs) >= 2, f"only {list(outputs)} ran"
    reference = outputs["onnxruntime"]
    for key, values in outputs.items():
        difference = float(np.max(np.abs(values - reference)))
        assert difference < TOLERANCE[model_class.name], f"{key} differs from onnxruntime by {difference}"
