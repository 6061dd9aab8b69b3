"""Face detectors. Each returns the same thing: a list of `Face` records, left to right.

Haar gives boxes only; its faces get 5 landmarks from MTCNN's O-Net (`Landmarker`),
so every detector feeds the same alignment.
"""

from __future__ import annotations

import numpy as np

from ..face import Face


class Landmarker:
    """5 landmarks for boxes found by a detector that has none (O-Net on each box).

    O-Net also scores each box: Haar fires on some wall textures that O-Net rejects
    (real faces score > 0.99), so boxes below `min_score` are dropped here.
    """

    def __init__(self, onet, min_score: float = 0.9):
        self.onet = onet
        self.min_score = min_score

    def __call__(self, image_rgb: np.ndarray, faces: list[Face]) -> list[Face]:
        from .mtcnn import onet_refine

        if not faces:
            return faces
        landmarks, scores = onet_refine(image_rgb, [f.box for f in faces], self.onet)
        return [f.with_(landmarks=lm) for f, lm, s in zip(faces, landmarks, scores) if s >= self.min_score]
