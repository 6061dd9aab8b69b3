"""OpenCV Haar cascade face detector (BSD cascade shipped in opencv-python 4.x as cv2.data)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..backends import ModelLoadError
from ..face import Face
from . import detection_scale, register

CASCADE_NAME = "haarcascade_frontalface_default.xml"


def cascade_path() -> Path:
    data = getattr(cv2, "data", None)
    if data is None or not hasattr(cv2, "CascadeClassifier"):
        # opencv-python 5.x dropped both; the package pins opencv-python-headless<5.
        raise ModelLoadError("this OpenCV build has no Haar cascades (OpenCV 5?): install opencv-python-headless<5")
    return Path(data.haarcascades) / CASCADE_NAME


@register
class HaarDetector:
    type_key = "haar"
    gives_landmarks = False
    smallest_face = 24               # the cascade's window: a smaller face at detection scale is never found
    backend_models = ("mtcnn_onet",)   # for the Landmarker that gives Haar boxes their 5 points
    file_models = ()

    def __init__(self, detect_width: int = 640, min_face: int = 40, scale_factor: float = 1.1,
                 min_neighbors: int = 5, path: Path | None = None):
        path = path or cascade_path()
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise ModelLoadError(f"cannot load Haar cascade {path}")
        self.detect_width = detect_width
        self.min_face = min_face
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    @classmethod
    def from_config(cls, cfg, backends: dict, files: dict[str, Path], fastpath=None) -> "HaarDetector":
        # A frame of a stream is smaller work than a still photo: fastpath.video_* (0 = detector.*).
        width = (fastpath.video_detect_width if fastpath else 0) or cfg.detect_width
        step = (fastpath.video_scale_factor if fastpath else 0) or cfg.scale_factor
        return cls(width, cfg.min_face, step, cfg.min_neighbors)

    def detect(self, image_rgb: np.ndarray, region: tuple[int, int, int, int] | None = None) -> list[Face]:
        """Faces in full-resolution pixel boxes, left to right. Detection runs on a frame
        scaled to `detect_width`: the cascade's cost grows with pixels, not with faces.
        `region` (x0, y0, x1, y1) limits the search to that part of the frame, at the same scale."""
        height, width = image_rgb.shape[:2]
        scale = detection_scale(width, self.detect_width, self.min_face, self.smallest_face)
        x0 = y0 = 0
        if region is not None:
            x0, y0, x1, y1 = region
            image_rgb = image_rgb[y0:y1, x0:x1]
            height, width = image_rgb.shape[:2]
        grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY) if image_rgb.ndim == 3 else image_rgb
        if scale < 1.0:
            grey = cv2.resize(grey, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        min_side = max(8, round(self.min_face * scale))
        boxes, _, weights = self.cascade.detectMultiScale3(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side), outputRejectLevels=True)
        faces = []
        for (x, y, w, h), weight in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            box = (int(round(x / scale)) + x0, int(round(y / scale)) + y0, int(round(w / scale)), int(round(h / scale)))
            faces.append(Face(box=box, score=float(weight)))
        return sorted(suppress_nested(faces), key=lambda f: f.box[0])


def suppress_nested(faces: list[Face], max_cover: float = 0.6) -> list[Face]:
    """Drop a box mostly covered by a stronger one. The cascade's grouping merges boxes of similar size
    only, so one face can come back as a tight box plus a larger one around it (IoU ~0.35 on real video),
    which would become two tracks of the same person."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: -f.score):
        if all(_cover(face.box, k.box) <= max_cover for k in kept):
            kept.append(face)
    return kept


def _cover(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection of two boxes over the smaller one's area."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / max(1, min(a[2] * a[3], b[2] * b[3]))
