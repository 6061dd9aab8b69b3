"""Unknown faces: keep each unknown track's averaged embedding, group them into people, name or forget a group.

The daemon calls `remember` for every event; `edge unknowns list / name / forget` call the rest. Clusters are
computed on demand (never stored) by hierarchical clustering on L2 distance, the same distance and threshold
as identification, and numbered by when their earliest track was seen, so the oldest group is always 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from .config import AppConfig
from .store import Store


def remember(store: Store, event, min_frames: int, model: str) -> None:
    """Keep the averaged embedding of a track decided unknown (updated when it leaves); drop it if the
    track is recognised later. `event` is a pipeline Event."""
    payload = event.payload
    if payload["identity"] is not None:
        if payload["type"] == "face_identified":
            store.drop_unknown(payload["track_id"])
        return
    # face_identified with identity null = decided unknown; face_left also covers a track whose frames
    # never agreed on anyone but that was in view long enough to average.
    unknown = payload["type"] == "face_identified" or (
        payload["type"] == "face_left" and payload["frames_averaged"] >= min_frames)
    if unknown and event.embedding is not None:
        store.keep_unknown(event.sighting, event.embedding, payload["frames_averaged"], model=model)


def cluster_labels(vectors: np.ndarray, threshold: float, linkage: str = "average", metric: str = "l2") -> np.ndarray:
    """One label (0..K-1) per row: rows end in one cluster when their `linkage` distance (the embedding
    model's metric: L2 or 1 - cosine) is <= threshold."""
    if len(vectors) == 0:
        return np.zeros(0, int)
    if len(vectors) == 1:
        return np.zeros(1, int)
    # scipy is imported here only: the daemon never clusters.
    from scipy.cluster.hierarchy import fcluster, linkage as build_tree
    tree = build_tree(np.asarray(vectors, np.float64), method=linkage,
                      metric="cosine" if metric == "cosine" else "euclidean")
    return fcluster(tree, t=threshold, criterion="distance") - 1


@dataclass(frozen=True)
class Cluster:
    number: int               # 1 = the group whose earliest track is the oldest
    ids: list[int]            # rows of the unknowns table
    tracks: list[str]
    frames: int               # frames the tracks were seen in, summed
    first_seen: float
    last_seen: float
    age: float | None
    gender: str | None        # majority label of the tracks
    spread: float             # largest L2 distance of a track to the cluster mean

    def as_dict(self) -> dict:
        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")
        return {"cluster": self.number, "count": len(self.ids), "frames": self.frames,
                "first_seen": iso(self.first_seen), "last_seen": iso(self.last_seen),
                "age": None if self.age is None else round(self.age, 1), "gender": self.gender,
                "spread": round(self.spread, 3), "tracks": self.tracks}


def clusters(store: Store, cfg: AppConfig) -> list[Cluster]:
    """Unknown faces of the embedding model in force, grouped at its cluster threshold and metric."""
    rows = store.unknown_faces(cfg.identity.model)
    if not rows:
        return []
    vectors = np.stack([r["vector"] for r in rows])
    labels = cluster_labels(vectors, cfg.unknowns.cluster_threshold, cfg.unknowns.linkage, cfg.identity.metric)
    groups = []
    for label in np.unique(labels):
        members = [r for r, keep in zip(rows, labels == label) if keep]
        member_vectors = vectors[labels == label]
        ages = [r["age"] for r in members if r["age"] is not None]
        genders = [r["gender"] for r in members if r["gender"]]
        groups.append(dict(
            ids=[r["id"] for r in members], tracks=[r["track"] for r in members],
            frames=sum(r["frames"] or 0 for r in members),
            first_seen=min(r["first_seen"] for r in members), last_seen=max(r["last_seen"] for r in members),
            age=float(np.mean(ages)) if ages else None,
            gender=max(set(genders), key=genders.count) if genders else None,
            spread=float(np.linalg.norm(member_vectors - member_vectors.mean(axis=0), axis=1).max())))
    groups.sort(key=lambda g: g["first_seen"])
    return [Cluster(number=i, **g) for i, g in enumerate(groups, 1)]


def find(store: Store, cfg: AppConfig, number: int) -> Cluster | None:
    return next((c for c in clusters(store, cfg) if c.number == number), None)


def purity(labels: np.ndarray, truth: list[str]) -> float:
    """Share of items whose cluster's most common true label is their own (1.0 = no cluster mixes people)."""
    truth_array = np.asarray(truth, dtype=object)
    agreeing = 0
    for label in np.unique(labels):
        _, counts = np.unique(truth_array[labels == label].astype(str), return_counts=True)
        agreeing += counts.max()
    return agreeing / len(truth) if len(truth) else 1.0
