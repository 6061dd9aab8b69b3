"""SQLite store (sqlite-utils): identities, embeddings, sightings, the event outbox, migrations.

One Store per thread. WAL mode lets a reader (e.g. `edge identities list`) run beside the daemon.
Files are created owner-only: embeddings are biometric data, and erasing a person (`forget`) can be
resumed after a crash or a full disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import sqlite_utils

from .identify import Gallery
from .models.catalog import LEGACY_MODEL

log = logging.getLogger(__name__)


# Several daemons may share one database (one per camera, README "Several cameras on one box"); each sends
# the others' queued events only once they have waited this long.
OTHERS_AFTER_S = 30.0
# Requests to enrol from a camera waiting at once for one camera (edge/enroll_camera.py); each may hold the camera
# in enrolment for its whole timeout.
MAX_WAITING_PER_CAMERA = 5


class StoreError(RuntimeError):
    """The database cannot be opened, read or written (read-only, disk full, corrupt)."""


def _v1(db: sqlite_utils.Database) -> None:
    db["identities"].create({"id": int, "name": str, "created_at": float}, pk="id", not_null={"name"})
    db["identities"].create_index(["name"], unique=True)
    db["embeddings"].create({"id": int, "identity_id": int, "vector": bytes, "source": str, "created_at": float},
                            pk="id", foreign_keys=[("identity_id", "identities", "id")])
    db["embeddings"].create_index(["identity_id"])
    db["sightings"].create({"id": int, "track": str, "camera": str, "identity_id": int, "first_seen": float,
                            "last_seen": float, "age": float, "gender": str, "gender_confidence": float,
                            "frames": int}, pk="id", foreign_keys=[("identity_id", "identities", "id")])
    db["sightings"].create_index(["track"], unique=True)
    db["sightings"].create_index(["last_seen"])
    db["outbox"].create({"id": int, "event_id": str, "topic": str, "payload": str, "identity_id": int,
                         "created_at": float}, pk="id")
    db["outbox"].create_index(["event_id"], unique=True)


def _unknowns_table(db: sqlite_utils.Database) -> None:
    """Unknown tracks' averaged embeddings, for `edge unknowns` (edge/unknowns.py clusters them)."""
    db["unknowns"].create({"id": int, "track": str, "camera": str, "vector": bytes, "frames": int,
                           "frames_averaged": int, "first_seen": float, "last_seen": float, "age": float,
                           "gender": str, "gender_confidence": float}, pk="id")
    db["unknowns"].create_index(["track"], unique=True)
    db["unknowns"].create_index(["last_seen"])


def _fleet_versions(db: sqlite_utils.Database) -> None:
    """Who changed each person last and when (edge/fleet.py), kept after a forget as a tombstone;
    retained outbox rows for the fleet's gallery messages."""
    db["fleet_versions"].create({"name": str, "version": int, "box": str, "deleted": int, "digest": str},
                                pk="name")
    db["outbox"].add_column("retain", int, not_null_default=0)


def _embedding_models(db: sqlite_utils.Database) -> None:
    """Which embedding model made each stored vector: vectors of different models are not comparable,
    so matching uses only the model in force (README, "Changing the embedding model"). Every vector
    stored before this migration came from the dlib ResNet, the only model there was."""
    db["embeddings"].add_column("model", str, not_null_default=LEGACY_MODEL)
    db["unknowns"].add_column("model", str, not_null_default=LEGACY_MODEL)
    db["embeddings"].create_index(["model"])


def _unknown_groups(db: sqlite_utils.Database) -> None:
    """Stable ids for groups of unknown faces (edge/unknowns.py): each unknown row remembers its group, and
    new groups take the next value of a counter that never goes back, so an id is never given out twice."""
    db["unknowns"].add_column("group_id", int)
    db["counters"].create({"name": str, "value": int}, pk="name")


def _forgetting(db: sqlite_utils.Database) -> None:
    """Erasures begun and not finished (Store.forget): a retry finds the person here after their rows
    are gone. Keyed by a digest of the name, so an interrupted erasure leaves no readable name behind."""
    db["forgetting"].create({"digest": str, "started_at": float}, pk="digest")


def _camera_enrolments(db: sqlite_utils.Database) -> None:
    """Requests to enrol a person from a camera (edge/enroll_camera.py): written by `edge enroll --camera` or
    the people page, taken and answered by the daemon of that camera; the requester follows the row."""
    db["camera_enrolments"].create({"id": int, "name": str, "camera": str, "frames": int, "timeout_s": float,
                                    "status": str, "good": int, "message": str, "requested_at": float,
                                    "updated_at": float}, pk="id")
    db["camera_enrolments"].create_index(["camera", "status"])


# Append-only: migration N brings a database from version N-1 to N.
MIGRATIONS = [_v1, _unknowns_table, _fleet_versions, _embedding_models, _unknown_groups, _forgetting,
              _camera_enrolments]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Erasure:
    """What Store.forget did; false when there was no one (and nothing half-erased) of that name."""
    found: bool
    resumed: bool = False             # finished an erasure that a crash or a full disk interrupted
    files: int = 0                    # files removed by the caller's erase_files (thumbnails)
    vacuum_error: str | None = None   # rows erased and overwritten, but VACUUM failed: a retry redoes it

    def __bool__(self) -> bool:
        return self.found


def name_digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@dataclass(frozen=True)
class OutboxEvent:
    id: int
    event_id: str
    topic: str
    payload: str
    retain: bool = False


def _what_to_do(exc: sqlite3.Error) -> str:
    if "malformed" in str(exc) or "not a database" in str(exc):
        return " (the file is corrupt: restore a backup, or move it away to start with an empty database)"
    return ""


def _why_not_writable(path: Path) -> str:
    """SQLite only says "unable to open database file"; name the usual cause so a person can act on it."""
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return " (the file system is mounted read-only)"
        if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            return f" (not writable by uid {os.getuid()})"
    except OSError:
        pass
    return ""


class Store:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            connection = sqlite3.connect(str(self.path), timeout=10, isolation_level=None)
            self.db = sqlite_utils.Database(connection)
            self._enable_wal()
            # NORMAL in WAL keeps the database consistent across power loss; a cut may lose
            # the last transaction only, and the outbox is written before publishing anyway.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            # Deleted rows are overwritten with zeros in the page itself, so an erased person's bytes are
            # gone once the WAL is checkpointed, even when a VACUUM cannot run (disk full). Some builds
            # (Debian's) default to this already; others do not.
            self.db.execute("PRAGMA secure_delete=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}{_why_not_writable(self.path)}") from None
        except OSError as exc:
            raise StoreError(f"cannot create database {self.path}: {exc.strerror}") from None
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)
        self._galleries: dict[str, Gallery] = {}      # per embedding model
        self._gallery_data_version: int | None = None

    def _enable_wal(self, wait_s: float = 10.0) -> None:
        # A new file switches to WAL once; while another process does it (a second camera's daemon starting
        # at the same moment) SQLite answers "database is locked" at once instead of waiting: 5 of 240
        # simultaneous opens failed so before this loop.
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"database {self.path} has schema {version}, newer than this program ({SCHEMA_VERSION})")
        for number in range(version, SCHEMA_VERSION):
            with self.db.conn:
                self.db.execute("BEGIN IMMEDIATE")
                # Another process on the same file (a second camera's daemon starting at the same time)
                # may have run this migration between our first look and our lock.
                if self.db.execute("PRAGMA user_version").fetchone()[0] > number:
                    continue
                MIGRATIONS[number](self.db)
                self.db.execute(f"PRAGMA user_version = {number + 1}")

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def _write(self, fn, *args):
        """Run fn in one transaction; map SQLite failures (disk full, read-only) to StoreError."""
        try:
            with self.db.conn:
                self.db.execute("BEGIN IMMEDIATE")
                return fn(*args)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write database {self.path}: {exc}{_what_to_do(exc)}") from None

    def _read(self, fn, *args):
        """Run a query; a corrupt page or a vanished file becomes one StoreError line, not a traceback."""
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read database {self.path}: {exc}{_what_to_do(exc)}") from None


    # --- identities -----------------------------------------------------------------
    def _identity_for(self, name: str) -> int:
        """The id of `name`, creating the identity; call inside a write transaction."""
        row = self.db.execute("SELECT id FROM identities WHERE name = ?", [name]).fetchone()
        return row[0] if row else self.db["identities"].insert({"name": name, "created_at": time.time()}).last_pk

    def enroll(self, name: str, vectors: np.ndarray, sources: list[str], *, model: str) -> int:
        """Add embeddings made by embedding model `model` for `name` (creating the identity), in one transaction."""
        identity_id = self._write(self._add_embeddings, name, vectors, sources, model)
        self._galleries.clear()
        return identity_id

    def _add_embeddings(self, name: str, vectors: np.ndarray, sources: list[str], model: str) -> int:
        """Inside a write transaction."""
        identity_id = self._identity_for(name)
        self.db["embeddings"].insert_all(
            {"identity_id": identity_id, "vector": np.asarray(v, np.float32).tobytes(), "source": s,
             "created_at": time.time(), "model": model} for v, s in zip(vectors, sources))
        return identity_id

    def identities(self, model: str | None = None) -> list[dict]:
        """Every enrolled person; with `model`, "embeddings" counts only that model's vectors and
        "other_models" names the models of the rest (a person with none of `model` must be re-enrolled)."""
        rows = self._read(lambda: list(self.db.query(
            "SELECT i.name, i.created_at, COUNT(DISTINCT e.id) AS embeddings, "
            "GROUP_CONCAT(DISTINCT e.model) AS models, "
            "(SELECT COUNT(*) FROM sightings s WHERE s.identity_id = i.id) AS sightings, "
            "(SELECT MAX(last_seen) FROM sightings s WHERE s.identity_id = i.id) AS last_seen "
            "FROM identities i LEFT JOIN embeddings e ON e.identity_id = i.id GROUP BY i.id ORDER BY i.name")))
        counts = {(r[0], r[1]): r[2] for r in self._read(lambda: self.db.execute(
            "SELECT i.name, e.model, COUNT(*) FROM embeddings e JOIN identities i ON i.id = e.identity_id "
            "GROUP BY i.name, e.model").fetchall())}
        for row in rows:
            row["models"] = sorted((row["models"] or "").split(",")) if row["models"] else []
            if model is not None:
                row["embeddings"] = counts.get((row["name"], model), 0)
                row["other_models"] = [m for m in row["models"] if m != model]
        return rows

    def needing_reenrolment(self, model: str) -> dict[str, list[str]]:
        """name -> models of their embeddings, for every person with no embedding of `model`."""
        return {r["name"]: r["other_models"] for r in self.identities(model) if r["embeddings"] == 0}

    def photo_owner(self, sha256: str, model: str) -> str | None:
        """Who was enrolled by `model` from the photo with this content hash (edge/enroll.py writes it into
        `source`); under another model the same photo gives a new embedding and is not a duplicate."""
        row = self._read(lambda: self.db.execute(
            "SELECT i.name FROM embeddings e JOIN identities i ON i.id = e.identity_id "
            "WHERE e.model = ? AND e.source LIKE ? LIMIT 1", [model, f"sha256:{sha256} %"]).fetchone())
        return row[0] if row else None

    def recent_sightings(self, limit: int = 20) -> list[dict]:
        """The newest sightings, with the person's name (None: unknown)."""
        return self._read(lambda: list(self.db.query(
            "SELECT s.track, s.camera, s.first_seen, s.last_seen, s.age, s.gender, i.name FROM sightings s "
            "LEFT JOIN identities i ON i.id = s.identity_id ORDER BY s.last_seen DESC LIMIT ?", [limit])))

    def identity_id(self, name: str) -> int | None:
        row = self._read(lambda: self.db.execute("SELECT id FROM identities WHERE name = ?", [name]).fetchone())
        return row[0] if row else None

    def forget(self, name: str, erase_files: Callable[[], int] | None = None, vacuum: bool = True) -> Erasure:
        """Erase a person: embeddings, sightings, queued events naming them, the caller's files
        (`erase_files`, e.g. thumbnails), then VACUUM and checkpoint the freed bytes away.

        Resumable: a tombstone (a digest of the name) is written first and removed last, and the
        identity row goes after everything that points at it, so `forget` again finishes an erasure that
        a crash, a full disk or a failed VACUUM interrupted. Rows go in small batches with the WAL
        checkpointed in between, so a nearly full disk only needs room for one batch. A failed VACUUM is
        logged in one line, not raised: the rows are already deleted and overwritten (secure_delete).
        `vacuum=False`: the caller runs erase_free_pages() once after a batch (edge/fleet.py); the tombstone
        stays until then."""
        digest = name_digest(name)
        identity_id = self.identity_id(name)
        pending = self._read(lambda: self.db.execute(
            "SELECT 1 FROM forgetting WHERE digest = ?", [digest]).fetchone()) is not None
        if identity_id is None and not pending:
            # Nothing in the database; files may still be left by an erasure from before tombstones.
            return Erasure(False, files=erase_files() if erase_files else 0)
        files = 0
        mark = lambda: self.db.execute("INSERT OR IGNORE INTO forgetting (digest, started_at) VALUES (?, ?)",
                                       [digest, time.time()])
        try:
            self._write(mark)
        except StoreError as exc:
            if erase_files is None:
                raise
            files += erase_files()      # disk full: the files go anyway, and that frees some space
            try:
                self._write(mark)
            except StoreError:
                raise StoreError(f"{exc}; nothing in the database changed: run the erasure again once the "
                                 "problem is fixed") from None
        if erase_files is not None:
            files += erase_files()
        event_key = '"name":' + json.dumps(name)      # how record() serialises the identity in a payload
        try:
            self._delete_in_batches("embeddings", "identity_id = ?", [identity_id])
            self._delete_in_batches("sightings", "identity_id = ?", [identity_id])
            # Events naming them, also any written without the link (e.g. while the identity was changing);
            # retained fleet messages are gallery state, handled by edge/fleet.py.
            self._delete_in_batches("outbox", "identity_id = ? OR (retain = 0 AND instr(payload, ?) > 0)",
                                    [identity_id, event_key])
            self._write(lambda: self.db.execute("DELETE FROM identities WHERE id = ?", [identity_id]))
        except StoreError as exc:
            raise StoreError(f"{exc}; the erasure is part done: run it again to finish") from None
        self._galleries.clear()
        if erase_files is not None:
            files += erase_files()      # again: none of theirs can be written once the identity is gone
        if not vacuum:
            self._checkpoint()
            return Erasure(True, resumed=pending, files=files)
        return Erasure(True, resumed=pending, files=files, vacuum_error=self.erase_free_pages())

    def _delete_in_batches(self, table: str, where: str, args: list, batch: int = 100) -> None:
        while True:
            deleted = self._write(lambda: self.db.execute(
                f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {where} LIMIT ?)",
                [*args, batch]).rowcount)
            self._checkpoint()     # the WAL is reused from its start: it never holds more than one batch
            if deleted < batch:
                return

    def erase_free_pages(self) -> str | None:
        """VACUUM (after forgets made with vacuum=False too); once it worked, the tombstones of everyone no
        longer enrolled go: their erasure is complete. Returns the VACUUM error, already logged."""
        error = self._erase_free_pages()
        if error is None:
            enrolled = {name_digest(r[0]) for r in self._read(
                lambda: self.db.execute("SELECT name FROM identities").fetchall())}
            done = [r[0] for r in self._read(lambda: self.db.execute("SELECT digest FROM forgetting").fetchall())
                    if r[0] not in enrolled]
            if done:
                self._write(lambda: self.db.execute(
                    f"DELETE FROM forgetting WHERE digest IN ({','.join('?' * len(done))})", done))
                self._checkpoint()
        return error

    def _checkpoint(self) -> str | None:
        """Copy the WAL into the database and truncate it: old page images (deleted rows) leave the WAL."""
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            return str(exc)
        return None

    def _erase_free_pages(self) -> str | None:
        """VACUUM rewrites the file without its free pages (where rows deleted before secure_delete was on
        may linger). It needs free disk space about the database's size; failing is logged in one line and
        returned, never raised: the erasure itself is done."""
        error = self._checkpoint()
        if error is None:
            try:
                self.db.execute("VACUUM")
            except sqlite3.Error as exc:
                error = str(exc)
        error_after = self._checkpoint()      # also after a failed VACUUM: its partial WAL frames go
        error = error or error_after
        if error is not None:
            log.warning("database %s: VACUUM failed (%s); deleted rows are overwritten, free space is not "
                        "reclaimed: run the erasure again when there is room", self.path, error)
        return error

    def gallery(self, model: str) -> Gallery:
        """Every embedding made by `model`: vectors of another model are never compared with it."""
        return self._read(self._gallery_now, model)

    def _gallery_now(self, model: str) -> Gallery:
        # data_version changes when another connection commits (e.g. `edge enroll` beside the daemon).
        data_version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if data_version != self._gallery_data_version:
            self._galleries.clear()
            self._gallery_data_version = data_version
        if model not in self._galleries:
            rows = self.db.execute(
                "SELECT i.name, e.vector FROM embeddings e JOIN identities i ON i.id = e.identity_id "
                "WHERE e.model = ?", [model]).fetchall()
            self._galleries[model] = Gallery(np.array([r[0] for r in rows], dtype=object),
                                             np.stack([np.frombuffer(r[1], np.float32) for r in rows])) \
                if rows else Gallery.empty()
        return self._galleries[model]

    # --- sightings and the outbox ------------------------------------------------------
    def record(self, topic: str | None, event: dict, sighting: dict | None) -> None:
        """Write an event to the outbox (unless topic is None: MQTT off) and update its
        track's sighting, atomically."""
        identity = event.get("identity")
        identity_id = self.identity_id(identity["name"]) if identity else None

        def write():
            if topic is not None:
                self.db["outbox"].insert({"event_id": event["event_id"], "topic": topic,
                                          "payload": json.dumps(event, separators=(",", ":")),
                                          "identity_id": identity_id, "created_at": time.time()})
            if sighting is not None:
                self.db["sightings"].upsert(dict(sighting, identity_id=identity_id), pk="track",
                                            alter=False)
        self._write(write)

    def pending(self, limit: int = 100, exclude: set[int] = frozenset(), skip_topics: frozenset[str] = frozenset(),
                own_prefix: str | None = None, others_after_s: float = OTHERS_AFTER_S) -> list[OutboxEvent]:
        """The oldest undelivered rows. `skip_topics`: topics the broker refused lately (edge/publish.py backs
        off). With `own_prefix`, the rows of a daemon sharing this database with others (one per camera) are
        its own topics', fleet state (retained, anyone's to send), and rows the others have left for
        `others_after_s` (stopped or cut off): each event is sent once, none is stranded."""
        skip = sorted(skip_topics)
        clauses, params = [], []
        if skip:
            clauses.append(f"topic NOT IN ({','.join('?' * len(skip))})")
            params += skip
        if own_prefix is not None:
            clauses.append("(substr(topic, 1, ?) = ? OR retain = 1 OR created_at < ?)")
            params += [len(own_prefix), own_prefix, time.time() - others_after_s]
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        rows = self._read(lambda: self.db.execute(
            f"SELECT id, event_id, topic, payload, retain FROM outbox {where}ORDER BY id LIMIT ?",
            params + [limit + len(exclude)]).fetchall())
        return [OutboxEvent(*r) for r in rows if r[0] not in exclude][:limit]

    def delivered(self, outbox_ids: list[int]) -> None:
        if outbox_ids:
            self._write(lambda: self.db.execute(
                f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(outbox_ids))})", outbox_ids))

    def outbox_depth(self, own_prefix: str | None = None) -> int:
        """Rows waiting; with `own_prefix`, only those on its topics and fleet state (see `pending`)."""
        if own_prefix is None:
            return self._read(lambda: self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        return self._read(lambda: self.db.execute(
            "SELECT COUNT(*) FROM outbox WHERE substr(topic, 1, ?) = ? OR retain = 1",
            [len(own_prefix), own_prefix]).fetchone()[0])

    def purge_sightings(self, retention_days: int, now: float | None = None) -> int:
        cutoff = (now or time.time()) - retention_days * 86400
        return self._write(lambda: self.db.execute(
            "DELETE FROM sightings WHERE last_seen < ?", [cutoff]).rowcount)

    # --- unknown faces (clustered by edge/unknowns.py) -----------------------------------
    def keep_unknown(self, sighting: dict, vector: np.ndarray, frames_averaged: int, *, model: str) -> None:
        """Insert or update an unknown track's averaged embedding (one row per track), made by `model`."""
        row = {key: sighting.get(key) for key in ("track", "camera", "first_seen", "last_seen", "age", "gender",
                                                  "gender_confidence", "frames")}
        row.update(vector=np.asarray(vector, np.float32).tobytes(), frames_averaged=frames_averaged, model=model)
        self._write(lambda: self.db["unknowns"].upsert(row, pk="track", alter=False))

    def drop_unknown(self, track: str) -> None:
        """A track first kept as unknown was recognised after all."""
        self._write(lambda: self.db.execute("DELETE FROM unknowns WHERE track = ?", [track]))

    def unknown_faces(self, model: str | None = None) -> list[dict]:
        """Every kept unknown track (of embedding model `model` when given), oldest first; "vector" is a
        float32 array."""
        where, params = ("WHERE model = ? ", [model]) if model else ("", [])
        rows = self._read(lambda: list(self.db.query(f"SELECT * FROM unknowns {where}ORDER BY first_seen, id",
                                                     params)))
        for row in rows:
            row["vector"] = np.frombuffer(row["vector"], np.float32)
        return rows

    def group_unknowns(self, grouping, model: str | None = None) -> list[tuple[int, list[dict]]]:
        """Group every unknown face (of embedding model `model` when given) and store each face's group id, in
        one transaction (so two listings at once cannot give one group two ids). `grouping(rows)` gets the
        rows of `unknown_faces(model)` and returns
        [(group id, or None for a new group, [rows])]; new groups take the next ids of a counter that never
        goes back. Returns [(group id, [rows])] in the order `grouping` gave."""
        def write():
            groups = grouping(self.unknown_faces(model))
            row = self.db.execute("SELECT value FROM counters WHERE name = 'unknown_group'").fetchone()
            last = start = row[0] if row else 0
            numbered = []
            for group_id, rows in groups:
                if group_id is None:
                    last += 1
                    group_id = last
                numbered.append((group_id, rows))
            if last != start:
                self.db.execute("INSERT INTO counters (name, value) VALUES ('unknown_group', ?) "
                                "ON CONFLICT(name) DO UPDATE SET value = excluded.value", [last])
            self.db.conn.executemany("UPDATE unknowns SET group_id = ? WHERE id = ?",
                                     [(group_id, r["id"]) for group_id, rows in numbered for r in rows
                                      if r["group_id"] != group_id])
            return numbered
        return self._write(write)

    def enroll_unknowns(self, name: str, ids: list[int]) -> int:
        """Enrol the given unknown tracks as `name` (their embeddings join the gallery, their past
        sightings are attributed to the person) and delete them as unknowns, in one transaction."""
        marks = ",".join("?" * len(ids))

        def write():
            rows = self.db.execute(f"SELECT track, vector, model FROM unknowns WHERE id IN ({marks})", ids).fetchall()
            identity_id = self._identity_for(name)
            self.db["embeddings"].insert_all(
                {"identity_id": identity_id, "vector": vector, "source": f"unknown track {track}",
                 "created_at": time.time(), "model": model} for track, vector, model in rows)
            self.db.execute(f"UPDATE sightings SET identity_id = ? WHERE track IN "
                            f"({','.join('?' * len(rows))})", [identity_id] + [r[0] for r in rows])
            self.db.execute(f"DELETE FROM unknowns WHERE id IN ({marks})", ids)
            return len(rows)
        count = self._write(write)
        self._galleries.clear()
        return count

    def forget_unknowns(self, ids: list[int] | None = None) -> int:
        """Erase the given unknown tracks (None: all of them), then VACUUM the bytes away (a failed
        VACUUM is logged: the rows are overwritten already)."""
        if ids is None:
            count = self._write(lambda: self.db.execute("DELETE FROM unknowns").rowcount)
        else:
            count = self._write(lambda: self.db.execute(
                f"DELETE FROM unknowns WHERE id IN ({','.join('?' * len(ids))})", ids).rowcount)
        if count:
            self._erase_free_pages()
        return count

    def purge_unknowns(self, retention_days: int, now: float | None = None) -> int:
        cutoff = (now or time.time()) - retention_days * 86400
        count = self._write(lambda: self.db.execute("DELETE FROM unknowns WHERE last_seen < ?", [cutoff]).rowcount)
        if count:
            self._erase_free_pages()     # embeddings are biometric: gone, not just unlinked
        return count

    # --- fleet gallery sync (edge/fleet.py decides what wins; these keep its rows consistent) ---
    def fleet_states(self) -> dict[str, dict]:
        """name -> {version, box, deleted, digest} for every person the fleet has heard of."""
        return self._read(lambda: {r["name"]: r for r in self.db.query("SELECT * FROM fleet_versions")})

    def person_embeddings(self, model: str) -> dict[str, np.ndarray]:
        """name -> (K, D) float32 embeddings made by `model` of every enrolled person, in enrollment order."""
        people: dict[str, list[np.ndarray]] = {}
        for name, vector in self._read(lambda: self.db.execute(
                "SELECT i.name, e.vector FROM embeddings e JOIN identities i ON i.id = e.identity_id "
                "WHERE e.model = ? ORDER BY e.id", [model]).fetchall()):
            people.setdefault(name, []).append(np.frombuffer(vector, np.float32))
        return {name: np.stack(vectors) for name, vectors in people.items()}

    def save_fleet_state(self, state: dict, message: tuple[str, str] | None = None) -> int | None:
        """Record a person's fleet version and, for a local change, queue its retained (topic, payload)
        in the outbox, in one transaction; returns the outbox row id."""
        def write():
            self.db["fleet_versions"].upsert(state, pk="name", alter=False)
            if message is None:
                return None
            identity_id = None if state["deleted"] else self.identity_id(state["name"])
            # Tied to the person: forgetting them before delivery drops their embeddings from the queue too.
            return self.db["outbox"].insert({"event_id": uuid.uuid4().hex, "topic": message[0],
                                             "payload": message[1], "identity_id": identity_id,
                                             "created_at": time.time(), "retain": 1}).last_pk
        return self._write(write)

    def apply_fleet_enrollment(self, state: dict, vectors: np.ndarray, source: str, *, model: str) -> None:
        """Another box's version of a person wins: their `model` embeddings become exactly `vectors`."""
        def write():
            identity_id = self._identity_for(state["name"])
            self.db.execute("DELETE FROM embeddings WHERE identity_id = ? AND model = ?", [identity_id, model])
            self.db["embeddings"].insert_all(
                {"identity_id": identity_id, "vector": np.asarray(v, np.float32).tobytes(), "source": source,
                 "created_at": time.time(), "model": model} for v in vectors)
            self.db["fleet_versions"].upsert(state, pk="name", alter=False)
        self._write(write)
        self._galleries.clear()

    # --- enrolment from a camera (edge/enroll_camera.py) ----------------------------------------------
    def request_camera_enrolment(self, name: str, camera: str, frames: int, timeout_s: float,
                                 keep: int = 50, max_waiting: int = MAX_WAITING_PER_CAMERA) -> int | None:
        """Queue a request for the daemon of `camera`; None when `max_waiting` already wait for it (each holds the
        camera in enrolment for up to its timeout). Only the newest `keep` finished requests are kept."""
        def write():
            waiting = self.db.execute("SELECT COUNT(*) FROM camera_enrolments WHERE camera = ? AND status = "
                                      "'requested'", [camera]).fetchone()[0]
            if waiting >= max_waiting:
                return None
            now = time.time()
            row = self.db["camera_enrolments"].insert(
                {"name": name, "camera": camera, "frames": frames, "timeout_s": timeout_s, "status": "requested",
                 "good": 0, "message": "waiting for the camera", "requested_at": now, "updated_at": now}).last_pk
            self.db.execute("DELETE FROM camera_enrolments WHERE id <= ? AND status NOT IN ('requested', 'running')",
                            [row - keep])
            return row
        return self._write(write)

    def take_camera_enrolment(self, camera: str, request_id: int | None = None) -> dict | None:
        """The oldest waiting request for `camera` (or that one), now marked running; None when there is none
        (or another process took it first)."""
        def write():
            # A request nobody took for far longer than its requester waits (a command killed before it could
            # cancel, a daemon that was down) must not enrol whoever stands there hours later.
            self.db.execute("UPDATE camera_enrolments SET status = 'failed', message = ?, updated_at = ? "
                            "WHERE camera = ? AND status = 'requested' AND requested_at < ? - ? * timeout_s - 60",
                            ["not enrolled: no daemon took the request in time", time.time(), camera, time.time(),
                             MAX_WAITING_PER_CAMERA + 1])
            row = self.db.execute(
                "SELECT id FROM camera_enrolments WHERE status = 'requested' AND camera = ?"
                + (" AND id = ?" if request_id is not None else "") + " ORDER BY id LIMIT 1",
                [camera] + ([request_id] if request_id is not None else [])).fetchone()
            if row is None:
                return None
            self.db.execute("UPDATE camera_enrolments SET status = 'running', message = ?, updated_at = ? "
                            "WHERE id = ?", ["looking for one face", time.time(), row[0]])
            return self.db["camera_enrolments"].get(row[0])
        return self._write(write)

    def update_camera_enrolment(self, request_id: int, good: int, message: str) -> bool:
        """Progress of a running request; False when it is no longer running (its requester cancelled it)."""
        def write():
            return self.db.execute("UPDATE camera_enrolments SET good = ?, message = ?, updated_at = ? "
                                   "WHERE id = ? AND status = 'running'",
                                   [good, message, time.time(), request_id]).rowcount == 1
        return self._write(write)

    def finish_camera_enrolment(self, request_id: int, status: str, message: str, good: int | None = None) -> bool:
        """Set a final status unless the request already has one; False when it had."""
        def write():
            cursor = self.db.execute(
                "UPDATE camera_enrolments SET status = ?, message = ?, good = COALESCE(?, good), updated_at = ? "
                "WHERE id = ? AND status IN ('requested', 'running')", [status, message, good, time.time(), request_id])
            return cursor.rowcount == 1
        return self._write(write)

    def complete_camera_enrolment(self, request_id: int, name: str, vectors: np.ndarray, sources: list[str],
                                  model: str, message: str) -> bool:
        """Enrol and mark the request done in one transaction, only while it is still running (a requester that
        cancelled a moment before gets nothing stored); False when it was no longer running."""
        def write():
            cursor = self.db.execute("UPDATE camera_enrolments SET status = 'done', good = ?, message = ?, "
                                     "updated_at = ? WHERE id = ? AND status = 'running'",
                                     [len(vectors), message, time.time(), request_id])
            if cursor.rowcount != 1:
                return False
            self._add_embeddings(name, vectors, sources, model)
            return True
        done = self._write(write)
        self._galleries.clear()
        return done

    def abandon_camera_enrolments(self, camera: str,
                                  message: str = "not enrolled: the process serving it stopped") -> int:
        """Requests of `camera` left running by a process that is gone become failed (called by whoever has just
        taken the camera's lock: nobody else can be serving them)."""
        def write():
            return self.db.execute("UPDATE camera_enrolments SET status = 'failed', message = ?, updated_at = ? "
                                   "WHERE camera = ? AND status = 'running'", [message, time.time(), camera]).rowcount
        return self._write(write)

    def camera_enrolment(self, request_id: int) -> dict | None:
        rows = self._read(lambda: list(self.db.query("SELECT * FROM camera_enrolments WHERE id = ?", [request_id])))
        return rows[0] if rows else None

    def camera_enrolments(self, limit: int = 10) -> list[dict]:
        """Newest first."""
        return self._read(lambda: list(self.db.query("SELECT * FROM camera_enrolments ORDER BY id DESC LIMIT ?",
                                                     [limit])))

    def close(self) -> None:
        self.db.conn.close()
