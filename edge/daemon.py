"""Wires the stages: grabber thread -> pipeline -> store outbox -> MQTT publisher; signals; systemd notify."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from typing import Callable

from .capture import LatestFrameGrabber, grabber_for
from .config import AppConfig
from .enroll_camera import CameraEnrolments, CameraLock
from .fleet import Fleet
from .homeassistant import HomeAssistant
from .models.loader import LoadedModels, load_models
from .notify import Notifier
from .live import LiveOutputs
from .events import Event, OutboxSink, PayloadSink, Sink, UnknownsSink
from .pipeline import FrameRate, Pipeline
from .publish import Publisher
from .snapshots import Snapshots
from .store import Store, StoreError

log = logging.getLogger(__name__)

PURGE_EVERY_S = 3600
STATUS_EVERY_S = 5
READY_WITHOUT_CAMERA_S = 20   # still report READY so systemd does not restart-loop on a missing camera
# A capture call stuck this long (hung driver, stalled stream that never times out) stops the
# watchdog pings, so systemd restarts us after WatchdogSec=; a camera that is merely gone is
# retried with backoff inside the daemon and keeps the pings going.
CAPTURE_STALL_S = 10


class Daemon:
    def __init__(self, cfg: AppConfig, max_frames: int | None = None,
                 on_event: Callable[[dict], None] | None = None, models: LoadedModels | None = None,
                 store: Store | None = None, stop_flush_s: float = 5.0):
        self.cfg = cfg
        self.max_frames = max_frames
        self.on_event = on_event
        self.stop_requested = threading.Event()
        self.notifier = Notifier()
        self.stop_flush_s = stop_flush_s
        self.store = store or Store(cfg.store.path)
        self.models = models or load_models(cfg)
        self.pipeline = Pipeline(cfg, self.models, lambda: self.store.gallery(cfg.identity.model))
        self.publisher = Publisher(cfg.mqtt, cfg.device, self.store) if cfg.mqtt.enabled else None
        # Home Assistant discovery and the fleet gallery ride on the publisher (None when off);
        # Snapshots always exists so that its purge erases thumbnails once keep_thumbnails is off.
        self.homeassistant = HomeAssistant(cfg, self.publisher, self.store) \
            if self.publisher and cfg.homeassistant.enabled else None
        self.fleet = Fleet(cfg, self.store, self.publisher) if self.publisher and cfg.fleet.enabled else None
        self.snapshots = Snapshots(cfg, self.publisher)
        # Requests to enrol a person from this camera (edge enroll NAME --camera, the people page, the API).
        self.enrolments = CameraEnrolments(cfg, self.store, self.models.embedding.model_id, CameraLock(cfg))
        self.pipeline.enrolment = self.enrolments
        # Kiosk window and status page (edge/live.py); None when both are off, and then nothing changes.
        self.live = LiveOutputs(cfg, self.pipeline) if cfg.display.enabled or cfg.web.enabled else None
        self.sinks = self._sinks()
        self.events_produced = 0
        self.started = time.monotonic()
        self._report_stale_gallery()

    def _report_stale_gallery(self) -> None:
        """People enrolled only with another embedding model are not recognised by this one: say who, and how
        to fix it, instead of silently never naming them (README, "Changing the embedding model")."""
        stale = self.store.needing_reenrolment(self.cfg.identity.model)
        if stale:
            names = ", ".join(sorted(stale)[:10]) + (f" and {len(stale) - 10} more" if len(stale) > 10 else "")
            log.warning("%d enrolled people have no %s embedding and will not be recognised until enrolled again "
                        "(edge enroll NAME PHOTO...; see edge identities list): %s",
                        len(stale), self.cfg.identity.model, names)

    def install_signal_handlers(self) -> None:
        def handler(signum, frame):
            log.info("signal %s: finishing the current frame and stopping", signal.Signals(signum).name)
            self.stop_requested.set()
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _sinks(self) -> list[Sink]:
        """Where events go, in order: the outbox first (an event exists on disk before anyone may lose it,
        and the publisher delivers it from there), then everything that only reacts to it."""
        sinks: list[Sink] = [OutboxSink(self.store, self.publisher.events_topic if self.publisher else None)]
        if self.cfg.unknowns.keep:
            sinks.append(UnknownsSink(self.store, self.cfg.tracking.min_frames, self.cfg.identity.model))
        sinks += [PayloadSink(handler) for handler in (
            self.on_event, self.live and self.live.event, self.homeassistant and self.homeassistant.observe) if handler]
        sinks.append(self.snapshots)
        return sinks

    def _emit(self, events: list[Event]) -> None:
        with self.pipeline.timer.stage("store"):
            for event in events:
                for sink in self.sinks:
                    sink.observe(event)
                self.events_produced += 1

    def run(self) -> int:
        cfg = self.cfg
        grabber = grabber_for(cfg, timer=self.pipeline.timer)
        if self.live:   # first: a status page that cannot listen stops start-up before anything else runs
            self.live.start(grabber, self.publisher)
        grabber.start()
        if self.publisher:
            self.publisher.start()
        log.info("running on %s (%s detector)", grabber.source.description, cfg.detector.type)
        failure: StoreError | None = None
        try:
            self._loop(grabber)
        except StoreError as exc:
            failure = exc
        finally:
            self._shutdown(grabber, failed=failure is not None)
        if failure is not None:
            raise failure        # the CLI prints it as one line and exits 1
        return 0

    def _loop(self, grabber: LatestFrameGrabber) -> None:
        cfg = self.cfg
        ready = False
        last_status = last_purge = float("-inf")
        frame_rate = FrameRate()
        while not self.stop_requested.is_set():
            frame = grabber.get(timeout=0.2)
            now = time.monotonic()
            if frame is not None:
                self._emit(self.pipeline.process(frame.image, frame.timestamp))
                frame_rate.tick(now)
                # WATCHDOG only from this loop and only while it makes progress: a frozen pipeline
                # never reaches this line, a hung capture fails alive(); both get restarted by systemd.
                self.notifier.watchdog()
                if self.max_frames and self.pipeline.frames >= self.max_frames:
                    break
            elif grabber.finished.is_set():
                break
            elif grabber.alive(CAPTURE_STALL_S):
                self.notifier.watchdog()
            self.enrolments.poll(now)
            if self.live:
                self.live.tick(frame, self.pipeline, self.store, self.enrolments.banner(now))
            if not ready and (frame is not None or now - self.started > READY_WITHOUT_CAMERA_S):
                self.notifier.ready("processing frames" if frame is not None else "waiting for camera")
                ready = True
            if self.publisher:
                with self.pipeline.timer.stage("publish"):
                    self.publisher.pump()
            if now - last_status > STATUS_EVERY_S:
                last_status = now
                fps = frame_rate.per_second()
                depth = self.store.outbox_depth() if self.publisher else 0
                refused = f" (broker refuses {', '.join(sorted(self.publisher.refused))})" \
                    if self.publisher and self.publisher.refusing else ""
                self.notifier.status(f"{fps:.1f} fps, {len(self.pipeline.tracker)} faces, outbox {depth}{refused}")
                if self.fleet:
                    self.fleet.share_local_changes()     # people enrolled or forgotten by another process
                if self.homeassistant:
                    self.homeassistant.tick(fps, len(self.pipeline.tracker), depth)
            if now - last_purge > PURGE_EVERY_S:
                last_purge = now
                purged = self.store.purge_sightings(cfg.store.retention_days)
                if purged:
                    log.info("purged %d sightings older than %d days", purged, cfg.store.retention_days)
                if self.snapshots.purge():
                    log.info("erased thumbnails older than %d days (or all: snapshots.keep_thumbnails is off)",
                             cfg.snapshots.thumbnail_retention_days)
                # Unknown faces' embeddings follow the same retention; with unknowns.keep off none are kept.
                purged = (self.store.purge_unknowns(cfg.store.retention_days) if cfg.unknowns.keep
                          else self.store.forget_unknowns())
                if purged:
                    log.info("erased %d unknown faces (%s)", purged, f"older than {cfg.store.retention_days} days"
                             if cfg.unknowns.keep else "unknowns.keep is off")

    def _shutdown(self, grabber: LatestFrameGrabber, failed: bool) -> None:
        """Close open tracks (face_left) and flush the outbox within stop_flush_s; bounded, never hangs."""
        self.notifier.stopping()
        grabber.stop()
        if self.live:
            self.live.stop()
        closing = self.pipeline.close()
        error: StoreError | None = None
        if not failed:       # a database that cannot be written cannot take the face_left events either
            try:
                self.enrolments.stop()          # a request still running is answered: the daemon stopped
                self._emit(closing)
            except StoreError as exc:
                error = exc
        if self.publisher:
            if not (failed or error) and not self.publisher.flush(self.stop_flush_s):
                log.warning("%d events still in the outbox; they are sent on the next start",
                            self.store.outbox_depth())
            if self.homeassistant and not (failed or error):
                self.homeassistant.close()
            self.publisher.stop()
        for sink in self.sinks:
            sink.close()
        self.notifier.close()
        if error is not None:
            raise error


def print_event(payload: dict) -> None:
    sys.stdout.write(json.dumps(payload, separators=(",", ":")) + "\n")
    sys.stdout.flush()
