"""Face detectors: one file per detector, registered by its `detector.type` key; each returns the same thing,
a list of `Face` records left to right in full-frame pixels.

Adding a detector means adding a file here that defines a class with `type_key`, `gives_landmarks`,
`smallest_face`, the model files it needs and `from_config`, decorated with `@register`, and naming it in
`detector.type`. Detectors without landmarks (Haar) get them from MTCNN's O-Net (`Landmarker`), so every
detector feeds the same alignment.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Callable, ClassVar, Protocol

import numpy as np

from ..face import Face

Region = tuple[int, int, int, int]     # x0, y0, x1, y1 in full-frame pixels


class Detector(Protocol):
    type_key: ClassVar[str]            # the value of detector.type
    gives_landmarks: ClassVar[bool]    # False: the pipeline adds O-Net landmarks to the faces that need them
    smallest_face: ClassVar[int]       # pixels, at the scale the detector sees: frames are never shrunk below it
    backend_models: ClassVar[tuple[str, ...]]   # manifest entries run through a Backend (edge.backends)
    file_models: ClassVar[tuple[str, ...]]      # manifest entries the detector opens itself, by path

    @classmethod
    def from_config(cls, cfg, backends: dict, files: dict[str, Path], fastpath=None) -> "Detector":
        """`cfg` is the DetectorConfig; `fastpath` (the FastPathConfig) is given for a detector of video frames,
        which may use lighter settings than one for still photos."""
        ...

    def detect(self, image_rgb: np.ndarray, region: Region | None = None) -> list[Face]: ...


REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    REGISTRY[cls.type_key] = cls
    return cls


def detector_class(type_key: str) -> type:
    """The class registered for `type_key`; every module of this package is imported (and so registered) once."""
    # Every module, even when one was imported directly before (that one alone would be registered).
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    if type_key not in REGISTRY:
        raise KeyError(f"unknown detector type {type_key!r} (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[type_key]


def detection_scale(frame_width: int, detect_width: int, min_face: int, smallest_face: int) -> float:
    """How far a frame is shrunk before detection: to `detect_width` for speed, but never so far that a face
    of `min_face` full-frame pixels falls below what the detector can find (`smallest_face`). A fixed width
    lost every face of a 1080p street scene (issue 11)."""
    return min(1.0, max(detect_width / frame_width, smallest_face / min_face))


def in_region(detect: Callable[[np.ndarray], list[Face]], image_rgb: np.ndarray, region: Region | None) -> list[Face]:
    """Run `detect` on the region's crop and move its boxes and landmarks back to full-frame pixels."""
    if region is None:
        return detect(image_rgb)
    x0, y0, x1, y1 = region
    offset = np.array([x0, y0], np.float32)
    return [f.with_(box=(f.box[0] + x0, f.box[1] + y0, f.box[2], f.box[3]),
                    landmarks=None if f.landmarks is None else f.landmarks + offset)
            for f in detect(np.ascontiguousarray(image_rgb[y0:y1, x0:x1]))]


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
