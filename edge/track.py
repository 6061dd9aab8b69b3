"""Association across frames (greedy IoU) and running averages per track.

API in the spirit of norfair: `Tracker.update(faces, timestamp) -> (tracked faces, ended tracks)`.
A track averages the per-frame gender probability, age and embedding over a window, so one
blurry frame does not flip a result; its identity is decided once enough frames agree.
"""

from __future__ import annotations

import itertools
import uuid
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .face import Face


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: int
    uid: str
    face: Face
    first_seen: float
    last_seen: float
    window: int
    hits: int = 1
    confirmed: bool = False
    ages: deque = field(default_factory=deque)
    female_probabilities: deque = field(default_factory=deque)
    embeddings: deque = field(default_factory=deque)
    matches: deque = field(default_factory=deque)   # per-frame identity names (None = unknown)
    identity: str | None = None
    identity_similarity: float | None = None
    identity_distance: float | None = None
    decided: bool = False
    best_face_area: int = 0
    model_frame: int | None = None   # pipeline frame number of the last age/gender/embedding run
    snapshot: np.ndarray | None = None   # crop of the best frame so far (only with snapshots on: edge/snapshots.py)
    snapshot_quality: float = 0.0

    def add_observation(self, face: Face, per_frame_match: str | None) -> None:
        for values, value in ((self.ages, face.age), (self.female_probabilities, face.female_probability),
                              (self.embeddings, face.embedding)):
            if value is not None:
                values.append(value)
                while len(values) > self.window:
                    values.popleft()
        if face.embedding is not None:
            self.matches.append(per_frame_match)
            while len(self.matches) > self.window:
                self.matches.popleft()

    @property
    def frames_averaged(self) -> int:
        return len(self.embeddings)

    @property
    def mean_age(self) -> float | None:
        return float(np.mean(self.ages)) if self.ages else None

    @property
    def mean_female_probability(self) -> float | None:
        return float(np.mean(self.female_probabilities)) if self.female_probabilities else None

    @property
    def mean_embedding(self) -> np.ndarray | None:
        return np.mean(np.stack(self.embeddings), axis=0) if self.embeddings else None

    def agreement(self, name: str | None) -> float:
        """Share of the window's per-frame matches that say `name`."""
        return sum(1 for m in self.matches if m == name) / len(self.matches) if self.matches else 0.0


class Tracker:
    def __init__(self, iou_threshold: float = 0.25, min_hits: int = 3, max_missed_s: float = 1.0,
                 window: int = 10):
        self.iou_threshold = iou_threshold
        self.min_hits = min_hits
        self.max_missed_s = max_missed_s
        self.window = window
        self.tracks: dict[int, Track] = {}
        self._ids = itertools.count(1)
        self._last_update: float | None = None

    def update(self, faces: list[Face], timestamp: float) -> tuple[list[Face], list[Track]]:
        """Assign track ids to this frame's faces; return them and the tracks that just ended."""
        pairs = sorted(((iou(t.face.box, f.box), tid, i) for tid, t in self.tracks.items()
                        for i, f in enumerate(faces)), reverse=True)
        assigned: dict[int, int] = {}
        used_tracks: set[int] = set()
        for overlap, tid, i in pairs:
            if overlap < self.iou_threshold:
                break
            if tid in used_tracks or i in assigned:
                continue
            assigned[i] = tid
            used_tracks.add(tid)
        tracked = []
        for i, face in enumerate(faces):
            tid = assigned.get(i)
            if tid is None:
                tid = next(self._ids)
                self.tracks[tid] = Track(tid, uuid.uuid4().hex[:12], face, timestamp, timestamp, self.window)
            else:
                track = self.tracks[tid]
                track.hits += 1
                track.last_seen = timestamp
            track = self.tracks[tid]
            face = face.with_(track_id=tid)
            track.face = face
            tracked.append(face)
        self._last_update = timestamp
        return tracked, self._end_stale(timestamp)

    def hold(self, timestamp: float) -> list[Track]:
        """A frame without detection (still scene): tracks seen at the last update stay where they
        were and stay alive; tracks already missing keep ageing. Returns the tracks that just ended."""
        for track in self.tracks.values():
            if track.last_seen == self._last_update:
                track.last_seen = timestamp
        self._last_update = timestamp
        return self._end_stale(timestamp)

    def _end_stale(self, timestamp: float) -> list[Track]:
        ended = [t for t in self.tracks.values() if timestamp - t.last_seen > self.max_missed_s]
        for track in ended:
            del self.tracks[track.id]
        return ended

    def close_all(self) -> list[Track]:
        ended = list(self.tracks.values())
        self.tracks.clear()
        return ended
