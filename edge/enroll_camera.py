"""Enrolment from the running camera: `edge enroll NAME --camera`, the people page's button, POST /api/enrolments.

The requester writes a request row into the shared database (Store.request_camera_enrolment). The daemon of that
camera takes it (CameraEnrolments.poll) and, while it runs, the pipeline hands over every frame's tracker views
and the faces it measured (CameraEnrolments.frame). A frame is kept when exactly one confirmed face is in view,
it belongs to the same track as the frames kept before, and it is large, sharp and frontal (frame_quality). The N
kept embeddings are enrolled in one transaction; two faces in view, a face the tracker names as someone else, or
the deadline refuse the request. The requester follows the row (follow). When no daemon holds the camera (the
lock file of CameraLock), the command runs the same loop itself (run_here).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import cv2
import numpy as np

from .config import AppConfig, CameraEnrolmentConfig, SnapshotsConfig
from .face import Face
from .snapshots import crop_face, person_slug, thumbnail_dir, write_thumbnail

log = logging.getLogger(__name__)

FINAL = ("done", "refused", "cancelled", "failed")
POLL_S = 0.5              # the daemon looks for requests and writes progress this often
RESULT_SHOWN_S = 5.0      # the kiosk window keeps the outcome on screen this long
NO_FACE_SAID_AFTER_S = 1.0   # a face missed by one detection is not "no face in view"
SHARPNESS_SIDE = 112      # faces are resized to this before measuring sharpness (thresholds were measured so)


@dataclass(frozen=True)
class FrameQuality:
    size: int                 # shorter side of the face box, pixels
    sharpness: float
    yaw: float
    problem: str | None       # why the frame is not kept, said to the person in front of the camera
    kind: str | None = None   # small | turned | blurred


def sharpness(image_rgb: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Variance of the Laplacian over the standard deviation of the face resized to 112 px: focus and motion blur
    lower it; dividing by the contrast keeps a dim face from looking blurred."""
    x, y, w, h = box
    crop = image_rgb[max(0, y):max(0, y + h), max(0, x):max(0, x + w)]
    if crop.size == 0:
        return 0.0
    gray = cv2.cvtColor(cv2.resize(crop, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var() / (gray.std() + 1e-6))


def yaw(landmarks: np.ndarray) -> float:
    """The nose's horizontal offset from the eyes' midpoint over the eye distance (0 = facing the camera)."""
    left_eye, right_eye, nose = (np.asarray(p, np.float64) for p in landmarks[:3])
    eyes = float(np.linalg.norm(right_eye - left_eye))
    return float("inf") if eyes < 1 else float((nose[0] - (left_eye[0] + right_eye[0]) / 2) / eyes)


def frame_quality(image_rgb: np.ndarray, face: Face, cfg: CameraEnrolmentConfig) -> FrameQuality:
    size = int(min(face.box[2], face.box[3]))
    turned = yaw(face.landmarks) if face.landmarks is not None else float("inf")
    sharp = sharpness(image_rgb, face.box)
    if size < cfg.min_face_px:
        return FrameQuality(size, sharp, turned, f"face too small ({size} px, needs {cfg.min_face_px}): step closer",
                            "small")
    if abs(turned) > cfg.max_yaw:
        return FrameQuality(size, sharp, turned, f"face turned away (yaw {abs(turned):.2f}, at most {cfg.max_yaw}): "
                                                 "look at the camera", "turned")
    if sharp < cfg.min_sharpness:
        return FrameQuality(size, sharp, turned, f"face blurred (sharpness {sharp:.2f}, needs {cfg.min_sharpness}): "
                                                 "hold still", "blurred")
    return FrameQuality(size, sharp, turned, None)


class Session:
    """One request being served: which track, the embeddings kept so far, and why other frames were not kept."""

    def __init__(self, request: dict, cfg: CameraEnrolmentConfig, started: float,
                 crops: SnapshotsConfig | None = None):
        self.id: int = request["id"]
        self.name: str = request["name"]
        self.wanted: int = request["frames"]
        self.timeout_s: float = request["timeout_s"]
        self.deadline = started + self.timeout_s
        self.cfg = cfg
        self.track: int | None = None
        self.track_uid = ""
        self.crops = crops                     # snapshots config when thumbnails are kept, else None
        self.best: tuple[float, np.ndarray] | None = None   # (sharpness, face crop) of the sharpest kept frame
        self.kept: list[np.ndarray] = []
        self.kept_at = float("-inf")
        self.face_seen_at = float("-inf")
        self.problems: Counter[str] = Counter()
        self.last_problem: dict[str, str] = {}
        self.status = "running"                # then complete (ready to enrol), refused or failed
        self.message = "looking for one face"

    @property
    def good(self) -> int:
        return len(self.kept)

    def offer(self, image_rgb: np.ndarray, measured: list[Face], views, now: float) -> None:
        """One frame: the tracker's views after it and the faces whose models ran on it."""
        if self.status != "running":
            return
        in_view = [v for v in views if v.in_view and v.confirmed]
        if len(in_view) > 1:
            self._end("refused", f"{len(in_view)} faces in view: only the person to enrol may face the camera")
            return
        if not in_view:
            if now - self.face_seen_at > NO_FACE_SAID_AFTER_S:
                self.message = "no face in view: stand in front of the camera"
            return
        view = in_view[0]
        self.face_seen_at = now
        if view.identity is not None and view.identity != self.name:
            # The tracker's decision over several frames: enrolling this face under another name would make
            # the two people one.
            self._end("refused", f"this face is already enrolled as {view.identity}: forget {view.identity} "
                                 "first, or enrol under that name")
            return
        if self.track is not None and view.id != self.track and self.kept:
            self.kept.clear()              # another track may be another person: their frames are not mixed
            self.best = None
            self.message = "a new face: starting again"
        self.track, self.track_uid = view.id, view.uid
        if self.good < self.wanted and not self._keep(image_rgb, measured, view.id, now):
            return
        if self.good >= self.wanted:
            # Enough frames; the tracker says whose face this is after tracking.min_frames measured frames:
            # wait for that rather than enrol someone known under a new name.
            if view.decided:
                self.status = "complete"
            else:
                self.message = "checking that this face is not someone else's"

    def _keep(self, image_rgb: np.ndarray, measured: list[Face], track_id: int, now: float) -> bool:
        """Keep the track's face of this frame when it is good; False when there was none to keep."""
        face = next((f for f in measured if f.track_id == track_id and f.embedding is not None), None)
        if face is None:
            return False
        quality = frame_quality(image_rgb, face, self.cfg)
        if quality.problem:
            self.problems[quality.kind] += 1
            self.last_problem[quality.kind] = quality.problem
            self.message = quality.problem
            return False
        if now - self.kept_at < self.cfg.min_interval_s:
            return False
        self.kept.append(face.embedding)
        self.kept_at = now
        if self.crops is not None and (self.best is None or quality.sharpness > self.best[0]):
            crop = crop_face(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), face.box, self.crops)
            self.best = (quality.sharpness, crop)
        self.message = "keep looking at the camera"
        return True

    def expire(self, now: float) -> None:
        if self.status != "running" or now <= self.deadline:
            return
        if self.face_seen_at == float("-inf"):
            self._end("refused", f"no face in view in {self.timeout_s:.0f} s")
        else:
            worst = f"; most frames were not kept: {self.last_problem[self.problems.most_common(1)[0][0]]}" \
                if self.problems else ""
            self._end("refused", f"only {self.good} of {self.wanted} good frames in {self.timeout_s:.0f} s{worst}")

    def _end(self, status: str, message: str) -> None:
        self.status, self.message = status, message


class CameraEnrolments:
    """The daemon's side: takes this camera's requests from the database, serves one at a time with the frames
    the pipeline hands over, writes progress and the outcome back. `active` tells the pipeline to detect and
    measure every frame while a request runs (no fast-path skipping)."""

    def __init__(self, cfg: AppConfig, store, model_id: str, lock: "CameraLock"):
        self.cfg = cfg
        self.store = store
        self.model_id = model_id
        self.lock = lock
        self.session: Session | None = None
        self._polled = float("-inf")
        self._reported: tuple[int, str] | None = None
        self._outcome: tuple[str, float] | None = None   # text shown on the kiosk after the end, and since when
        self._lock_warned = False

    @property
    def active(self) -> bool:
        return self.session is not None

    def start(self, request: dict, now: float | None = None) -> None:
        self.session = Session(request, self.cfg.camera_enrolment, time.monotonic() if now is None else now,
                               self.cfg.snapshots if self.cfg.snapshots.keep_thumbnails else None)
        self._reported = None
        log.info("enrolling %s from camera %s: %d good frames within %.0f s (request %d)", request["name"],
                 self.cfg.camera, request["frames"], request["timeout_s"], request["id"])

    def poll(self, now: float) -> None:
        """Every loop iteration; reads or writes the database at most every POLL_S."""
        if now - self._polled < POLL_S:
            return
        self._polled = now
        if not self.lock.held:
            if not self.lock.acquire():
                if not self._lock_warned:
                    self._lock_warned = True
                    log.warning("another process reads camera %s (%s is locked: `edge enroll --camera`, or a "
                                "second daemon with the same camera name): enrolment requests for it are served "
                                "there", self.cfg.camera, self.lock.path)
                return
            abandoned = self.store.abandon_camera_enrolments(self.cfg.camera)
            if abandoned:
                log.info("%d enrolment request(s) of camera %s left running by a process that stopped: marked failed",
                         abandoned, self.cfg.camera)
        if self.session is None:
            request = self.store.take_camera_enrolment(self.cfg.camera)
            if request is not None:
                self.start(request, now)
            return
        session = self.session
        session.expire(now)
        if session.status != "running":
            self._finish()
        elif (session.good, session.message) != self._reported:
            self._reported = (session.good, session.message)
            if not self.store.update_camera_enrolment(session.id, session.good, session.message):
                log.info("enrolment of %s cancelled by its requester", session.name)
                self._show("enrolment cancelled", now)
                self.session = None

    def frame(self, image_rgb: np.ndarray, measured: list[Face], views, now: float) -> None:
        """Called by the pipeline after each frame's models while a request runs."""
        if self.session is None:
            return
        self.session.offer(image_rgb, measured, views, now)
        if self.session.status != "running":
            self._finish()

    def stop(self, reason: str = "the daemon stopped") -> None:
        if self.session is not None:
            self.store.finish_camera_enrolment(self.session.id, "failed", f"not enrolled: {reason}",
                                               self.session.good)
            self.session = None
        self.lock.release()

    def _finish(self) -> None:
        session, self.session = self.session, None
        now = time.monotonic()
        if session.status == "complete":
            stamp = datetime.now().isoformat(timespec="seconds")
            message = f"enrolled {session.name} from {session.good} frames of camera {self.cfg.camera}"
            done = self.store.complete_camera_enrolment(
                session.id, session.name, np.stack(session.kept),
                [f"camera {self.cfg.camera} {stamp} frame {i + 1}" for i in range(session.good)], self.model_id,
                message)
            log.info("%s" if done else "enrolment of %s cancelled by its requester before it was stored",
                     message if done else session.name)
            if done and session.best is not None:      # the people page shows who was enrolled
                ok, jpeg = cv2.imencode(".jpg", session.best[1], [cv2.IMWRITE_JPEG_QUALITY,
                                                                 self.cfg.snapshots.jpeg_quality])
                if ok:
                    write_thumbnail(thumbnail_dir(self.cfg), session.track_uid, session.name, jpeg.tobytes())
            self._show(f"Enrolled {session.name}" if done else "enrolment cancelled", now)
        else:
            self.store.finish_camera_enrolment(session.id, session.status, f"not enrolled: {session.message}",
                                               session.good)
            log.info("enrolment of %s %s: %s", session.name, session.status, session.message)
            self._show(f"Not enrolled: {session.message}", now)

    def _show(self, text: str, now: float) -> None:
        self._outcome = (text, now)

    def banner(self, now: float) -> str | None:
        """The line the kiosk window and the live picture show while enrolling, then the outcome for a while."""
        if self.session is not None:
            s = self.session
            return f"Enrolling {s.name} {s.good}/{s.wanted}: {s.message}"
        if self._outcome is not None and now - self._outcome[1] < RESULT_SHOWN_S:
            return self._outcome[0]
        return None


class CameraLock:
    """An advisory lock (flock) per camera name beside the database, held by whoever reads that camera: the
    daemon, or `edge enroll --camera` when no daemon runs. The kernel drops it when the process dies."""

    def __init__(self, cfg: AppConfig):
        self.path = cfg.store.path.parent / f".camera-{person_slug(cfg.camera)}.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError as exc:
            log.warning("cannot open %s (%s): enrolment from this camera is off", self.path, exc.strerror)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def follow(store, request_id: int, on_change: Callable[[dict], None], stop: threading.Event,
           wait_for_daemon_s: float, interval: float = 0.2) -> dict:
    """Read the request's row until it is final, calling on_change on every new (good, message); gives up when
    nothing takes it within `wait_for_daemon_s` or a running request stops moving (its daemon died)."""
    seen, since = None, time.monotonic()
    while not stop.wait(interval):
        row = store.camera_enrolment(request_id)
        if row is None:
            return {"status": "failed", "message": "the request was removed from the database", "good": 0}
        if (row["status"], row["good"], row["message"]) != seen:
            seen, since = (row["status"], row["good"], row["message"]), time.monotonic()
            on_change(row)
        if row["status"] in FINAL:
            return row
        quiet = time.monotonic() - since
        limit = wait_for_daemon_s if row["status"] == "requested" else row["timeout_s"] + 15
        if quiet > limit:
            why = (f"no daemon of camera {row['camera']} took the request in {limit:.0f} s"
                   if row["status"] == "requested" else f"the daemon of camera {row['camera']} stopped answering")
            store.finish_camera_enrolment(request_id, "failed", f"not enrolled: {why}")
            return store.camera_enrolment(request_id)
    store.finish_camera_enrolment(request_id, "cancelled", "not enrolled: cancelled by the requester")
    return store.camera_enrolment(request_id)


def run_here(cfg: AppConfig, store, request: dict, models, lock: CameraLock, stop: threading.Event) -> None:
    """Serve one request with this process's own capture and pipeline (no daemon reads the camera); the
    caller holds the camera `lock`. Events are not published: this is enrolment, not monitoring."""
    from .capture import grabber_for
    from .pipeline import Pipeline

    grabber = grabber_for(cfg)
    pipeline = Pipeline(cfg, models, lambda: store.gallery(cfg.identity.model))
    enrolments = CameraEnrolments(cfg, store, models.embedding.model_id, lock)
    enrolments.start(request)
    pipeline.enrolment = enrolments
    grabber.start()
    try:
        while enrolments.active and not stop.is_set():
            frame = grabber.get(timeout=0.2)
            if frame is not None:
                pipeline.process(frame.image, frame.timestamp)
            elif grabber.finished.is_set():
                enrolments.stop(f"{grabber.source.description} ended")
                break
            enrolments.poll(time.monotonic())
    finally:
        grabber.stop()
        pipeline.close()
        if enrolments.active:
            enrolments.stop("cancelled")
