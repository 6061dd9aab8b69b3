"""One frame through the stages: detect -> landmarks -> track -> age/gender/embedding -> match -> events.

The pipeline owns no I/O: it returns events (and the sighting row each one updates); the
daemon writes them to the store's outbox and the publisher sends them.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict, deque
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import cv2
import numpy as np

from .align import extract_chips
from .config import AppConfig
from .face import Face
from .identify import match_many, match_one
from .models.gender import gender_label
from .models.loader import LoadedModels
from .store import Gallery
from .track import Track, Tracker


@dataclass(frozen=True)
class Event:
    payload: dict
    sighting: dict


class StageTimer:
    """Milliseconds per stage over the last frames, for `edge run` status lines and benchmarks."""

    def __init__(self, keep: int = 1000):
        self.samples: dict[str, deque] = defaultdict(lambda: deque(maxlen=keep))

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.samples[name].append((time.perf_counter() - started) * 1000.0)

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: {"median_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95)), "n": len(v)}
                for name, v in self.samples.items() if v}


def analyze_faces(models: LoadedModels, image_bgr: np.ndarray, timer: StageTimer | None = None) -> tuple[np.ndarray, list[Face]]:
    """Detect, landmark and run age/gender/embedding on every face of one image (no tracking)."""
    timer = timer or StageTimer()
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    with timer.stage("detect"):
        faces = models.detector.detect(rgb)
    if faces and models.landmarker is not None:
        with timer.stage("landmarks"):
            faces = models.landmarker(rgb, faces)
    return rgb, run_face_models(models, rgb, faces, timer)


def run_face_models(models: LoadedModels, rgb: np.ndarray, faces: list[Face], timer: StageTimer) -> list[Face]:
    """Fill age, female probability and embedding; all faces of a frame go in one batch per model."""
    faces = [f for f in faces if f.landmarks is not None]
    if not faces:
        return []
    landmarks = [f.landmarks for f in faces]
    results = {}
    for name, model in (("age", models.age), ("gender", models.gender), ("embed", models.embedding)):
        with timer.stage("align"):
            chips = extract_chips(rgb, landmarks, model.chip_size, model.chip_padding)
        with timer.stage(name):
            results[name] = model.predict_chips(chips)
    return [f.with_(age=float(a), female_probability=float(g), embedding=e)
            for f, a, g, e in zip(faces, results["age"], results["gender"], results["embed"])]


class Pipeline:
    def __init__(self, cfg: AppConfig, models: LoadedModels, gallery_source):
        self.cfg = cfg
        self.models = models
        self.gallery_source = gallery_source      # callable returning the current Gallery
        self.tracker = Tracker(cfg.tracking.iou_threshold, cfg.tracking.min_hits, cfg.tracking.max_missed_s,
                               cfg.tracking.window)
        self.timer = StageTimer()
        self.frames = 0
        self.faces_seen = 0
        self._wall_start: dict[int, float] = {}

    def process(self, image_bgr: np.ndarray, timestamp: float) -> list[Event]:
        self.frames += 1
        rgb, faces = analyze_faces(self.models, image_bgr, self.timer)
        self.faces_seen += len(faces)
        with self.timer.stage("track"):
            tracked, ended = self.tracker.update(faces, timestamp)
        gallery: Gallery = self.gallery_source()
        with self.timer.stage("match"):
            per_frame = match_many(np.stack([f.embedding for f in tracked]), gallery,
                                   self.cfg.identity.threshold) if tracked else []
        events: list[Event] = []
        for face, match in zip(tracked, per_frame):
            track = self.tracker.tracks[face.track_id]
            track.add_observation(face, match.name)
            area = face.box[2] * face.box[3]
            track.best_face_area = max(track.best_face_area, area)
            if not track.confirmed and track.hits >= self.cfg.tracking.min_hits:
                track.confirmed = True
                self._wall_start[track.id] = time.time() - (track.last_seen - track.first_seen)
                events.append(self._event("face_appeared", track))
            if track.confirmed:
                identified = self._decide_identity(track, gallery)
                if identified:
                    events.append(self._event("face_identified", track))
        for track in ended:
            if track.confirmed:
                events.append(self._event("face_left", track))
            self._wall_start.pop(track.id, None)
        return events

    def close(self) -> list[Event]:
        """End every open track (shutdown or end of a file): each confirmed one gets face_left."""
        events = [self._event("face_left", t) for t in self.tracker.close_all() if t.confirmed]
        self._wall_start.clear()
        return events

    def _decide_identity(self, track: Track, gallery: Gallery) -> bool:
        """Decide once enough frames agree; an unknown track may later become a name, never the reverse."""
        if track.frames_averaged < self.cfg.tracking.min_frames or (track.decided and track.identity):
            return False
        match = match_one(track.mean_embedding, gallery, self.cfg.identity.threshold)
        if track.agreement(match.name) < self.cfg.identity.min_agreement:
            return False
        if track.decided and match.name is None:
            return False
        track.decided = True
        track.identity = match.name
        track.identity_similarity = match.similarity
        track.identity_distance = match.distance
        return True

    def _event(self, kind: str, track: Track) -> Event:
        now = time.time()
        female = track.mean_female_probability
        gender = None
        if female is not None:
            label, confidence = gender_label(female)
            gender = {"label": label, "confidence": round(confidence, 3)}
        identity = None
        if track.decided and track.identity:
            identity = {"name": track.identity, "similarity": round(track.identity_similarity, 3),
                        "distance": round(track.identity_distance, 3)}
        age = track.mean_age
        dwell = track.last_seen - track.first_seen
        payload = {
            "event_id": uuid.uuid4().hex,
            "type": kind,
            "timestamp": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds"),
            "device": self.cfg.device,
            "camera": self.cfg.camera,
            "track_id": track.uid,
            "identity": identity,
            "identity_decided": track.decided,
            "gender": gender,
            "age": round(age, 1) if age is not None else None,
            "frames_averaged": track.frames_averaged,
            "box": list(track.face.box),
            "dwell_s": round(dwell, 2),
        }
        first_wall = self._wall_start.get(track.id, now - dwell)
        sighting = {"track": track.uid, "camera": self.cfg.camera, "first_seen": first_wall,
                    "last_seen": first_wall + dwell, "age": payload["age"],
                    "gender": gender["label"] if gender else None,
                    "gender_confidence": gender["confidence"] if gender else None,
                    "frames": track.hits}
        return Event(payload, sighting)
