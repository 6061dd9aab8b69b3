"""Gallery matching: nearest enrolled person, open set ("unknown" at or above the threshold distance).

Distances follow the embedding model's metric (edge.models.catalog): L2 between raw vectors for dlib's
ResNet, 1 - cosine similarity for models that give unit vectors. A `Gallery` only ever holds vectors of
one model (the store filters by model id), so a vector is never compared with another model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Gallery:
    """Every enrolled embedding of one model as one matrix, for vectorised matching."""
    names: np.ndarray     # (N,) object, the identity name of each row
    vectors: np.ndarray   # (N, D) float32

    @staticmethod
    def empty(dimensions: int = 128) -> "Gallery":
        return Gallery(np.array([], dtype=object), np.zeros((0, dimensions), np.float32))


@dataclass(frozen=True)
class Match:
    name: str | None      # None = unknown
    distance: float       # to the nearest enrolled embedding (inf for an empty gallery)
    nearest: str | None   # nearest person even when above threshold (for logs / calibration)
    runner_up: float = float("inf")   # distance to the nearest embedding of any *other* person

    @property
    def similarity(self) -> float:
        """1 - distance clamped to [0, 1]: the cosine similarity for unit-vector models; for dlib's L2
        distance its 0.6 threshold is similarity 0.4."""
        return float(min(1.0, max(0.0, 1.0 - self.distance)))


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def distances(embeddings: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """(M, N) distances between M probe rows and N gallery rows."""
    embeddings = np.asarray(embeddings, np.float32)
    if metric == "cosine":
        return 1.0 - _unit(embeddings) @ _unit(vectors).T
    return np.linalg.norm(embeddings[:, None, :] - vectors[None, :, :], axis=2)


def pair_distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Distance between row i of `a` and row i of `b`, for each i."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if metric == "cosine":
        return 1.0 - np.sum(_unit(a) * _unit(b), axis=1)
    return np.linalg.norm(a - b, axis=1)


def match_many(embeddings: np.ndarray, gallery: Gallery, threshold: float, metric: str = "l2",
               margin: float = 0.0) -> list[Match]:
    """Match each row of `embeddings` against every gallery row at once. A row is named when its nearest
    person is under `threshold` *and* the next person is at least `margin` further: in a large gallery a
    stranger often lands close to several people at once, an enrolled person close to one
    (training/reports/openset.md)."""
    if len(gallery.vectors) == 0:
        return [Match(None, float("inf"), None) for _ in range(len(embeddings))]
    # (M, N) distance matrix in one go, then the nearest row of each person; a door camera's gallery is small.
    table = distances(embeddings, gallery.vectors, metric)
    people, person_of_row = np.unique(gallery.names.astype(str), return_inverse=True)
    per_person = np.full((len(table), len(people)), np.inf)
    for person in range(len(people)):
        per_person[:, person] = table[:, person_of_row == person].min(axis=1)
    order = np.argsort(per_person, axis=1)
    matches = []
    for row in range(len(table)):
        distance = float(per_person[row, order[row, 0]])
        runner_up = float(per_person[row, order[row, 1]]) if len(people) > 1 else float("inf")
        nearest = str(people[order[row, 0]])
        named = distance < threshold and runner_up - distance >= margin
        matches.append(Match(nearest if named else None, distance, nearest, runner_up))
    return matches


def match_one(embedding: np.ndarray, gallery: Gallery, threshold: float, metric: str = "l2",
              margin: float = 0.0) -> Match:
    return match_many(np.asarray(embedding, np.float32)[None, :], gallery, threshold, metric, margin)[0]
