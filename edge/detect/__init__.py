"""Face detectors. Each returns the same thing: a list of `Face` records, left to right.

Haar gives boxes only; its faces get 5 landmarks from MTCNN's O-Net (`Landmarker`),
so every detector feeds the same alignment.
"""

from __future__ import annotations

import numpy as np

from ..face import Face


class Landmarker:
    """5 landmarks for boxes found by a detector that has none (O-Net on each box)."""

    def __init__(self, onet):
        self.onet = onet

    def __call__(self, image_rgb: np.ndarray, faces: list[Face]) -> list[Face]:
        from .mtcnn import onet_landmarks

        if not faces:
            return faces
        landmarks = onet_landmarks(image_rgb, [f.box for f in faces], self.onet)
        return [f.with_(landmarks=lm) for f, lm in zip(faces, landmarks)]
