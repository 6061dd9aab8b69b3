"""Unknown faces: keep each unknown track's averaged embedding, group them into people, name or forget a group.

The daemon calls `remember` for every event; `edge unknowns list / name / forget` (and the web page) call the
rest. Groups are computed on demand by hierarchical clustering (the embedding model's metric); their ids are
stored: a group keeps its id while the clustering keeps (most of) its faces together, a new group takes a new
id from a counter in the database, and no id is ever reused, so a listing stays valid after other groups are
named.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .config import AppConfig
from .snapshots import thumbnail_dir
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


def group_labels(vectors: np.ndarray, cfg: AppConfig, threshold: float | None = None,
                 linkage: str | None = None) -> np.ndarray:
    """How `edge unknowns` groups unknown faces under `cfg`: the embedding model's metric, `unknowns.linkage`
    and `unknowns.cluster_threshold` (threshold and linkage can be overridden, for a measured sweep)."""
    return cluster_labels(vectors, cfg.unknowns.cluster_threshold if threshold is None else threshold,
                          linkage or cfg.unknowns.linkage, cfg.identity.metric)


@dataclass(frozen=True)
class Cluster:
    number: int               # the group's stable id (never reused; 1 = the first group ever listed)
    ids: list[int]            # rows of the unknowns table
    tracks: list[str]
    frames: int               # frames the tracks were seen in, summed
    first_seen: float
    last_seen: float
    age: float | None
    gender: str | None        # majority label of the tracks
    spread: float             # largest L2 distance of a track to the cluster mean
    thumbnail: str | None = None   # face crop of its latest track, while snapshots.keep_thumbnails keeps them
    cameras: tuple[str, ...] = ()  # where its tracks were seen (several daemons share one database)

    def as_dict(self) -> dict:
        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")
        return {"cluster": self.number, "count": len(self.ids), "frames": self.frames,
                "first_seen": iso(self.first_seen), "last_seen": iso(self.last_seen),
                "age": None if self.age is None else round(self.age, 1), "gender": self.gender,
                "spread": round(self.spread, 3), "tracks": self.tracks, "cameras": list(self.cameras),
                "thumbnail": self.thumbnail}


def inherited_ids(members: list[list[dict]]) -> list[int | None]:
    """The stored group id each computed cluster (a list of unknown rows) keeps, None for a new group.

    A cluster inherits the id most of its faces carry; when an old group was split, the part holding most
    of its faces keeps the id (the older part on a tie) and the rest are new groups. A face that joined a
    group takes the group's id when the result is stored."""
    claims = sorted(((count, -i, i, group) for i, rows in enumerate(members)
                     for group, count in Counter(r["group_id"] for r in rows if r["group_id"]).items()),
                    reverse=True)
    chosen: dict[int, int] = {}
    for _, _, index, group in claims:
        if index not in chosen and group not in chosen.values():
            chosen[index] = group
    return [chosen.get(i) for i in range(len(members))]


def clusters(store: Store, cfg: AppConfig) -> list[Cluster]:
    """Unknown faces of the embedding model in force, grouped at its cluster threshold and metric, by stable
    id; with snapshots.keep_thumbnails, each group's latest face crop."""
    def grouping(rows: list[dict]) -> list[tuple[int | None, list[dict]]]:
        if not rows:
            return []
        labels = group_labels(np.stack([r["vector"] for r in rows]), cfg)
        members = [[r for r, keep in zip(rows, labels == label) if keep] for label in np.unique(labels)]
        members.sort(key=lambda m: min(r["first_seen"] for r in m))     # new ids go to older groups first
        return list(zip(inherited_ids(members), members))

    if len(store.unknown_faces(cfg.identity.model)) > 1:
        import scipy.cluster.hierarchy  # noqa: F401  (loaded before the write lock is taken, not under it)
    thumbnails = thumbnail_dir(cfg) if cfg.snapshots.keep_thumbnails else None
    groups = []
    for number, group_rows in store.group_unknowns(grouping, cfg.identity.model):
        member_vectors = np.stack([r["vector"] for r in group_rows])
        ages = [r["age"] for r in group_rows if r["age"] is not None]
        genders = [r["gender"] for r in group_rows if r["gender"]]
        groups.append(Cluster(
            number=number, ids=[r["id"] for r in group_rows], tracks=[r["track"] for r in group_rows],
            frames=sum(r["frames"] or 0 for r in group_rows),
            first_seen=min(r["first_seen"] for r in group_rows), last_seen=max(r["last_seen"] for r in group_rows),
            age=float(np.mean(ages)) if ages else None,
            gender=max(set(genders), key=genders.count) if genders else None,
            spread=float(np.linalg.norm(member_vectors - member_vectors.mean(axis=0), axis=1).max()),
            thumbnail=_latest_thumbnail(thumbnails, group_rows),
            cameras=tuple(sorted({r["camera"] for r in group_rows if r["camera"]}))))
    return sorted(groups, key=lambda g: g.number)


def find(store: Store, cfg: AppConfig, number: int) -> Cluster | None:
    return next((c for c in clusters(store, cfg) if c.number == number), None)


def track_thumbnails(folder: Path | None, tracks: list[str]) -> list[Path]:
    """The kept face crops of these tracks (edge/snapshots.py names them `<track>_<person>.jpg`)."""
    if folder is None or not folder.is_dir():
        return []
    return [path for track in tracks for path in sorted(folder.glob(f"{track}_*.jpg"))]


def _latest_thumbnail(folder: Path | None, rows: list[dict]) -> str | None:
    newest_first = [r["track"] for r in sorted(rows, key=lambda r: r["last_seen"], reverse=True)]
    found = track_thumbnails(folder, newest_first)
    return str(found[0]) if found else None


def rename_thumbnails(folder: Path | None, tracks: list[str], person_file_part: str) -> int:
    """A named group's crops are renamed to the person, so that forgetting the person erases them too."""
    renamed = 0
    for path in track_thumbnails(folder, tracks):
        track = path.name.split("_", 1)[0]
        path.replace(path.with_name(f"{track}_{person_file_part}.jpg"))
        renamed += 1
    return renamed


def erase_thumbnails(folder: Path | None, tracks: list[str]) -> int:
    found = track_thumbnails(folder, tracks)
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


def purity(labels: np.ndarray, truth: list[str]) -> float:
    """Share of items whose cluster's most common true label is their own (1.0 = no cluster mixes people)."""
    truth_array = np.asarray(truth, dtype=object)
    agreeing = 0
    for label in np.unique(labels):
        _, counts = np.unique(truth_array[labels == label].astype(str), return_counts=True)
        agreeing += counts.max()
    return agreeing / len(truth) if len(truth) else 1.0
