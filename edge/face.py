"""The one record that describes a face as it flows through the pipeline.

Stages never mutate a Face; they return a new one with more fields filled in
(`dataclasses.replace`), so a record seen by one stage cannot change under another.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Face:
    # Filled by the detector, in full-frame pixel coordinates.
    box: tuple[int, int, int, int]  # x, y, w, h
    score: float
    # 5 points (x, y): image-left eye, image-right eye, nose, mouth left, mouth right.
    landmarks: np.ndarray | None = field(default=None, compare=False)
    # Filled by the tracker.
    track_id: int | None = None
    # Filled by the attribute/embedding models (per-frame values).
    age: float | None = None
    female_probability: float | None = None
    embedding: np.ndarray | None = field(default=None, compare=False)
    # Identity is a property of a track, not of one frame's face: see edge/track.py (TrackView) and decide.py.

    def with_(self, **changes) -> "Face":
        return replace(self, **changes)

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2.0, y + h / 2.0
