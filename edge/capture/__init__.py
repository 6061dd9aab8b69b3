"""Frame sources and the newest-frame grabber thread.

A source is anything with open() / read() -> BGR frame or None / close(). The grabber owns
the source in its own thread, keeps only the newest frame (a slow model must never make
the daemon fall behind the camera), and reopens a failed source with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    index: int          # frames delivered by the grabber so far (1-based)
    timestamp: float    # seconds; source time for files, wall clock for cameras
    image: np.ndarray   # BGR uint8


class SourceError(RuntimeError):
    pass


class FrameSource(Protocol):
    description: str
    is_file: bool
    fps: float

    def open(self) -> None: ...
    def read(self) -> tuple[np.ndarray, float] | None: ...   # (BGR image, timestamp) or None at end/failure
    def close(self) -> None: ...


def open_source(spec: str, width: int = 640, height: int = 480, fps: float = 15) -> FrameSource:
    """Pick the source class from the `source` string (see config/default.yaml)."""
    if spec.strip().lower() in ("picamera2", "picamera", "pi"):
        from .picamera import PiCameraSource
        return PiCameraSource(width, height, fps)
    from .opencv import OpenCvSource
    return OpenCvSource(spec, width, height, fps)


class LatestFrameGrabber:
    """Reads a source in a thread; `get()` returns the newest frame not yet taken.

    With `every_frame=True` (files in tests/benchmarks/demo) the reader waits for the consumer
    instead of dropping frames, so every frame of the file is processed.
    """

    def __init__(self, source: FrameSource, every_frame: bool = False, loop: bool = False,
                 reopen_initial_s: float = 0.5, reopen_max_s: float = 30.0, realtime: bool = False,
                 timer=None):
        self.source = source
        self.every_frame = every_frame
        self.loop = loop
        self.realtime = realtime
        self.timer = timer          # a StageTimer: "capture" ms per frame read (decode included)
        self.reopen_initial_s = reopen_initial_s
        self.reopen_max_s = reopen_max_s
        self._condition = threading.Condition()
        self._frame: Frame | None = None
        self._count = 0
        self._stop = threading.Event()
        self.finished = threading.Event()   # a file ended (and loop is off)
        self.connected = False
        self.outages = 0
        self.reopened_after_s: list[float] = []
        # Liveness for the systemd watchdog: a driver call that hangs (V4L2, a stalled stream) stops
        # progress_at; waiting out a reopen backoff is progress too (the daemon is doing its job).
        self.progress_at = time.monotonic()
        self.backing_off = False
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> "LatestFrameGrabber":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._condition:
            self._condition.notify_all()
        self._thread.join(timeout=5)

    def alive(self, stall_s: float) -> bool:
        """False when the capture thread has been stuck inside the source for more than `stall_s`."""
        return self._thread.is_alive() and (self.backing_off or time.monotonic() - self.progress_at < stall_s)

    def get(self, timeout: float = 0.5) -> Frame | None:
        with self._condition:
            if self._frame is None:
                self._condition.wait(timeout)
            frame, self._frame = self._frame, None
            self._condition.notify_all()
            return frame

    def _publish(self, image: np.ndarray, timestamp: float) -> None:
        with self._condition:
            if self.every_frame:
                while self._frame is not None and not self._stop.is_set():
                    self._condition.wait(0.1)
            self._count += 1
            self.progress_at = time.monotonic()
            self._frame = Frame(self._count, timestamp, image)
            self._condition.notify_all()

    def _run(self) -> None:
        delay = self.reopen_initial_s
        outage_started: float | None = None
        while not self._stop.is_set():
            try:
                self.source.open()
            except SourceError as exc:
                if outage_started is None:   # log once per outage, not per retry
                    outage_started = time.monotonic()
                    self.outages += 1
                    log.warning("camera %s unavailable: %s; retrying with backoff", self.source.description, exc)
                self.backing_off = True
                self._stop.wait(delay)
                self.backing_off = False
                self.progress_at = time.monotonic()
                delay = min(delay * 2, self.reopen_max_s)
                continue
            if outage_started is not None:
                self.reopened_after_s.append(time.monotonic() - outage_started)
                log.warning("camera %s reopened after %.1f s", self.source.description,
                            self.reopened_after_s[-1])
                outage_started = None
            self.connected = True
            self.progress_at = time.monotonic()
            delay = self.reopen_initial_s
            started = time.monotonic()
            first_ts: float | None = None
            while not self._stop.is_set():
                read_started = time.perf_counter()
                result = self.source.read()
                if self.timer is not None and result is not None:
                    self.timer.record("capture", (time.perf_counter() - read_started) * 1000.0)
                if result is None:
                    break
                image, timestamp = result
                if self.realtime and self.source.is_file:
                    # Play a file at its own rate, like a camera would deliver it.
                    first_ts = timestamp if first_ts is None else first_ts
                    wait = (timestamp - first_ts) - (time.monotonic() - started)
                    if wait > 0:
                        self._stop.wait(wait)
                self._publish(image, timestamp)
            self.connected = False
            self.source.close()
            if self.source.is_file and not self.loop:
                self.finished.set()
                return
            if not self._stop.is_set():
                outage_started = time.monotonic()
                self.outages += 1
                log.warning("camera %s stopped delivering frames; reopening", self.source.description)


def grabber_for(cfg, timer=None) -> LatestFrameGrabber:
    """The configured camera (`source`, `capture.*`) behind a grabber, not started: the daemon's, and the one
    `edge enroll --camera` opens when no daemon runs."""
    capture = cfg.capture
    return LatestFrameGrabber(open_source(cfg.source, capture.width, capture.height, capture.fps),
                              every_frame=capture.pace == "every_frame", loop=capture.loop,
                              reopen_initial_s=capture.reopen_initial_s, reopen_max_s=capture.reopen_max_s,
                              realtime=capture.pace == "realtime", timer=timer)
