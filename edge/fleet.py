"""Fleet gallery sync: boxes share enrollments and forgets through the broker.

One retained QoS 1 message per person on `<fleet.topic>/<name>` carries that person's whole state:
their embeddings (never images, never file names) or, after a forget, a tombstone. The highest
(version, box) wins on every box, so boxes that hear the same messages in any order agree. A box
finds its own changes by comparing its gallery with what it last published or applied, so
`edge enroll`, `edge identities forget` and any other writer of the database reach the fleet
without a hook each; the change is queued in the outbox and survives a broker outage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass

import numpy as np

from .config import AppConfig
from .enroll import valid_name
from .publish import Publisher
from .snapshots import erase_thumbnails
from .store import Store

log = logging.getLogger(__name__)

SCHEMA = 1
DIMENSIONS = 128                      # dlib ResNet embeddings (models/manifest.yaml)
MAX_FUTURE_MS = 24 * 3600 * 1000      # a version this far ahead of our clock would win forever: refused
BOX_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class BadMessage(ValueError):
    """An incoming fleet message that is not applied; str() says why."""


@dataclass(frozen=True)
class PersonVersion:
    name: str
    version: int          # milliseconds since the epoch, bumped past the previous version
    box: str              # the device that made the change; breaks ties between equal versions
    deleted: int          # 1 = forgotten (tombstone)
    digest: str           # of the embeddings, to notice local changes

    @property
    def order(self) -> tuple[int, str]:
        """Last writer wins on (version, box): a total order every box computes the same way."""
        return self.version, self.box


def digest(vectors: np.ndarray | None) -> str:
    """Order-independent fingerprint of a person's float32 embeddings."""
    if vectors is None or len(vectors) == 0:
        return ""
    rows = sorted(np.asarray(v, np.float32).tobytes() for v in vectors)
    return hashlib.sha256(b"".join(rows)).hexdigest()[:32]


def encode(state: PersonVersion, vectors: np.ndarray | None) -> str:
    message = {"schema": SCHEMA, "op": "forget" if state.deleted else "enroll", "name": state.name,
               "version": state.version, "box": state.box}
    if not state.deleted:
        message["dimensions"] = DIMENSIONS
        message["embeddings"] = [base64.b64encode(np.asarray(v, "<f4").tobytes()).decode() for v in vectors]
    return json.dumps(message, separators=(",", ":"))


def decode(name: str, payload: bytes, max_bytes: int, max_embeddings: int,
           now_ms: int | None = None) -> tuple[PersonVersion, np.ndarray | None]:
    """Validate one message for the person `name` (from its topic); BadMessage says what is wrong."""
    if len(payload) > max_bytes:
        raise BadMessage(f"{len(payload)} bytes, more than fleet.max_message_bytes ({max_bytes})")
    try:
        message = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadMessage("not JSON") from None
    if not isinstance(message, dict) or message.get("schema") != SCHEMA:
        raise BadMessage(f"not a schema {SCHEMA} fleet message")
    op, version, box = message.get("op"), message.get("version"), message.get("box")
    if op not in ("enroll", "forget"):
        raise BadMessage(f"op must be enroll or forget (got {op!r:.40})")
    if message.get("name") != name or not valid_name(name):
        raise BadMessage("name missing, invalid, or not the one in the topic")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise BadMessage("version must be a non-negative integer")
    if version > (now_ms or int(time.time() * 1000)) + MAX_FUTURE_MS:
        raise BadMessage("version is more than a day ahead of this box's clock")
    if not isinstance(box, str) or not BOX_PATTERN.match(box):
        raise BadMessage("box must be 1-64 letters, digits, - or _")
    if op == "forget":
        return PersonVersion(name, version, box, 1, ""), None
    embeddings = message.get("embeddings")
    if message.get("dimensions") != DIMENSIONS:
        raise BadMessage(f"dimensions must be {DIMENSIONS}")
    if not isinstance(embeddings, list) or not 0 < len(embeddings) <= max_embeddings:
        raise BadMessage(f"embeddings must be a list of 1 to {max_embeddings}")
    vectors = []
    for item in embeddings:
        try:
            raw = base64.b64decode(item, validate=True)
        except (TypeError, ValueError, binascii.Error):
            raise BadMessage("an embedding is not base64") from None
        if len(raw) != DIMENSIONS * 4:
            raise BadMessage(f"an embedding is not {DIMENSIONS} float32 values")
        vectors.append(np.frombuffer(raw, "<f4").astype(np.float32))
    stacked = np.stack(vectors)
    if not np.isfinite(stacked).all():
        raise BadMessage("an embedding holds NaN or infinity")
    return PersonVersion(name, version, box, 0, digest(stacked)), stacked


class Fleet:
    """One box's side of the shared gallery. `publisher` None: only stamps and queues local changes (CLI)."""

    def __init__(self, cfg: AppConfig, store: Store, publisher: Publisher | None = None):
        self.app_cfg = cfg
        self.cfg = cfg.fleet
        self.box = cfg.device
        self.store = store
        self.publisher = publisher
        self.applied = 0                     # remote changes applied (tests, status)
        self._logged: set[tuple[str, str]] = set()
        if publisher is not None:
            # Changes made while we were offline are queued before the others' retained messages
            # are compared with them (connect hooks run before message handlers).
            publisher.on_connected(self.share_local_changes)
            publisher.subscribe(f"{self.cfg.topic}/+", self._on_message)

    def topic(self, name: str) -> str:
        return f"{self.cfg.topic}/{name}"

    def _states(self) -> dict[str, PersonVersion]:
        return {name: PersonVersion(**row) for name, row in self.store.fleet_states().items()}

    # --- this box's changes ------------------------------------------------------------------
    def share_local_changes(self) -> list[int]:
        """Stamp every person whose embeddings differ from their last fleet version (enrolled, re-enrolled,
        forgotten here) with a new version and queue the retained message; returns the outbox row ids."""
        people = self.store.person_embeddings(self.app_cfg.identity.model)
        states = self._states()
        queued = []
        now_ms = int(time.time() * 1000)
        for name in sorted(set(people) | {n for n, s in states.items() if not s.deleted}):
            vectors = people.get(name)
            previous = states.get(name)
            fingerprint = digest(vectors)
            if previous is not None and previous.digest == fingerprint and previous.deleted == (vectors is None):
                continue
            if not valid_name(name):
                continue            # cannot be a topic level (enrolled by an older version); stays local
            # Past every version seen for this person, even if our clock is behind theirs.
            version = max(now_ms, previous.version + 1 if previous else 0)
            state = PersonVersion(name, version, self.box, int(vectors is None), fingerprint)
            queued.append(self.store.save_fleet_state(asdict(state), (self.topic(name), encode(state, vectors))))
            log.info("fleet: sharing %s %s (version %d)", "forget of" if vectors is None else "enrollment of",
                     name, version)
        return queued

    # --- other boxes' changes -----------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        name = topic[len(self.cfg.topic) + 1:]
        if not payload:
            return                   # someone cleared the retained message; nothing to apply
        try:
            incoming, vectors = decode(name, payload, self.cfg.max_message_bytes, self.cfg.max_embeddings)
        except BadMessage as exc:
            self._log_once(topic, str(exc))
            return
        self.receive(incoming, vectors)

    def receive(self, incoming: PersonVersion, vectors: np.ndarray | None) -> bool:
        """Apply `incoming` if it is newer than what we hold; if it is older, our newer state is put back
        on the broker (a late, stale message must not stay the retained one). True when applied."""
        local = self._states().get(incoming.name)
        if local is not None and incoming.order <= local.order:
            if incoming.order < local.order:
                self._republish(local)
            return False
        if incoming.deleted:
            self.store.forget(incoming.name)          # embeddings, sightings, queued events; VACUUM
            erase_thumbnails(self.app_cfg, incoming.name)
            self.store.save_fleet_state(asdict(incoming))
        else:
            self.store.apply_fleet_enrollment(asdict(incoming), vectors, f"fleet:{incoming.box}",
                                              model=self.app_cfg.identity.model)
        self.applied += 1
        log.info("fleet: applied %s of %s from %s (version %d)", "forget" if incoming.deleted else "enrollment",
                 incoming.name, incoming.box, incoming.version)
        return True

    def _republish(self, local: PersonVersion) -> None:
        vectors = None if local.deleted else self.store.person_embeddings(self.app_cfg.identity.model).get(local.name)
        if self.publisher is None or (not local.deleted and digest(vectors) != local.digest):
            return                   # an unshared local change: share_local_changes() sends it
        self.publisher.publish_now(self.topic(local.name), encode(local, vectors), retain=True, qos=1)

    def _log_once(self, topic: str, reason: str) -> None:
        if (topic, reason) not in self._logged and len(self._logged) < 1000:
            self._logged.add((topic, reason))
            log.warning("fleet: ignored the message on %.120s: %s", topic, reason)


def share_now(cfg: AppConfig, store: Store, timeout_s: float = 3.0) -> str:
    """For CLI commands (a separate process from the daemon): queue this box's changes, then try to
    deliver them at once over a short-lived connection. What is not acknowledged stays in the outbox
    for the daemon. Returns a line for the user."""
    ids = Fleet(cfg, store).share_local_changes()
    if not ids:
        # The gallery changed (enroll/forget) but its state is already queued: a running daemon saw it first.
        return "fleet: shared by the running daemon"
    if not cfg.mqtt.enabled:
        return "fleet: change queued (mqtt is disabled)"
    # Its own client id and no will: this connection must not replace or speak for the daemon's.
    publisher = Publisher(cfg.mqtt, cfg.device, store, client_id=f"edge-{cfg.device}-cli-{os.getpid()}",
                          availability=False)
    publisher.start()
    deadline = time.monotonic() + timeout_s
    delivered = []
    try:
        while not publisher.connected.is_set() and publisher.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if publisher.connected.is_set():
            rows = [r for r in store.pending(limit=10000) if r.id in set(ids)]
            # Rows no longer pending were delivered (and acknowledged) by a running daemon meanwhile.
            delivered = sorted(set(ids) - {r.id for r in rows})
            infos = [(r.id, publisher.client.publish(r.topic, r.payload, qos=1, retain=True)) for r in rows]
            for row_id, info in infos:
                try:
                    info.wait_for_publish(max(0.1, deadline - time.monotonic()))
                except (RuntimeError, ValueError):
                    continue
                if info.is_published():
                    delivered.append(row_id)
            store.delivered(delivered)
    finally:
        publisher.stop()
    if len(delivered) == len(ids):
        return f"fleet: shared with the other boxes ({len(ids)} message(s))"
    return "fleet: broker not reachable now; the change is queued and the daemon publishes it"
