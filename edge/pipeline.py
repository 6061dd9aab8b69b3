"""One frame through the stages: detect -> track -> age/gender/embedding -> decide -> events.

The pipeline owns no I/O and no track state: the tracker (edge/track.py) owns tracks and decisions, the
detector plugin (edge/detect/) finds faces, and `process` returns events (edge/events.py) for the daemon's
sinks.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import cv2
import numpy as np

from .config import AppConfig
from .events import Event, track_event
from .face import Face
from .models.loader import LoadedModels
from .motion import MotionGate
from .snapshots import BestCrops, wanted as snapshots_wanted
from .track import Tracker, TrackView


ROI_MARGIN = 24          # px around the moving region: a face at its edge is searched whole
ROI_MAX_SHARE = 0.6      # a region larger than this share of the frame is searched as the whole frame


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
            self.record(name, (time.perf_counter() - started) * 1000.0)

    def record(self, name: str, elapsed_ms: float) -> None:
        self.samples[name].append(elapsed_ms)
        if self.on_sample is not None:
            self.on_sample(name, elapsed_ms)

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: {"median_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95)), "n": len(v)}
                for name, v in self.samples.items() if v}


class FrameRate:
    """Frames per second over the last `window_s` seconds (the daemon's status line, the kiosk, the page)."""

    def __init__(self, window_s: float = 5.0):
        self.window_s = window_s
        self._times: deque[float] = deque()     # a deque: a list rebuilt per frame was O(fps) per frame

    def tick(self, now: float) -> None:
        self._times.append(now)
        while now - self._times[0] >= self.window_s:
            self._times.popleft()

    def per_second(self) -> float:
        times = self._times
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


def analyze_faces(models: LoadedModels, image_bgr: np.ndarray, timer: StageTimer | None = None) -> tuple[np.ndarray, list[Face]]:
    """Detect, landmark and run age/gender/embedding on every face of one still image (no tracking)."""
    timer = timer or StageTimer()
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    with timer.stage("detect"):
        faces = models.detector.detect(rgb)
    if faces and models.landmarker is not None:
        with timer.stage("landmarks"):
            faces = models.landmarker(rgb, faces)
    return rgb, run_face_models(models, rgb, faces, timer)


def run_face_models(models: LoadedModels, rgb: np.ndarray, faces: list[Face], timer: StageTimer) -> list[Face]:
    """Fill age, female probability and embedding; all faces of a frame go in one batch per model, each model
    cutting its own aligned chips."""
    faces = [f for f in faces if f.landmarks is not None]
    if not faces:
        return []
    landmarks = [f.landmarks for f in faces]
    results = {}
    for name, model in (("age", models.age), ("gender", models.gender), ("embed", models.embedding)):
        with timer.stage("align"):
            chips = model.chips(rgb, landmarks)
        with timer.stage(name):
            results[name] = model.predict_chips(chips)
    return [f.with_(age=float(a), female_probability=float(g), embedding=e)
            for f, a, g, e in zip(faces, results["age"], results["gender"], results["embed"])]


class Pipeline:
    """Per-frame processing: `process(frame, timestamp) -> events`.

    Fast path (`fastpath` in the config, each switch measured in benchmarks/bench_pipeline.py):
    detection is skipped while the scene is still (tracks are held, not dropped); a track whose
    identity is decided stops running the models except for a periodic re-check; and with
    `overlap` the landmarks and models of one frame run on a worker thread while the next frame
    is detected, so `process` returns the events of the previous frame (`close` returns the rest).
    """

    def __init__(self, cfg: AppConfig, models: LoadedModels, gallery_source):
        self.cfg = cfg
        self.models = models
        self.gallery_source = gallery_source      # callable returning the current Gallery of the model in force
        self.tracker = Tracker(cfg.tracking, cfg.identity)
        self.crops = BestCrops(cfg.snapshots) if snapshots_wanted(cfg) else None
        self.timer = StageTimer()
        self.frames = 0
        self.faces_seen = 0
        self.detections_run = 0
        self.model_runs = 0                       # faces sent through age/gender/embedding
        fast = cfg.fastpath
        self.gate = MotionGate(fast.motion_width, fast.motion_pixel_threshold,
                               fast.motion_min_changed) if fast.motion_gate else None
        self.detector = models.video_detector
        self._since_detect = 0
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="models") if fast.overlap else None
        self._pending: tuple[Future, list[Face], list[TrackView], np.ndarray] | None = None
        # edge/enroll_camera.CameraEnrolments (the daemon's): while it serves a request, every frame is detected
        # and measured and handed to it with the tracker's views.
        self.enrolment = None
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
        if self.crops is not None:
            self.crops.offer(tracked, image_bgr)
        needy = [f for f in tracked if self._needs_models(self.tracker.view(f.track_id))]
        self.tracker.mark_measured([f.track_id for f in needy], self.frames)
        self.model_runs += len(needy)
        if self._worker is not None and needy:
            self._pending = (self._worker.submit(self._face_models, rgb, needy), tracked, ended, rgb)
        else:
            events += self._integrate(self._face_models(rgb, needy) if needy else [], tracked, ended, rgb)
        return events

    def close(self) -> list[Event]:
        """End every open track (shutdown or end of a file): each confirmed one gets face_left."""
        events = self._finish_pending()
        events += self._left(self.tracker.close_all())
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="models")
        return events

    def _detect_now(self, image_bgr: np.ndarray) -> tuple[bool, tuple[int, int, int, int] | None]:
        """Whether to detect on this frame, and where: None = the whole frame, else a region
        (x0, y0, x1, y1) holding everything that moved and every face in view."""
        if self.gate is None or self._enrolling():
            return True, None
        fast = self.cfg.fastpath
        with self.timer.stage("motion"):
            moving = self.gate.update(image_bgr)
        tracks = self.tracker.views()
        due = self._since_detect + 1 >= (fast.redetect_every if tracks else fast.idle_detect_every)
        if not moving and not due:
            return False, None
        if not fast.motion_roi or (due and not tracks):
            return True, None
        height, width = image_bgr.shape[:2]
        boxes = []
        if moving and self.gate.region is not None:
            x0, y0, x1, y1 = self.gate.region
            boxes.append((x0 - ROI_MARGIN, y0 - ROI_MARGIN, x1 + ROI_MARGIN, y1 + ROI_MARGIN))
        for track in tracks:
            # A face moves between detections: search half a face around where it was.
            x, y, w, h = track.face.box
            boxes.append((x - w // 2, y - h // 2, x + w + w // 2, y + h + h // 2))
        x0, y0 = max(0, min(b[0] for b in boxes)), max(0, min(b[1] for b in boxes))
        x1, y1 = min(width, max(b[2] for b in boxes)), min(height, max(b[3] for b in boxes))
        if (x1 - x0) * (y1 - y0) > ROI_MAX_SHARE * width * height:
            return True, None
        return True, (x0, y0, x1, y1)

    def _detect(self, rgb: np.ndarray, region: tuple[int, int, int, int] | None) -> list[Face]:
        if region is not None and min(region[2] - region[0], region[3] - region[1]) < self.cfg.detector.min_face:
            return []
        return self.detector.detect(rgb, region)

    def _enrolling(self) -> bool:
        return self.enrolment is not None and self.enrolment.active

    def _needs_models(self, track: TrackView) -> bool:
        fast = self.cfg.fastpath
        if self._enrolling():
            return True
        if not fast.throttle or not track.decided or track.frames_averaged < fast.throttle_after:
            return True
        return track.measured_frame is None or self.frames - track.measured_frame >= fast.recheck_every

    def _face_models(self, rgb: np.ndarray, faces: list[Face]) -> list[Face]:
        """Landmarks (detectors without them) and age/gender/embedding for the faces that need them; no
        shared state."""
        if self.models.landmarker is not None:
            with self.timer.stage("landmarks"):
                faces = self.models.landmarker(rgb, faces)
        return run_face_models(self.models, rgb, faces, self.timer)

    def _finish_pending(self) -> list[Event]:
        if self._pending is None:
            return []
        future, tracked, ended, rgb = self._pending
        self._pending = None
        return self._integrate(future.result(), tracked, ended, rgb)

    def _integrate(self, measured: list[Face], tracked: list[Face], ended: list[TrackView],
                   rgb: np.ndarray | None) -> list[Event]:
        """One frame's model outputs into the tracker; its confirmations, identities and face_left events."""
        with self.timer.stage("match"):
            changes = self.tracker.observe(measured, tracked, self.gallery_source())
        if rgb is not None and self._enrolling():
            self.enrolment.frame(rgb, measured, self.tracker.views(), time.monotonic())
        return [self._event(kind, view) for kind, view in changes] + self._left(ended)

    def _left(self, ended: list[TrackView]) -> list[Event]:
        events = [self._event("face_left", view) for view in ended if view.confirmed]
        if self.crops is not None:
            for view in ended:
                self.crops.drop(view.id)
        return events

    def _event(self, kind: str, view: TrackView) -> Event:
        snapshot = self.crops.get(view.id) if self.crops is not None and kind != "face_appeared" else None
        return track_event(kind, view, self.cfg.device, self.cfg.camera, time.time(), snapshot)
