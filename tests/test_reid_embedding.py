"""The converted Open Model Zoo re-identification embedding (models/face_reid_0095.{onnx,tflite}) on real faces.

Owns: the files match the manifest and ship their licence; the model's own alignment puts the landmarks on its template; on the people/ photos
of ../shared every same-person pair is closer by cosine than every pair of different people. That ONNX Runtime,
LiteRT and OpenCV DNN give the same vectors is tests/test_backends_agree.py's, with every other model.
Parity with the OpenVINO original is measured by training/convert_reid_embedding.py
(training/reports/reid_conversion.md: on 2338 faces at most 6.2e-6 per raw component, 4.8e-7 per unit-vector
component, no LFW decision changed). OpenVINO itself is not a test dependency: its wheel installs ~180 MB.
"""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from conftest import ROOT, SHARED

from edge.align import similarity_transform
from edge.backends import load_backend
from edge.models.embedding import EmbeddingModel
from edge.models.manifest import load_manifest, model_files, verify_file
from edge.models.reid import ReidEmbeddingModel
from edge.pipeline import analyze_faces

MODELS = ROOT / "models"
MANIFEST_KEY = "embedding_reid_0095"
FORMAT = {"onnxruntime": "onnx", "opencv": "onnx", "litert": "tflite"}
# Unit-vector components are ~0.06; converted files differ from each other by ~1e-6 (float32 summation order).
COMPONENT_TOLERANCE = 1e-4


def reid_model(key: str) -> ReidEmbeddingModel:
    files = model_files(MODELS, load_manifest(MODELS), MANIFEST_KEY)
    return ReidEmbeddingModel(load_backend(key, files[FORMAT[key]].path, threads=1))


def test_manifest_lists_and_verifies_the_reid_files_with_their_licence():
    manifest = load_manifest(MODELS)
    entry = manifest["models"][MANIFEST_KEY]
    files = model_files(MODELS, manifest, MANIFEST_KEY)
    assert set(files) == {"onnx", "tflite"}
    for file in files.values():
        verify_file(file)  # raises, naming the file, when size or sha256 differ
    assert entry["input"]["shape"] == ["N", 3, 128, 128] and entry["input"]["colour"] == "BGR"
    assert entry["licence"] == "Apache-2.0"
    (licence_file,) = entry["licence_files"]
    licence = (MODELS / licence_file).read_text()
    assert "Apache License" in licence and "Version 2.0" in licence


def test_chips_put_the_landmarks_on_the_models_template(real_faces):
    model = ReidEmbeddingModel(backend=None)
    rgb, landmarks = real_faces[1]  # the astronaut
    chips = model.chips(rgb, landmarks)
    assert chips.shape == (len(landmarks), 128, 128, 3) and chips.dtype == np.uint8
    matrix = similarity_transform(landmarks[0], model.template)
    mapped = np.c_[landmarks[0], np.ones(5)] @ matrix.T
    # A similarity transform cannot fit 5 real points exactly; a few pixels of residual is a real face's shape.
    assert np.abs(mapped - model.template).max() < 8
    eyes_row = chips[0, int(model.template[0, 1]) - 3:int(model.template[0, 1]) + 4].mean()
    assert eyes_row > 10, "the chip is not black where the eyes should be"


def test_a_batch_gives_the_same_vectors_as_single_faces(real_faces):
    model = reid_model("onnxruntime")
    chips = np.concatenate([model.chips(rgb, lms) for rgb, lms in real_faces])
    batched = model.predict_chips(chips)
    single = np.concatenate([model.predict_chips(chips[i:i + 1]) for i in range(len(chips))])
    assert float(np.abs(batched - single).max()) < 1e-5
    assert model.predict_chips(chips[:0]).shape == (0, 256)


def test_the_model_reads_bgr_so_swapping_channels_changes_the_vector(real_faces):
    model = reid_model("onnxruntime")
    rgb, lms = real_faces[2]  # Grace Hopper
    chips = model.chips(rgb, lms)
    swapped = model.predict_chips(np.ascontiguousarray(chips[..., ::-1]))
    # Colour order matters to this network: a channel swap moves the vector measurably (cosine well below 1).
    assert float((model.predict_chips(chips) * swapped).sum(1).min()) < 0.99


def test_both_embedding_classes_share_one_interface():
    for cls, model_id, metric, dims, size in ((EmbeddingModel, "dlib_resnet_v1", "l2", 128, 150),
                                              (ReidEmbeddingModel, "reid_0095", "cosine", 256, 128)):
        assert (cls.name, cls.model_id, cls.metric, cls.dimensions, cls.chip_size) == \
            ("embedding", model_id, metric, dims, size)
        assert callable(cls.chips) and callable(cls.predict_chips) and callable(cls.predict)


def test_same_person_is_closer_than_different_people_on_shared_photos(mtcnn_models):
    people = SHARED / "people"
    if not (people / "labels.csv").is_file():
        pytest.skip(f"shared identity photos not found at {people} (not shipped with the project)")
    model = reid_model("onnxruntime")
    names, vectors = [], []
    with open(people / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["faces"].strip() != "1":
                continue  # group photos
            rgb, detected = analyze_faces(mtcnn_models, cv2.imread(str(people / row["file"])))
            assert detected, f"no face found in {row['file']}"
            largest = max(detected, key=lambda d: d.box[2] * d.box[3])
            vectors.append(model.predict(rgb, [largest.landmarks])[0])
            names.append(row["person"])
    names = np.array(names)
    similarity = np.stack(vectors) @ np.stack(vectors).T
    same = (names[:, None] == names[None]) & ~np.eye(len(names), dtype=bool)
    different = names[:, None] != names[None]
    assert same.sum() >= 10 and different.sum() >= 100
    # Measured: lowest same-person cosine 0.57, highest different-people cosine 0.15.
    assert similarity[same].min() > similarity[different].max(), \
        f"same person down to {similarity[same].min():.3f}, different people up to {similarity[different].max():.3f}"
