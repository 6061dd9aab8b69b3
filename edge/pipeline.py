"""One frame through the stages: detect -> landmarks -> track -> age/gender/embedding -> match -> events.

The pipeline owns no I/O: it returns events (and the sighting row each one updates); the
daemon writes them to the store's outbox and the publisher sends them.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
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
from .motion import MotionGate
from .detect.haar import HaarDetector
from .identify import Gallery
from .track import Track, Tracker
from . import snapshots


ROI_MARGIN = 24          # px around the moving region: a face at its edge is searched whole
ROI_MAX_SHARE = 0.6      # a region larger than this share of the frame is searched as the whole frame


@dataclass(frozen=True)
class Event:
    payload: dict
    sighting: dict
    embedding: np.ndarray | None = None    # the track's averaged embedding (kept for unknowns: edge/unknowns.py)
    snapshot: np.ndarray | None = None     # BGR crop of the track's best frame, only with snapshots on


class StageTimer:
    """Milliseconds per stage over the last frames, for `edge run` status lines and benchmarks."""

    def __init__(self, keep: int = 1000):
        self.samples: dict[str, deque] = defaultdict(lambda: deque(maxlen=keep))
        # Optional listener (stage, ms), e.g. the Prometheus histograms of edge/metrics.py; called from
        # whichever thread ran the stage, so it must be thread-safe.
        self.on_sample = None

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            self.samples[name].append(elapsed_ms)
            if self.on_sample is not None:
                self.on_sample(name, elapsed_ms)

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
    """Stateful per-frame processing: `process(frame, timestamp) -> events`.

    Fast path (`fastpath` in the config, each switch measured in benchmarks/bench_pipeline.py):
    detection is skipped while the scene is still (tracks are held, not dropped); a track whose
    identity is decided stops running the models except for a periodic re-check; and with
    `overlap` the landmarks and models of one frame run on a worker thread while the next frame
    is detected, so `process` returns the events of the previous frame (`close` returns the rest).
    """

    def __init__(self, cfg: AppConfig, models: LoadedModels, gallery_source):
        self.cfg = cfg
        self.models = models
        self.gallery_source = gallery_source      # callable returning the current Gallery
        self.keep_snapshots = snapshots.wanted(cfg)
        self.tracker = Tracker(cfg.tracking.iou_threshold, cfg.tracking.min_hits, cfg.tracking.max_missed_s,
                               cfg.tracking.window)
        self.timer = StageTimer()
        self.frames = 0
        self.faces_seen = 0
        self.detections_run = 0
        self.model_runs = 0                       # faces sent through age/gender/embedding
        self._wall_start: dict[int, float] = {}
        fast = cfg.fastpath
        self.gate = MotionGate(fast.motion_width, fast.motion_pixel_threshold,
                               fast.motion_min_changed) if fast.motion_gate else None
        self.detector = models.detector
        if isinstance(self.detector, HaarDetector) and (fast.video_detect_width or fast.video_scale_factor):
            # Same cascade, video settings: a frame of a stream is smaller work than a still photo.
            self.detector = copy.copy(self.detector)
            self.detector.detect_width = fast.video_detect_width or self.detector.detect_width
            self.detector.scale_factor = fast.video_scale_factor or self.detector.scale_factor
        self._since_detect = 0
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="models") if fast.overlap else None
        self._pending: tuple[Future, list[Face], list[Track]] | None = None
        self._warm_up()

    def _warm_up(self) -> None:
        """A runtime's first inference allocates and plans (hundreds of ms): pay it at start-up, not on
        the first person who walks in."""
        blank = np.zeros((480, 640, 3), np.uint8)
        self.detector.detect(blank)
        faces = [Face(box=(270, 190, 100, 100), score=1.0)]
        if self.models.landmarker is not None:
            faces = self.models.landmarker(blank, faces)
        for model in (self.models.age, self.models.gender, self.models.embedding):
            model.predict_chips(np.zeros((1, model.chip_size, model.chip_size, 3), np.uint8))

    def process(self, image_bgr: np.ndarray, timestamp: float) -> list[Event]:
        self.frames += 1
        detect, region = self._detect_now(image_bgr)
        if detect:
            self._since_detect = 0
            self.detections_run += 1
            rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
            with self.timer.stage("detect"):
                faces = self._detect(rgb, region)
            self.faces_seen += len(faces)
        else:
            self._since_detect += 1
            rgb, faces = None, None
        # The previous frame's models ran while this frame was detected; fold them in first, so
        # throttling decisions and face_left events see them.
        events = self._finish_pending()
        with self.timer.stage("track"):
            if faces is None:
                tracked, ended = [], self.tracker.hold(timestamp)
            else:
                tracked, ended = self.tracker.update(faces, timestamp)
        if self.keep_snapshots:
            for face in tracked:
                snapshots.offer(self.tracker.tracks[face.track_id], face, image_bgr, self.cfg.snapshots)
        needy = [f for f in tracked if self._needs_models(self.tracker.tracks[f.track_id])]
        for face in needy:
            self.tracker.tracks[face.track_id].model_frame = self.frames
        self.model_runs += len(needy)
        if self._worker is not None and needy:
            self._pending = (self._worker.submit(self._face_models, rgb, needy), tracked, ended)
        else:
            events += self._integrate(self._face_models(rgb, needy) if needy else [], tracked, ended)
        return events

    def close(self) -> list[Event]:
        """End every open track (shutdown or end of a file): each confirmed one gets face_left."""
        events = self._finish_pending()
        events += [self._event("face_left", t) for t in self.tracker.close_all() if t.confirmed]
        self._wall_start.clear()
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="models")
        return events

    def _detect_now(self, image_bgr: np.ndarray) -> tuple[bool, tuple[int, int, int, int] | None]:
        """Whether to detect on this frame, and where: None = the whole frame, else a region
        (x0, y0, x1, y1) holding everything that moved and every face in view."""
        if self.gate is None:
            return True, None
        fast = self.cfg.fastpath
        with self.timer.stage("motion"):
            moving = self.gate.update(image_bgr)
        due = self._since_detect + 1 >= (fast.redetect_every if self.tracker.tracks else fast.idle_detect_every)
        if not moving and not due:
            return False, None
        if not fast.motion_roi or (due and not self.tracker.tracks):
            return True, None
        height, width = image_bgr.shape[:2]
        boxes = []
        if moving and self.gate.region is not None:
            x0, y0, x1, y1 = self.gate.region
            boxes.append((x0 - ROI_MARGIN, y0 - ROI_MARGIN, x1 + ROI_MARGIN, y1 + ROI_MARGIN))
        for track in self.tracker.tracks.values():
            # A face moves between detections: search half a face around where it was.
            x, y, w, h = track.face.box
            boxes.append((x - w // 2, y - h // 2, x + w + w // 2, y + h + h // 2))
        x0, y0 = max(0, min(b[0] for b in boxes)), max(0, min(b[1] for b in boxes))
        x1, y1 = min(width, max(b[2] for b in boxes)), min(height, max(b[3] for b in boxes))
        if (x1 - x0) * (y1 - y0) > ROI_MAX_SHARE * width * height:
            return True, None
        return True, (x0, y0, x1, y1)

    def _detect(self, rgb: np.ndarray, region: tuple[int, int, int, int] | None) -> list[Face]:
        detector = self.detector
        if region is None:
            return detector.detect(rgb)
        x0, y0, x1, y1 = region
        if min(x1 - x0, y1 - y0) < self.cfg.detector.min_face:
            return []
        if isinstance(detector, HaarDetector):
            return detector.detect(rgb, region)     # keeps the full frame's detection scale
        offset = np.array([x0, y0], np.float32)
        return [f.with_(box=(f.box[0] + x0, f.box[1] + y0, f.box[2], f.box[3]),
                        landmarks=None if f.landmarks is None else f.landmarks + offset)
                for f in detector.detect(np.ascontiguousarray(rgb[y0:y1, x0:x1]))]

    def _needs_models(self, track: Track) -> bool:
        fast = self.cfg.fastpath
        if not fast.throttle or not track.decided or track.frames_averaged < fast.throttle_after:
            return True
        return track.model_frame is None or self.frames - track.model_frame >= fast.recheck_every

    def _face_models(self, rgb: np.ndarray, faces: list[Face]) -> list[Face]:
        """Landmarks (Haar boxes) and age/gender/embedding for the faces that need them; no shared state."""
        if self.models.landmarker is not None:
            with self.timer.stage("landmarks"):
                faces = self.models.landmarker(rgb, faces)
        return run_face_models(self.models, rgb, faces, self.timer)

    def _finish_pending(self) -> list[Event]:
        if self._pending is None:
            return []
        future, tracked, ended = self._pending
        self._pending = None
        return self._integrate(future.result(), tracked, ended)

    def _integrate(self, measured: list[Face], tracked: list[Face], ended: list[Track]) -> list[Event]:
        """Fold one frame's model outputs into its tracks; confirmation, identity and face_left events."""
        gallery: Gallery = self.gallery_source()
        with self.timer.stage("match"):
            per_frame = match_many(np.stack([f.embedding for f in measured]), gallery,
                                   self.cfg.identity.threshold, self.cfg.identity.metric) if measured else []
        for face, match in zip(measured, per_frame):
            track = self.tracker.tracks.get(face.track_id)
            if track is not None:
                track.add_observation(face, match.name)
        events: list[Event] = []
        for face in tracked:
            track = self.tracker.tracks.get(face.track_id)
            if track is None:
                continue
            area = face.box[2] * face.box[3]
            track.best_face_area = max(track.best_face_area, area)
            if not track.confirmed and track.hits >= self.cfg.tracking.min_hits:
                track.confirmed = True
                self._wall_start[track.id] = time.time() - (track.last_seen - track.first_seen)
                events.append(self._event("face_appeared", track))
            if track.confirmed and self._decide_identity(track, gallery):
                events.append(self._event("face_identified", track))
        for track in ended:
            if track.confirmed:
                events.append(self._event("face_left", track))
            self._wall_start.pop(track.id, None)
        return events

    def _decide_identity(self, track: Track, gallery: Gallery) -> bool:
        """Decide once enough frames agree; an unknown track may later become a name, never the reverse."""
        if track.frames_averaged < self.cfg.tracking.min_frames or (track.decided and track.identity):
            return False
        match = match_one(track.mean_embedding, gallery, self.cfg.identity.threshold, self.cfg.identity.metric)
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
        return Event(payload, sighting, track.mean_embedding,
                     track.snapshot if kind in ("face_identified", "face_left") else None)
