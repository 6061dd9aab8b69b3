"""YuNet face detector (OpenCV Zoo / libfacedetection, MIT): boxes, scores and 5 landmarks in one small CNN.

It runs in OpenCV's own `cv2.FaceDetectorYN` at any input size, and its landmarks feed alignment directly,
so Haar's extra O-Net pass is not needed. Landmark order (the subject's right eye, left eye, nose tip, right
and left mouth corner) is the project's image-left-first order, since the subject's right eye is on the
image's left.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..backends import ModelLoadError
from ..face import Face
from . import Region, detection_scale, in_region, register


# YuNet's boxes hug the face: a median 0.90 (10th percentile 0.81) of the labelled boxes of the dlib
# detection set, and Haar's are larger still; min_face is meant in those terms, so its boxes are held to 0.8 of it
# (at 1.0 the dlib set's recall fell from 97.7% to 41.9%: its faces are 37-45 px).
TIGHT_BOX = 0.8


@register
class YuNetDetector:
    type_key = "yunet"
    gives_landmarks = True
    # Its finest stride is 8 px; faces of ~10 px are found in LFW thumbnails, 16 leaves a margin.
    smallest_face = 16
    backend_models = ()
    file_models = ("yunet",)

    def __init__(self, path: Path, detect_width: int = 640, min_face: int = 40, score_threshold: float = 0.7,
                 nms_threshold: float = 0.3):
        try:
            self.net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold, nms_threshold, 5000)
        except cv2.error as exc:
            raise ModelLoadError(f"cannot load YuNet model {path}: {exc.err}") from None
        self.detect_width, self.min_face = detect_width, min_face
        self._input_size: tuple[int, int] | None = None

    @classmethod
    def from_config(cls, cfg, backends: dict, files: dict[str, Path], fastpath=None) -> "YuNetDetector":
        return cls(files["yunet"], cfg.detect_width, cfg.min_face, cfg.yunet_score_threshold)

    def detect(self, image_rgb: np.ndarray, region: Region | None = None) -> list[Face]:
        """Faces in full-frame pixels, left to right; the frame is shrunk by `detection_scale`."""
        scale = detection_scale(image_rgb.shape[1], self.detect_width, self.min_face, self.smallest_face)
        return sorted(in_region(lambda rgb: self._detect(rgb, scale), image_rgb, region), key=lambda f: f.box[0])

    def _detect(self, image_rgb: np.ndarray, scale: float) -> list[Face]:
        height, width = image_rgb.shape[:2]
        bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
        if scale < 1.0:
            bgr = cv2.resize(bgr, (max(1, round(width * scale)), max(1, round(height * scale))),
                             interpolation=cv2.INTER_AREA)
        size = (bgr.shape[1], bgr.shape[0])
        if size != self._input_size:        # re-planning the network costs; only when the size changes
            self.net.setInputSize(size)
            self._input_size = size
        _, rows = self.net.detect(bgr)
        faces = []
        for row in (rows if rows is not None else []):
            x, y, w, h = (row[:4] / scale).tolist()
            if min(w, h) < self.min_face * TIGHT_BOX:
                continue
            landmarks = (row[4:14].reshape(5, 2) / scale).astype(np.float32)
            faces.append(Face(box=(int(round(x)), int(round(y)), int(round(w)), int(round(h))),
                              score=float(row[14]), landmarks=landmarks))
        return faces
