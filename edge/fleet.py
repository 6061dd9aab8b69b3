"""Fleet gallery sync: boxes share enrollments and forgets through the broker.

One retained QoS 1 message per person on `<fleet.topic>/<name>` carries that person's whole state:
their embeddings (never images, never file names) or, after a forget, a tombstone. The highest
(version, box) wins on every box, so boxes that hear the same messages in any order agree. A box
finds its own changes by comparing its gallery with what it last published or applied, so
`edge enroll`, `edge identities forget` and any other writer of the database reach the fleet
without a hook each; the change is queued in the outbox and survives a broker outage. Every message
is signed with the fleet key when sent and checked on arrival (edge/fleet_trust.py); applying is
rate-limited and coalesced per person, and the VACUUM after forgets runs once per batch.
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
from .fleet_trust import MODELS, FleetTrust, implausible, l2_threshold, model_id
from .publish import Publisher
from .snapshots import erase_thumbnails
from .store import Store
from .untrusted import BadInput, RejectionLog, parse_json

log = logging.getLogger(__name__)

SCHEMA = 2                            # 2: signed (ts, nonce, sig) and naming the embedding model
MAX_FUTURE_MS = 24 * 3600 * 1000      # a version this far ahead of our clock would win forever: refused
BOX_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
VACUUM_AFTER_S = 10.0                 # after the last fleet forget of a batch, the freed pages are erased
REPUBLISH_EVERY_S = 10.0              # at most this often per person, however many stale messages arrive


class BadMessage(BadInput):
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


@dataclass(frozen=True)
class Incoming:
    state: PersonVersion
    vectors: np.ndarray | None
    message: dict         # as parsed: ts, nonce for the freshness check


def digest(vectors: np.ndarray | None) -> str:
    """Order-independent fingerprint of a person's float32 embeddings."""
    if vectors is None or len(vectors) == 0:
        return ""
    rows = sorted(np.asarray(v, np.float32).tobytes() for v in vectors)
    return hashlib.sha256(b"".join(rows)).hexdigest()[:32]


def encode(state: PersonVersion, vectors: np.ndarray | None, model: str) -> str:
    """The message as queued; the timestamp, nonce and signature are added when it is sent."""
    message = {"schema": SCHEMA, "op": "forget" if state.deleted else "enroll", "name": state.name,
               "version": state.version, "box": state.box, "model": model}
    if not state.deleted:
        message["dimensions"] = int(np.asarray(vectors).shape[1])
        message["embeddings"] = [base64.b64encode(np.asarray(v, "<f4").tobytes()).decode() for v in vectors]
    return json.dumps(message, separators=(",", ":"))


def decode(name: str, payload: bytes, max_bytes: int, max_embeddings: int, model: str,
           trust: FleetTrust | None = None, now_ms: int | None = None) -> Incoming:
    """Validate one message for the person `name` (from its topic); BadMessage says what is wrong.
    With `trust`, the signature is checked before anything in the message is believed."""
    try:
        message = parse_json(payload, max_bytes)
    except BadInput as exc:
        raise BadMessage(str(exc).replace(f"more than {max_bytes}", f"more than fleet.max_message_bytes "
                                                                    f"({max_bytes})")) from None
    if not isinstance(message, dict) or message.get("schema") != SCHEMA:
        raise BadMessage(f"not a schema {SCHEMA} fleet message")
    if trust is not None and (why := trust.authentic(message)):
        raise BadMessage(why)
    op, version, box = message.get("op"), message.get("version"), message.get("box")
    if op not in ("enroll", "forget"):
        raise BadMessage(f"op must be enroll or forget (got {str(op)[:40]!r})")
    if message.get("name") != name or not valid_name(name):
        raise BadMessage("name missing, invalid, or not the one in the topic")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise BadMessage("version must be a non-negative integer")
    if version > (now_ms or int(time.time() * 1000)) + MAX_FUTURE_MS:
        raise BadMessage("version is more than a day ahead of this box's clock")
    if not isinstance(box, str) or not BOX_PATTERN.match(box):
        raise BadMessage("box must be 1-64 letters, digits, - or _")
    if op == "forget":
        return Incoming(PersonVersion(name, version, box, 1, ""), None, message)
    if message.get("model") != model:
        raise BadMessage(f"embeddings of model {str(message.get('model'))[:40]!r}; this box uses {model!r}")
    dimensions = MODELS.get(model, {}).get("dimensions", message.get("dimensions"))
    embeddings = message.get("embeddings")
    if message.get("dimensions") != dimensions or not isinstance(dimensions, int) or not 0 < dimensions <= 4096:
        raise BadMessage(f"dimensions must be {dimensions} for {model}")
    if not isinstance(embeddings, list) or not 0 < len(embeddings) <= max_embeddings:
        raise BadMessage(f"embeddings must be a list of 1 to {max_embeddings}")
    vectors = []
    for item in embeddings:
        try:
            raw = base64.b64decode(item, validate=True)
        except (TypeError, ValueError, binascii.Error):
            raise BadMessage("an embedding is not base64") from None
        if len(raw) != dimensions * 4:
            raise BadMessage(f"an embedding is not {dimensions} float32 values")
        vectors.append(np.frombuffer(raw, "<f4").astype(np.float32))
    stacked = np.stack(vectors)
    if not np.isfinite(stacked).all():
        raise BadMessage("an embedding holds NaN or infinity")
    return Incoming(PersonVersion(name, version, box, 0, digest(stacked)), stacked, message)


class Fleet:
    """One box's side of the shared gallery. `publisher` None: only stamps and queues local changes (CLI)."""

    def __init__(self, cfg: AppConfig, store: Store, publisher: Publisher | None = None):
        self.app_cfg = cfg
        self.cfg = cfg.fleet
        self.box = cfg.device
        self.model = model_id(cfg)
        self.store = store
        self.publisher = publisher
        self.trust = FleetTrust(cfg)
        self.applied = 0                     # remote changes applied (tests, status)
        self.rejections = RejectionLog(log, "fleet")
        self._waiting: dict[str, Incoming] = {}       # accepted, not yet applied: newest per person
        self._tokens = self._burst = max(1.0, self.cfg.max_changes_per_s)
        self._tokens_at = time.monotonic()
        self._vacuum_at: float | None = None
        self._republished: dict[str, float] = {}
        if publisher is not None:
            # Changes made while we were offline are queued before the others' retained messages
            # are compared with them (connect hooks run before message handlers).
            publisher.on_connected(self.share_local_changes)
            publisher.subscribe(f"{self.cfg.topic}/+", self._on_message)
            publisher.on_pump(self.work)
            self.attach_signer(publisher)

    def attach_signer(self, publisher: Publisher) -> None:
        publisher.sign_with(f"{self.cfg.topic}/+", lambda topic, payload: self.signed(payload))

    def signed(self, payload: str) -> str:
        """A queued message (our own, from the outbox) as sent: stamped now and signed."""
        return json.dumps(self.trust.sign(json.loads(payload)), separators=(",", ":"))

    def topic(self, name: str) -> str:
        return f"{self.cfg.topic}/{name}"

    def _states(self) -> dict[str, PersonVersion]:
        return {name: PersonVersion(**row) for name, row in self.store.fleet_states().items()}

    # --- this box's changes ------------------------------------------------------------------
    def share_local_changes(self) -> list[int]:
        """Stamp every person whose embeddings differ from their last fleet version (enrolled, re-enrolled,
        forgotten here) with a new version and queue the retained message; returns the outbox row ids."""
        people = self.store.person_embeddings(self.model)
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
            queued.append(self.store.save_fleet_state(asdict(state),
                                                      (self.topic(name), encode(state, vectors, self.model))))
            log.info("fleet: sharing %s %s (version %d)", "forget of" if vectors is None else "enrollment of",
                     name, version)
        return queued

    # --- other boxes' changes -----------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        name = topic[len(self.cfg.topic) + 1:]
        if not payload:
            return                   # someone cleared the retained message; nothing to apply
        try:
            incoming = decode(name, payload, self.cfg.max_message_bytes, self.cfg.max_embeddings, self.model,
                              self.trust)
            self._accept(incoming, retained)
        except BadMessage as exc:
            self.rejections.reject(topic, str(exc))

    def _accept(self, incoming: Incoming, retained: bool) -> None:
        """Checks that need this box's state; the message waits in _waiting for work() to apply it."""
        state = incoming.state
        local = self._states().get(state.name)
        if local is not None and state.order <= local.order:
            if state.order < local.order:
                self._republish(local)       # a stale message must not stay the retained one
            return
        if not retained and (why := self.trust.fresh(incoming.message)):
            raise BadMessage(why)
        waiting = self._waiting.get(state.name)
        if waiting is not None and state.order <= waiting.state.order:
            return
        if not state.deleted:
            gallery = self.store.gallery(self.model)
            others = gallery.names != state.name
            if why := implausible(incoming.vectors, self.model, gallery.names[others], gallery.vectors[others],
                                  l2_threshold(self.app_cfg)):
                raise BadMessage(why)
            enrolled = set(gallery.names.tolist())
            if state.name not in enrolled and waiting is None and \
                    len(enrolled) + len(self._waiting) >= self.cfg.max_people:
                raise BadMessage(f"this box holds fleet.max_people ({self.cfg.max_people}) already")
        elif waiting is None and len(self._waiting) >= self.cfg.max_people:
            raise BadMessage("too many changes waiting to be applied")
        self._waiting[state.name] = incoming

    def work(self) -> None:
        """From every pump(): apply waiting changes within fleet.max_changes_per_s, then the batched VACUUM."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._tokens_at) * self.cfg.max_changes_per_s)
        self._tokens_at = now
        while self._waiting and self._tokens >= 1:
            name = next(iter(self._waiting))
            incoming = self._waiting.pop(name)
            self._tokens -= 1
            self.receive(incoming.state, incoming.vectors)
        if self._vacuum_at is not None and now >= self._vacuum_at and not self._waiting:
            self._vacuum_at = None
            self.store.erase_free_pages()

    def receive(self, incoming: PersonVersion, vectors: np.ndarray | None) -> bool:
        """Apply `incoming` if it is newer than what we hold; if it is older, our newer state is put back
        on the broker (a late, stale message must not stay the retained one). True when applied."""
        local = self._states().get(incoming.name)
        if local is not None and incoming.order <= local.order:
            if incoming.order < local.order:
                self._republish(local)
            return False
        if incoming.deleted:
            # Embeddings, sightings, queued events now; the freed pages once the batch is over (work()).
            self.store.forget(incoming.name, vacuum=False)
            self._vacuum_at = time.monotonic() + VACUUM_AFTER_S
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
        now = time.monotonic()
        if self.publisher is None or now - self._republished.get(local.name, float("-inf")) < REPUBLISH_EVERY_S:
            return
        vectors = None if local.deleted else self.store.person_embeddings(self.model).get(local.name)
        if not local.deleted and digest(vectors) != local.digest:
            return                   # an unshared local change: share_local_changes() sends it
        if len(self._republished) > 10000:
            self._republished.clear()
        self._republished[local.name] = now
        self.publisher.publish_now(self.topic(local.name), self.signed(encode(local, vectors, self.model)),
                                   retain=True, qos=1)


def share_now(cfg: AppConfig, store: Store, timeout_s: float = 3.0) -> str:
    """For CLI commands (a separate process from the daemon): queue this box's changes, then try to
    deliver them at once over a short-lived connection. What the broker does not accept stays in the
    outbox for the daemon. Returns a line for the user."""
    fleet = Fleet(cfg, store)
    ids = set(fleet.share_local_changes())
    if not ids:
        # The gallery changed (enroll/forget) but its state is already queued: a running daemon saw it first.
        return "fleet: shared by the running daemon"
    if not cfg.mqtt.enabled:
        return "fleet: change queued (mqtt is disabled)"
    # Its own client id and no will: this connection must not replace or speak for the daemon's.
    publisher = Publisher(cfg.mqtt, cfg.device, store, client_id=f"edge-{cfg.device}-cli-{os.getpid()}",
                          availability=False)
    fleet.attach_signer(publisher)
    publisher.start()
    deadline = time.monotonic() + timeout_s
    left = ids
    try:
        while time.monotonic() < deadline and publisher.last_error is None:
            publisher.pump(only=ids)
            # Rows gone from the outbox were accepted (by us, or by a running daemon meanwhile).
            left = ids & {r.id for r in store.pending(limit=10000)}
            if not left or publisher.refusing:
                break
            time.sleep(0.05)
    finally:
        publisher.stop()
    if not left:
        return f"fleet: shared with the other boxes ({len(ids)} message(s))"
    if publisher.refusing:
        reason = next(iter(publisher.refused.values())).reason
        return f"fleet: the broker refused the message ({reason}); it stays queued and the daemon retries it"
    return "fleet: broker not reachable now; the change is queued and the daemon publishes it"
