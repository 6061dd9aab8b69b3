"""The daemon's own detection, alignment and models run on photo files, with per-photo results cached.

Every photo goes through `edge.pipeline.analyze_faces` with the config in force, exactly as `edge analyze`
runs it; results are cached per (detector config, model files, photo, padding) so re-runs are cheap.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from edge.config import validate
from edge.images import ImageError, load_image
from edge.models.loader import load_models
from edge.pipeline import analyze_faces


@dataclass
class FaceRecord:
    box: tuple[int, int, int, int]
    score: float
    age: float
    female: float
    embedding: np.ndarray

    def row(self) -> tuple:
        """Plain tuple for the cache (a pickled class would tie the cache to how this file was run)."""
        return (self.box, self.score, self.age, self.female, self.embedding)


def to_records(rows):
    return None if rows is None else [FaceRecord(*r) for r in rows]


def to_rows(records):
    return None if records is None else [r.row() for r in records]


def pad_image(image: np.ndarray, share: float) -> np.ndarray:
    """Tight chips leave the detector no context: add a mid-grey border of `share` x size per side."""
    if share <= 0:
        return image
    border = int(round(max(image.shape[:2]) * share))
    return cv2.copyMakeBorder(image, border, border, border, border, cv2.BORDER_CONSTANT, value=(128, 128, 128))


class Analyzer:
    """`analyze_faces` on files, with results cached per (config, models, file, padding)."""

    def __init__(self, cfg, cache_dir: Path | None):
        self.cfg = cfg
        self.cache_dir = cache_dir
        self.models = load_models(cfg)
        # A re-converted model file (new size or time) starts a new cache.
        files = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in cfg.models.dir.iterdir()
                       if p.suffix in (".onnx", ".tflite"))
        # Which embedding runs is part of the key too (not the decision settings: threshold, margin, ...).
        identity = {"model": cfg.identity.model}
        key = json.dumps({"detector": cfg.detector.model_dump(mode="json"), "backend": cfg.models.backend,
                          "files": files, **({"identity": identity} if identity else {})}, sort_keys=True)
        self.key = hashlib.sha1(key.encode()).hexdigest()[:16]
        self.cache_file = cache_dir / f"faces-{cfg.detector.type}-{self.key}.pkl" if cache_dir else None
        self.cache: dict = {}
        if self.cache_file and self.cache_file.exists():
            with open(self.cache_file, "rb") as f:
                self.cache = pickle.load(f)
        self._dirty = 0

    def with_detector(self, detector_type: str) -> "Analyzer":
        """The same config and cache folder with another `detector.type` (this analyzer if it is the same)."""
        detector_type = detector_type.strip()
        if detector_type == self.cfg.detector.type:
            return self
        data = self.cfg.model_dump()
        data["detector"]["type"] = detector_type
        return Analyzer(validate(data), self.cache_dir)

    def faces(self, path: Path, pad: float = 0.0) -> list[FaceRecord] | None:
        """Faces in a photo, left to right; None if the file cannot be read."""
        rows = self._cached((str(Path(path).resolve()), pad), path, lambda image: to_rows(
            self.faces_in(pad_image(image, pad), offset=self._border(image, pad))))
        return to_records(rows)

    def _cached(self, key, path: Path, compute):
        """compute(image) for a photo, once per cache; None (remembered too) if the file cannot be read."""
        if key not in self.cache:
            try:
                image = load_image(path)
            except ImageError as exc:
                tqdm.write(f"skipped: {exc}")
                self.cache[key] = None
            else:
                self.cache[key] = compute(image)
            self._dirty += 1
            if self._dirty >= 200:
                self.save()
        return self.cache[key]

    def remember(self, key, value, save_every: int = 200):
        """Keep a computed result (clips, videos) in the cache; written to disk every `save_every` new results."""
        self.cache[key] = value
        self._dirty += 1
        if self._dirty >= save_every:
            self.save()
        return value

    @staticmethod
    def _border(image, pad) -> int:
        return int(round(max(image.shape[:2]) * pad)) if pad > 0 else 0

    def faces_in(self, image_bgr: np.ndarray, offset: int = 0) -> list[FaceRecord]:
        _, faces = analyze_faces(self.models, image_bgr)
        records = [FaceRecord((f.box[0] - offset, f.box[1] - offset, f.box[2], f.box[3]), float(f.score),
                              float(f.age), float(f.female_probability), np.asarray(f.embedding, np.float32))
                   for f in faces]
        return sorted(records, key=lambda r: r.box[0])

    def detect_boxes(self, path: Path, pad: float = 0.0) -> list[tuple[int, int, int, int]] | None:
        """Detector output only (no landmarks/models), cached separately: detection metrics need nothing else.
        Boxes are in the photo's own coordinates, also when it was padded for the detector."""
        key = ("boxes", str(Path(path).resolve())) + ((pad,) if pad else ())

        def boxes(image):
            offset = self._border(image, pad)
            rgb = cv2.cvtColor(pad_image(image, pad), cv2.COLOR_BGR2RGB)
            return [(int(f.box[0]) - offset, int(f.box[1]) - offset, int(f.box[2]), int(f.box[3]))
                    for f in self.models.detector.detect(rgb)]
        return self._cached(key, path, boxes)

    def save(self) -> None:
        if self.cache_file and self._dirty:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                pickle.dump(self.cache, f)
            tmp.replace(self.cache_file)
            self._dirty = 0


def central_face(faces: list[FaceRecord] | None, width: int, height: int) -> FaceRecord | None:
    """The labelled face of a one-person photo: the detection nearest the centre (LFW, padded chips)."""
    if not faces:
        return None
    cx, cy = width / 2, height / 2
    return min(faces, key=lambda f: (f.box[0] + f.box[2] / 2 - cx) ** 2 + (f.box[1] + f.box[3] / 2 - cy) ** 2)


def largest_face(faces: list[FaceRecord] | None) -> FaceRecord | None:
    return max(faces, key=lambda f: f.box[2] * f.box[3]) if faces else None


def image_size(path: Path) -> tuple[int, int]:
    from PIL import Image
    with Image.open(path) as image:
        return image.size
