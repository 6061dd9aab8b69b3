"""Snapshots: a cropped JPEG of each track's best frame, on `<prefix>/snapshot/<name>` (as Frigate does).

Face images, so everything here is off unless `snapshots.enabled` (MQTT, sent only while connected,
never queued on disk) or `snapshots.keep_thumbnails` (owner-only files with their own retention,
erased with the person) is switched on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np

from .config import AppConfig, SnapshotsConfig

log = logging.getLogger(__name__)


def wanted(cfg: AppConfig) -> bool:
    return cfg.snapshots.enabled or cfg.snapshots.keep_thumbnails


def crop_face(image_bgr: np.ndarray, box: tuple[int, int, int, int], cfg: SnapshotsConfig) -> np.ndarray:
    """The face box plus a margin, clipped to the frame, shrunk to at most max_size on its longest side."""
    x, y, w, h = box
    mx, my = int(w * cfg.margin), int(h * cfg.margin)
    height, width = image_bgr.shape[:2]
    x0, y0 = max(0, x - mx), max(0, y - my)
    x1, y1 = min(width, x + w + mx), min(height, y + h + my)
    crop = image_bgr[y0:y1, x0:x1]
    scale = cfg.max_size / max(crop.shape[:2])
    if scale < 1:
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)    # a copy: the frame buffer is reused by capture


class BestCrops:
    """Per open track, the crop of its best frame so far (largest, most confident face), for the events
    that carry a snapshot. Owned by the pipeline; tracks never hold pictures."""

    def __init__(self, cfg: SnapshotsConfig):
        self.cfg = cfg
        self._best: dict[int, tuple[float, np.ndarray]] = {}

    def offer(self, faces, image_bgr: np.ndarray) -> None:
        """This frame's tracked faces: keep a crop where it beats the track's best."""
        for face in faces:
            quality = face.box[2] * face.box[3] * face.score
            if quality > self._best.get(face.track_id, (0.0, None))[0]:
                self._best[face.track_id] = (quality, crop_face(image_bgr, face.box, self.cfg))

    def get(self, track_id: int) -> np.ndarray | None:
        best = self._best.get(track_id)
        return None if best is None else best[1]

    def drop(self, track_id: int) -> None:
        self._best.pop(track_id, None)


def name_parts(name: str) -> tuple[str, str]:
    """(file- and id-safe slug, short hash) of a person's name; the hash keeps "Anne B" and "anne_b" apart."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:40] or "person"
    return slug, hashlib.sha1(name.encode()).hexdigest()[:6]


def person_slug(name: str) -> str:
    """The person's part of a thumbnail file name."""
    return "-".join(name_parts(name))


def thumbnail_dir(cfg: AppConfig) -> Path:
    return cfg.store.path.parent / "thumbnails"


def erase_thumbnails(cfg: AppConfig, name: str) -> int:
    """A forgotten person's thumbnails go with their embeddings."""
    erased = 0
    for path in thumbnail_dir(cfg).glob(f"*_{person_slug(name)}.jpg"):
        path.unlink(missing_ok=True)
        erased += 1
    return erased


def write_thumbnail(folder: Path, track: str, name: str, jpeg: bytes) -> Path:
    """`<track>_<person slug>.jpg`, owner-only, replacing the track's earlier one (e.g. kept as unknown, then
    recognised); forgetting the person erases it (erase_thumbnails)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for older in folder.glob(f"{track}_*.jpg"):
        older.unlink(missing_ok=True)
    path = folder / f"{track}_{person_slug(name)}.jpg"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(jpeg)
    return path


class Snapshots:
    def __init__(self, cfg: AppConfig, publisher=None):
        self.cfg = cfg.snapshots
        self.publisher = publisher if cfg.snapshots.enabled else None
        self.topic_root = f"{cfg.mqtt.prefix}/snapshot"
        self.thumbnail_dir = thumbnail_dir(cfg)
        self.thumbnails = self.thumbnail_dir if cfg.snapshots.keep_thumbnails else None
        self.published = 0
        self._sent: dict[str, np.ndarray] = {}     # track -> crop last sent, so an unchanged one is not resent

    def observe(self, event) -> None:
        """On face_identified and face_left, send the track's best crop if it changed since last sent."""
        payload = event.payload
        crop = getattr(event, "snapshot", None)
        track = payload.get("track_id")
        if payload.get("type") not in ("face_identified", "face_left") or crop is None:
            return
        if self._sent.get(track) is not crop:
            identity = payload.get("identity")
            name = identity["name"] if identity else "unknown"
            ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
            if ok:
                self._send(track, name, jpeg.tobytes())
            self._sent[track] = crop
        if payload["type"] == "face_left":
            self._sent.pop(track, None)

    def close(self) -> None:
        self._sent.clear()

    def _send(self, track: str, name: str, jpeg: bytes) -> None:
        if self.publisher is not None and self.publisher.publish_now(f"{self.topic_root}/{name}", jpeg,
                                                                     retain=self.cfg.retain, qos=1):
            self.published += 1
        if self.thumbnails is not None:
            write_thumbnail(self.thumbnails, track, name, jpeg)

    def purge(self, now: float | None = None) -> int:
        """Delete thumbnails older than thumbnail_retention_days; all of them once keep_thumbnails is off."""
        if not self.thumbnail_dir.is_dir():
            return 0
        cutoff = (now or time.time()) - self.cfg.thumbnail_retention_days * 86400
        old = [p for p in self.thumbnail_dir.glob("*.jpg") if self.thumbnails is None or p.stat().st_mtime < cutoff]
        for path in old:
            path.unlink(missing_ok=True)
        return len(old)
