"""Every model on every backend available here, on real aligned face chips: the backends agree. ONNX Runtime,
LiteRT and OpenCV DNN are all required here (the test extra installs them): a missing one is a failure."""

from __future__ import annotations

import numpy as np
import pytest

from edge.backends import load_backend
from edge.backends.select import probe_runtimes
from edge.config import load_config
from edge.models.age import AgeModel
from edge.models.embedding import EmbeddingModel
from edge.models.gender import GenderModel
from edge.models.catalog import EMBEDDINGS
from edge.models.manifest import load_manifest, model_files
from edge.models.reid import ReidEmbeddingModel

RUNTIMES = probe_runtimes()
BACKENDS = [key for key, present in (("onnxruntime", RUNTIMES.onnxruntime), ("litert", RUNTIMES.litert),
                                     ("opencv", RUNTIMES.opencv)) if present]
FORMAT = {"onnxruntime": "onnx", "opencv": "onnx", "litert": "tflite"}
# Measured differences are ~1e-5 or below (training/reports/*); these bounds leave room for other CPUs.
TOLERANCE = {"age": 0.05, "gender": 1e-3, "embedding": 1e-3}   # years, probability, per component
# Unit-vector components are ~0.06; the converted re-identification files differ by ~1e-6 (summation order).
TOLERANCE_BY_MODEL = {"reid_0095": 1e-4}
MODELS = [AgeModel, GenderModel, EmbeddingModel, ReidEmbeddingModel]


def manifest_name(model_class) -> str:
    model_id = getattr(model_class, "model_id", None)
    return EMBEDDINGS[model_id].manifest_name if model_id else model_class.name


def run_on_every_backend(model_class, faces) -> dict[str, np.ndarray]:
    """backend key -> the model's outputs for every face, for each backend that has a file of its format."""
    cfg = load_config()
    files = model_files(cfg.models.dir, load_manifest(cfg.models.dir), manifest_name(model_class))
    outputs = {}
    for key in BACKENDS:
        if FORMAT[key] in files:
            model = model_class(load_backend(key, files[FORMAT[key]].path, threads=1))
            outputs[key] = np.concatenate([np.atleast_1d(model.predict(rgb, landmarks)) for rgb, landmarks in faces])
    return outputs


def test_every_runtime_is_installed():
    assert BACKENDS == ["onnxruntime", "litert", "opencv"], f"runtimes present: {BACKENDS}"


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: getattr(c, "model_id", c.name))
def test_model_agrees_on_every_backend(model_class, real_faces):
    outputs = run_on_every_backend(model_class, real_faces)
    assert "onnxruntime" in outputs and len(outputs) >= 2, f"only {list(outputs)} ran"
    reference = outputs["onnxruntime"]
    assert len(reference) == sum(len(landmarks) for _, landmarks in real_faces)
    tolerance = TOLERANCE_BY_MODEL.get(getattr(model_class, "model_id", None), TOLERANCE[model_class.name])
    for key, values in outputs.items():
        difference = float(np.max(np.abs(values - reference)))
        assert difference < tolerance, f"{key} differs from onnxruntime by {difference}"
    model_id = getattr(model_class, "model_id", None)
    if model_id and EMBEDDINGS[model_id].metric == "cosine":     # unit vectors pointing the same way
        np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1.0, atol=1e-5)
        for values in outputs.values():
            assert float((values * reference).sum(1).min()) > 0.9999


def test_dynamic_batches_run_in_parts_of_at_most_the_cap(real_faces):
    """A runtime keeps the memory of its largest batch: nine faces go as 4 + 4 + 1, with the same vectors."""
    from edge.backends import MAX_DYNAMIC_BATCH
    cfg = load_config()
    files = model_files(cfg.models.dir, load_manifest(cfg.models.dir), manifest_name(ReidEmbeddingModel))
    model = ReidEmbeddingModel(load_backend("onnxruntime", files["onnx"].path, threads=1))
    assert model.backend.max_batch == 0 and MAX_DYNAMIC_BATCH == 4       # this file takes any batch size
    chips = np.concatenate([model.chips(rgb, landmarks) for rgb, landmarks in real_faces] * 9)[:9]
    sizes, run = [], model.backend.run
    model.backend.run = lambda batch: (sizes.append(len(batch)), run(batch))[1]
    vectors = model.predict_chips(chips)
    assert sizes == [4, 4, 1]
    singles = np.concatenate([model.predict_chips(chips[i:i + 1]) for i in range(len(chips))])
    assert vectors.shape == (9, 256) and float(np.abs(vectors - singles).max()) < 1e-5
