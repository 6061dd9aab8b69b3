"""What the daemon hands to the kiosk window and the status page: the newest frame with its faces and status
line, recent events, health, metrics. Nothing here makes the daemon loop wait for a reader."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from .config import AppConfig
from .metrics import Metrics
from .overlay import OverlayFace, draw_overlay, faces_from_tracks
from .pipeline import FrameRate

STALE_FRAME_S = 10.0       # /healthz fails when no frame was processed for this long (daemon.CAPTURE_STALL_S)
SLOW_REFRESH_S = 1.0       # outbox depth (a SQLite COUNT) at most this often, in the daemon's own thread
PEOPLE_REFRESH_S = 10.0    # enrolled people for the page


@dataclass(frozen=True)
class LiveView:
    seq: int                            # increases by one per processed frame
    image: np.ndarray                   # the frame as captured, never modified (drawing works on a copy)
    faces: tuple[OverlayFace, ...]
    status: str
    banner: str | None = None           # a message for the person in front of the camera (enrolment progress)

    def render(self) -> np.ndarray:
        return draw_overlay(self.image, self.faces, self.status, self.banner)


class LatestView:
    """A one-frame slot, newest wins: put() replaces whatever a slow reader has not taken yet."""

    def __init__(self):
        self._condition = threading.Condition()
        self._view: LiveView | None = None
        self._seq = 0

    def put(self, image: np.ndarray, faces: tuple[OverlayFace, ...], status: str, banner: str | None = None) -> None:
        with self._condition:
            self._seq += 1
            self._view = LiveView(self._seq, image, faces, status, banner)
            self._condition.notify_all()

    def latest(self) -> LiveView | None:
        return self._view

    def wait_newer(self, seq: int, timeout: float) -> LiveView | None:
        """The newest view after `seq`, waiting up to `timeout`; None if nothing newer came."""
        with self._condition:
            self._condition.wait_for(lambda: self._view is not None and self._view.seq > seq, timeout)
            view = self._view
        return view if view is not None and view.seq > seq else None


class LiveOutputs:
    """Fed by the daemon loop (tick() every iteration, event() per event); read by display.Kiosk and
    web.StatusServer from their own threads. Exists only when `display` or `web` is enabled."""

    def __init__(self, cfg: AppConfig, pipeline):
        self.cfg = cfg
        self.view = LatestView()
        self.metrics = Metrics()
        pipeline.timer.on_sample = self.metrics.observe_stage
        # Read when /metrics is scraped, so they are never older than the scrape.
        self.metrics.last_frame_age.set_function(
            lambda: -1.0 if self.last_frame_at is None else time.monotonic() - self.last_frame_at)
        self.metrics.camera_connected.set_function(lambda: float(self.camera_state() == "connected"))
        self.metrics.broker_connected.set_function(lambda: float(self.broker_state() == "connected"))
        self.started = time.monotonic()
        self.frames = 0
        self.last_frame_at: float | None = None
        self.outbox_depth = 0
        self.people: list[dict] = []
        self._events: deque[dict] = deque(maxlen=cfg.web.recent_events)
        self._events_lock = threading.Lock()
        self.frame_rate = FrameRate()
        self._faces_seen = pipeline.faces_seen
        self._refused_seen = 0
        self._slow_at = self._people_at = float("-inf")
        self._grabber = self._publisher = None
        # Imported here: a daemon without a kiosk must not need tkinter, one without a page no HTTP server.
        self.kiosk = self.server = None
        if cfg.display.enabled:
            from .display import Kiosk
            self.kiosk = Kiosk(self.view, cfg.display)
        if cfg.web.enabled:
            from .web import StatusServer
            self.server = StatusServer(self, cfg.web)

    def start(self, grabber, publisher) -> None:
        self._grabber, self._publisher = grabber, publisher
        if self.server:
            self.server.start()
        if self.kiosk:
            self.kiosk.start()

    def stop(self) -> None:
        if self.kiosk:
            self.kiosk.stop()
        if self.server:
            self.server.stop()

    # --- called by the daemon loop ---------------------------------------------------------
    def tick(self, frame, pipeline, store, banner: str | None = None) -> None:
        """Every loop iteration; `frame` is None when none came. Costs a few dict reads and one slot swap."""
        now = time.monotonic()
        if now - self._slow_at >= SLOW_REFRESH_S:
            self._slow_at = now
            self.outbox_depth = store.outbox_depth() if self._publisher else 0
            if now - self._people_at >= PEOPLE_REFRESH_S:
                self._people_at = now
                self.people = store.identities()
            self.metrics.outbox_depth.set(self.outbox_depth)
            if self._publisher is not None:
                self.metrics.mqtt_refused.inc(self._publisher.refused_count - self._refused_seen)
                self._refused_seen = self._publisher.refused_count
        if frame is None:
            return
        self.frames += 1
        self.last_frame_at = now
        self.frame_rate.tick(now)
        self.metrics.frames.inc()
        self.metrics.faces.inc(pipeline.faces_seen - self._faces_seen)
        self._faces_seen = pipeline.faces_seen
        faces = faces_from_tracks(pipeline.tracker.views())
        self.metrics.faces_in_view.set(len(faces))
        self.view.put(frame.image, faces, self.status_line(len(faces)), banner)

    def event(self, payload: dict) -> None:
        self.metrics.events.labels(payload["type"]).inc()
        with self._events_lock:
            self._events.append(payload)

    # --- read by the kiosk and the status page -----------------------------------------------
    def fps(self) -> float:
        return self.frame_rate.per_second()

    def broker_state(self) -> str:
        if self._publisher is None:
            return "disabled"
        return "connected" if self._publisher.connected.is_set() else "disconnected"

    def camera_state(self) -> str:
        return "connected" if self._grabber is not None and self._grabber.connected else "disconnected"

    def status_line(self, faces: int) -> str:
        broker = {"connected": "MQTT ok", "disconnected": "MQTT DOWN", "disabled": "MQTT off"}[self.broker_state()]
        if self._publisher is not None and self._publisher.refusing:
            broker = "MQTT REFUSED"
        return (f"{self.cfg.camera}  {self.fps():.1f} fps  {faces} face{'s' if faces != 1 else ''}  {broker}  "
                f"outbox {self.outbox_depth}  {datetime.now():%H:%M:%S}")

    def recent_events(self) -> list[dict]:
        """Newest first."""
        with self._events_lock:
            return list(reversed(self._events))

    def health(self) -> dict:
        age = None if self.last_frame_at is None else round(time.monotonic() - self.last_frame_at, 3)
        camera = self.camera_state()
        ok = camera == "connected" and age is not None and age < STALE_FRAME_S
        return {"status": "ok" if ok else "failing", "camera": camera, "broker": self.broker_state(),
                "last_frame_age_s": age, "outbox_depth": self.outbox_depth,
                "broker_refuses": sorted(self._publisher.refused) if self._publisher is not None else [], "frames": self.frames,
                "fps": round(self.fps(), 2), "uptime_s": round(time.monotonic() - self.started, 1)}
