"""The identity decision for one track: when enough frames agree, whom the averaged embedding names.

Kept apart from the tracker so the rule can be read and tested on its own (tests/test_decide.py):
a decision waits for `tracking.min_frames` measured frames; the averaged embedding is matched at the
model's threshold, and the per-frame matches must agree with it (`identity.min_agreement`). An unknown
track may later become a name (the person came closer), never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import IdentityConfig
from .identify import Gallery, match_one


@dataclass(frozen=True)
class Decision:
    name: str | None          # None = decided unknown
    similarity: float
    distance: float


def agreement(per_frame: list[str | None], name: str | None) -> float:
    """Share of the per-frame matches that say `name`."""
    return sum(1 for m in per_frame if m == name) / len(per_frame) if per_frame else 0.0


def decide_identity(mean_embedding: np.ndarray | None, per_frame: list[str | None], frames_averaged: int,
                    current: Decision | None, gallery: Gallery, identity: IdentityConfig,
                    min_frames: int) -> Decision | None:
    """A new decision for the track, or None when nothing changes now."""
    if mean_embedding is None or frames_averaged < min_frames or (current is not None and current.name):
        return None
    match = match_one(mean_embedding, gallery, identity.threshold, identity.metric, identity.margin)
    if agreement(per_frame, match.name) < identity.min_agreement:
        return None
    if current is not None and match.name is None:
        return None
    return Decision(match.name, match.similarity, match.distance)
