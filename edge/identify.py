"""Gallery matching: nearest enrolled person by L2 distance, open set ("unknown" above threshold)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .store import Gallery


@dataclass(frozen=True)
class Match:
    name: str | None      # None = unknown
    distance: float       # to the nearest enrolled embedding (inf for an empty gallery)
    nearest: str | None   # nearest person even when above threshold (for logs / calibration)

    @property
    def similarity(self) -> float:
        """1 - L2 distance, clamped to [0, 1]; dlib's 0.6 threshold is similarity 0.4."""
        return float(min(1.0, max(0.0, 1.0 - self.distance)))


def match_many(embeddings: np.ndarray, gallery: Gallery, threshold: float) -> list[Match]:
    """Match each row of `embeddings` against every gallery row at once."""
    if len(gallery.vectors) == 0:
        return [Match(None, float("inf"), None) for _ in range(len(embeddings))]
    # (M, N) distance matrix in one go; the gallery of a door camera is small.
    distances = np.linalg.norm(embeddings[:, None, :] - gallery.vectors[None, :, :], axis=2)
    best = distances.argmin(axis=1)
    matches = []
    for row, column in enumerate(best):
        distance = float(distances[row, column])
        nearest = str(gallery.names[column])
        matches.append(Match(nearest if distance < threshold else None, distance, nearest))
    return matches


def match_one(embedding: np.ndarray, gallery: Gallery, threshold: float) -> Match:
    return match_many(np.asarray(embedding, np.float32)[None, :], gallery, threshold)[0]
