"""Tracks: association across frames (greedy IoU), confirmation, running averages and the identity decision.

API in the spirit of norfair and supervision: `Tracker.update(faces, timestamp)` gives the faces their track
ids; `Tracker.observe(measured, tracked, gallery)` folds one frame's model outputs in and says which tracks
were confirmed or identified. The tracker alone changes a track; everything outside it gets `TrackView`s,
frozen summaries with the averaged attributes filled in.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .config import IdentityConfig, TrackingConfig
from .decide import Decision, decide_identity
from .face import Face
from .identify import Gallery, match_many


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


class SteadyClock:
    """Frame timestamps -> seconds that never go back. A looped file restarts at 0 and a camera's wall clock
    may be stepped back; dwell times and `max_missed_s` must not go negative (a step back counts as no time)."""

    def __init__(self):
        self._last: float | None = None
        self.now = 0.0

    def __call__(self, timestamp: float) -> float:
        if self._last is not None and timestamp > self._last:
            self.now += timestamp - self._last
        self._last = timestamp
        return self.now


@dataclass(frozen=True)
class TrackView:
    """What the rest of the program may know of a track at one moment (never changes afterwards)."""
    id: int
    uid: str
    face: Face                 # the latest detection (box, score, landmarks)
    first_seen: float          # steady seconds (SteadyClock)
    last_seen: float
    first_wall: float          # wall clock when first seen (sightings)
    first_frame_ts: float      # the source timestamp of its first frame (benchmarks measure latency from it)
    hits: int
    in_view: bool              # seen (or held on a still scene) at the latest update
    confirmed: bool
    decided: bool
    identity: str | None
    similarity: float | None
    distance: float | None
    age: float | None
    female_probability: float | None
    embedding: np.ndarray | None = field(compare=False)
    frames_averaged: int
    measured_frame: int | None  # pipeline frame of the last age/gender/embedding run

    @property
    def dwell_s(self) -> float:
        return self.last_seen - self.first_seen


@dataclass
class _Track:
    id: int
    uid: str
    face: Face
    first_seen: float
    last_seen: float
    first_wall: float
    first_frame_ts: float
    window: int
    hits: int = 1
    confirmed: bool = False
    ages: deque = field(default_factory=deque)
    female_probabilities: deque = field(default_factory=deque)
    embeddings: deque = field(default_factory=deque)
    matches: deque = field(default_factory=deque)   # per-frame identity names (None = unknown)
    decision: Decision | None = None
    measured_frame: int | None = None

    def add(self, face: Face, per_frame_match: str | None) -> None:
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

    def mean_embedding(self) -> np.ndarray | None:
        return np.mean(np.stack(self.embeddings), axis=0) if self.embeddings else None

    def view(self, in_view: bool) -> TrackView:
        d = self.decision
        return TrackView(
            self.id, self.uid, self.face, self.first_seen, self.last_seen, self.first_wall, self.first_frame_ts,
            self.hits, in_view, self.confirmed, d is not None, d.name if d else None,
            d.similarity if d else None, d.distance if d else None,
            float(np.mean(self.ages)) if self.ages else None,
            float(np.mean(self.female_probabilities)) if self.female_probabilities else None,
            self.mean_embedding(), len(self.embeddings), self.measured_frame)


class Tracker:
    def __init__(self, tracking: TrackingConfig, identity: IdentityConfig):
        self.cfg = tracking
        self.identity = identity
        self._tracks: dict[int, _Track] = {}
        self._ids = itertools.count(1)
        self._clock = SteadyClock()
        self._last_update: float | None = None
        self._enrolled: set[str] | None = None    # names of the latest gallery seen (None: none seen yet)

    # --- association ----------------------------------------------------------------------
    def update(self, faces: list[Face], timestamp: float) -> tuple[list[Face], list[TrackView]]:
        """Assign track ids to this frame's faces; return them and the tracks that just ended."""
        now = self._clock(timestamp)
        pairs = sorted(((iou(t.face.box, f.box), tid, i) for tid, t in self._tracks.items()
                        for i, f in enumerate(faces)), reverse=True)
        assigned: dict[int, int] = {}
        used_tracks: set[int] = set()
        for overlap, tid, i in pairs:
            if overlap < self.cfg.iou_threshold:
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
                self._tracks[tid] = _Track(tid, uuid.uuid4().hex[:12], face, now, now, time.time(), timestamp,
                                           self.cfg.window)
            else:
                track = self._tracks[tid]
                track.hits += 1
                track.last_seen = now
            face = face.with_(track_id=tid)
            self._tracks[tid].face = face
            tracked.append(face)
        self._last_update = now
        return tracked, self._end_stale(now)

    def hold(self, timestamp: float) -> list[TrackView]:
        """A frame without detection (still scene): tracks seen at the last update stay where they
        were and stay alive; tracks already missing keep ageing. Returns the tracks that just ended."""
        now = self._clock(timestamp)
        for track in self._tracks.values():
            if track.last_seen == self._last_update:
                track.last_seen = now
        self._last_update = now
        return self._end_stale(now)

    def _end_stale(self, now: float) -> list[TrackView]:
        ended = [t for t in self._tracks.values() if now - t.last_seen > self.cfg.max_missed_s]
        for track in ended:
            del self._tracks[track.id]
            self._revoke_if_forgotten(track)
        return [t.view(False) for t in ended]

    def close_all(self) -> list[TrackView]:
        """End every track (shutdown, end of a file)."""
        ended = list(self._tracks.values())
        self._tracks.clear()
        for track in ended:
            self._revoke_if_forgotten(track)
        return [t.view(False) for t in ended]

    # --- measurements and decisions ------------------------------------------------------------
    def mark_measured(self, track_ids: list[int], frame: int) -> None:
        """These tracks' faces went to the age/gender/embedding models on pipeline frame `frame`."""
        for tid in track_ids:
            if tid in self._tracks:
                self._tracks[tid].measured_frame = frame

    def observe(self, measured: list[Face], tracked: list[Face], gallery: Gallery) -> list[tuple[str, TrackView]]:
        """Fold one frame's model outputs into their tracks, then confirm (`tracking.min_hits`) and decide
        identities; returns ("face_appeared" | "face_identified", view) in that order per track."""
        self._enrolled = {str(n) for n in gallery.names}
        if measured:
            per_frame = match_many(np.stack([f.embedding for f in measured]), gallery, self.identity.threshold,
                                   self.identity.metric, self.identity.margin)
            for face, match in zip(measured, per_frame):
                if face.track_id in self._tracks:
                    self._tracks[face.track_id].add(face, match.name)
        changes = []
        for face in tracked:
            track = self._tracks.get(face.track_id)
            if track is None:
                continue
            self._revoke_if_forgotten(track)
            if not track.confirmed and track.hits >= self.cfg.min_hits:
                track.confirmed = True
                changes.append(("face_appeared", track.view(True)))
            if track.confirmed:
                decision = decide_identity(track.mean_embedding(), list(track.matches), len(track.embeddings),
                                           track.decision, gallery, self.identity, self.cfg.min_frames)
                if decision is not None:
                    track.decision = decision
                    changes.append(("face_identified", track.view(True)))
        return changes

    def _revoke_if_forgotten(self, track: _Track) -> None:
        # A person forgotten while in view: the track must not name them again (not even in face_left).
        if track.decision and track.decision.name and self._enrolled is not None \
                and track.decision.name not in self._enrolled:
            track.decision = None
            track.matches.clear()

    # --- frozen views for everyone else -----------------------------------------------------------
    def view(self, track_id: int) -> TrackView | None:
        track = self._tracks.get(track_id)
        return None if track is None else track.view(track.last_seen == self._last_update)

    def views(self) -> list[TrackView]:
        return [t.view(t.last_seen == self._last_update) for t in self._tracks.values()]

    def __len__(self) -> int:
        return len(self._tracks)
