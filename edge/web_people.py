"""What the people page and the JSON API do, through the same functions as the CLI (edge/enroll.py,
edge/unknowns.py, edge/analysis.py): each call opens its own Store (one per thread) on the daemon's database;
models for uploads are loaded on first use and shared by one lock (uploads are rare, memory is not)."""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from pathlib import Path

from . import unknowns
from .config import AppConfig
from .enroll import BadName, Enrolment, checked_name, enroll, forget_person, forget_unknown_group, \
    name_unknown_group
from .images import ImageError, decode_image
from .snapshots import person_slug, thumbnail_dir
from .store import Store

THUMBNAIL_NAME = re.compile(r"^[0-9a-f]{1,64}_[a-z0-9_]{1,40}-[0-9a-f]{6}\.jpg$")


class People:
    def __init__(self, cfg: AppConfig):
        self.cfg = cfg
        self._models = None
        self._models_lock = threading.Lock()

    @contextmanager
    def _store(self):
        store = Store(self.cfg.store.path)
        try:
            yield store
        finally:
            store.close()

    @contextmanager
    def _loaded_models(self):
        with self._models_lock:
            if self._models is None:
                from .models.loader import load_models
                self._models = load_models(self.cfg)
            yield self._models

    # --- reading ------------------------------------------------------------------------------
    def people(self) -> list[dict]:
        """Enrolled people: name, photos (embeddings), sightings, last_seen, models (when recorded), thumbnail."""
        with self._store() as store:
            rows = store.identities(self.cfg.identity.model)
        # "photos" counts the embeddings of the model in force; "models" names every model a person has
        # vectors of (none of the one in force: enrol them again).
        return [{"name": r["name"], "photos": r["embeddings"], "sightings": r["sightings"],
                 "last_seen": r["last_seen"], "models": r.get("models", []),
                 "thumbnail": self._newest_thumbnail(f"*_{person_slug(r['name'])}.jpg")} for r in rows]

    def sightings(self, limit: int = 20) -> list[dict]:
        with self._store() as store:
            return store.recent_sightings(limit)

    def groups(self) -> list[dict]:
        """Unknown groups as `edge unknowns list --json` gives them, plus a thumbnail file name (or None)."""
        with self._store() as store:
            found = unknowns.clusters(store, self.cfg)
        result = []
        for group in found:
            row = group.as_dict()
            row["thumbnail"] = next((t for track in reversed(group.tracks)
                                     if (t := self._newest_thumbnail(f"{track}_*.jpg"))), None)
            result.append(row)
        return result

    def _newest_thumbnail(self, pattern: str) -> str | None:
        if not self.cfg.snapshots.keep_thumbnails:
            return None
        folder = thumbnail_dir(self.cfg)
        files = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
        return files[-1].name if files else None

    def thumbnail(self, filename: str) -> Path | None:
        """A kept face crop by file name, only while thumbnails are kept; nothing outside their folder."""
        if not self.cfg.snapshots.keep_thumbnails or not THUMBNAIL_NAME.match(filename):
            return None
        path = thumbnail_dir(self.cfg) / filename
        return path if path.is_file() else None

    # --- acting -------------------------------------------------------------------------------
    def enroll(self, name: str, files: list[tuple[str, bytes]], strict: bool = False) -> Enrolment:
        """Raises BadName; every photo gets its own result."""
        name = checked_name(name)
        with self._loaded_models() as models, self._store() as store:
            return enroll(models, store, name, files, strict=strict)

    def forget(self, name: str) -> bool:
        with self._store() as store:
            return forget_person(self.cfg, store, name)

    def _group(self, store, number: int, track: str | None):
        group = unknowns.find(store, self.cfg, number)
        # The form names a track of the group it showed: groups are renumbered when others change.
        if group is None or (track and track not in group.tracks):
            raise LookupError(f"unknown group {number} changed since the page was shown; look again")
        return group

    def name_group(self, number: int, track: str | None, name: str) -> str:
        """Raises BadName, LookupError; returns what was done."""
        with self._store() as store:
            group = self._group(store, number, track)
            count = name_unknown_group(self.cfg, store, group, name)
        return f"enrolled {name.strip()} from {count} unknown track(s) of group {number}"

    def forget_group(self, number: int, track: str | None) -> str:
        with self._store() as store:
            group = self._group(store, number, track)
            count = forget_unknown_group(self.cfg, store, group)
        return f"forgot group {number}: {count} unknown track(s) erased"

    def request_camera_enrolment(self, name: str, frames_text: str | int | None) -> dict:
        """Queue `edge enroll NAME --camera` for the daemon of this camera (this process); raises BadName, or
        LookupError when too many requests wait already."""
        name = checked_name(name)
        try:
            frames = self.cfg.camera_enrolment.frames if frames_text in (None, "") else int(frames_text)
        except (TypeError, ValueError):
            raise BadName(f"frames must be a whole number, not {str(frames_text)[:20]!r}") from None
        if not 1 <= frames <= 50:
            raise BadName(f"frames must be 1-50 (got {frames})")
        with self._store() as store:
            request_id = store.request_camera_enrolment(name, self.cfg.camera, frames,
                                                        self.cfg.camera_enrolment.timeout_s)
            if request_id is None:
                raise LookupError(f"camera {self.cfg.camera} already has requests waiting; try again when they "
                                  "are done")
            return store.camera_enrolment(request_id)

    def camera_enrolments(self, limit: int = 5) -> list[dict]:
        with self._store() as store:
            return store.camera_enrolments(limit)

    def camera_enrolment(self, request_id: int) -> dict | None:
        with self._store() as store:
            return store.camera_enrolment(request_id)

    def recognize(self, label: str, data: bytes) -> dict:
        """`edge analyze --json` for one uploaded photo; raises ImageError."""
        from .analysis import face_results, faces_in
        image = decode_image(data, label)
        with self._loaded_models() as models:
            faces = faces_in(models, image)
        with self._store() as store:
            gallery = store.gallery(self.cfg.identity.model)
        identity = self.cfg.identity
        return {"image": label, "faces": face_results(faces, gallery, identity.threshold, identity.metric,
                                                      identity.margin)}


__all__ = ["People", "BadName", "ImageError"]
