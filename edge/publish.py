"""MQTT (paho-mqtt 2.x, MQTT v5): connection, availability, and delivery of the SQLite outbox.

At-least-once: an event stays in the outbox until the broker accepts it (a PUBACK whose v5 reason
code is below 0x80; a refusal, e.g. 0x87 "Not authorized" from an ACL, keeps it there and holds that
topic back with a growing delay). paho's network thread only sets flags and queues acknowledgements
and incoming messages; every database access, connect hook and message handler runs in the caller's
thread through `pump()`, and no exception leaves a paho callback or a handler.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import secrets
import ssl
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import paho.mqtt.client as mqtt

from .config import ConfigError, MqttConfig
from .store import Store, StoreError

log = logging.getLogger(__name__)

# Incoming messages wait for pump() in memory: a flood beyond these bounds is dropped, and a payload
# beyond any handler's limit (fleet.max_message_bytes <= 16 MiB) is cut so the handler still sees it is too big.
MAX_QUEUED_INCOMING = 1000
MAX_QUEUED_INCOMING_BYTES = 32 << 20
MAX_INCOMING_PAYLOAD = (16 << 20) + 1
# Handlers run in the daemon's loop: at most this long per pump(), the rest waits for the next one.
INCOMING_BUDGET_S = 0.02
# A refused topic is tried again after 5 s, then 10, 20 ... at most every 5 minutes.
REFUSED_RETRY_S = (5.0, 300.0)
# The broker closing our connection this often, this soon after connecting, is another client with our id.
TAKEOVER_WINDOW_S, TAKEOVER_COUNT, SHORT_CONNECTION_S = 60.0, 3, 10.0

MessageHandler = Callable[[str, bytes, bool], None]     # (topic, payload, retained)


def default_client_id(device: str) -> str:
    """Unique per process: two daemons (or a daemon and a test) with the same device name must not
    share a client id, or the broker drops one whenever the other connects."""
    return f"edge-{device}-{os.getpid()}-{secrets.token_hex(2)}"


def _guarded(callback):
    """paho callbacks run on its network thread: an exception there would kill delivery silently."""
    @functools.wraps(callback)
    def run(self, *args):
        try:
            return callback(self, *args)
        except Exception as exc:      # noqa: BLE001 -- logged, and the network thread must live on
            self._log_callback_error(callback.__name__, exc)
    return run


@dataclass
class RefusedTopic:
    reason: str          # the broker's reason code, e.g. "Not authorized (0x87)"
    retry_at: float      # monotonic time the topic is tried again
    delay_s: float       # next delay if refused again


def login_and_tls(client: mqtt.Client, cfg: MqttConfig) -> None:
    """The broker login and TLS of `cfg` on a paho client (the daemon's and `edge doctor`'s); file problems are
    ConfigErrors naming the key."""
    username = cfg.resolved_username()
    if username:
        try:
            password = cfg.resolved_password()
        except OSError as exc:
            raise ConfigError(f"config error: mqtt.password_file: cannot read {cfg.password_file}: "
                              f"{exc.strerror}") from None
        client.username_pw_set(username, password)
    if cfg.tls:
        # Server verification is always on; a client certificate only when configured.
        try:
            client.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                           certfile=str(cfg.cert_file) if cfg.cert_file else None,
                           keyfile=str(cfg.key_file) if cfg.key_file else None,
                           cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"config error: mqtt.ca_file/cert_file/key_file: cannot load TLS files: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None


class Publisher:
    def __init__(self, cfg: MqttConfig, device: str, store: Store, max_in_flight: int = 50,
                 client_id: str | None = None, availability: bool = True):
        """`availability=False` for a short-lived helper connection (a CLI command): no last will,
        no online/offline, so it never speaks for the daemon."""
        self.cfg = cfg
        self.availability = availability
        self.store = store
        self.max_in_flight = max_in_flight
        self.events_topic = f"{cfg.prefix}/events"
        # Another daemon on the same database (another camera) sends its own events (Store.pending).
        self.own_prefix = f"{cfg.prefix}/"
        self.status_topic = f"{cfg.prefix}/status"
        self.connected = threading.Event()
        self.last_error: str | None = None
        self.delivered_count = 0
        self.refused_count = 0                     # PUBACKs with a failure reason code (metrics, status)
        self.refused: dict[str, RefusedTopic] = {}  # topics the broker refuses now, held back
        self.incoming_dropped = 0                  # messages shed because pump() was behind (a flood)
        self._acks: queue.Queue[tuple[int, int, str]] = queue.Queue()   # (mid, reason value, reason text)
        self._in_flight: dict[int, tuple[int, str]] = {}   # paho message id -> (outbox row id, topic)
        self._sent_now: dict[int, str] = {}        # paho message id -> topic, for publish_now()
        self._lock = threading.Lock()
        self._handlers: dict[str, MessageHandler] = {}
        self._signers: dict[str, Callable[[str, str], str]] = {}
        self._connect_hooks: list[Callable[[], None]] = []
        self._pump_hooks: list[Callable[[], None]] = []
        self._incoming: queue.Queue[tuple[str, bytes, bool]] = queue.Queue(MAX_QUEUED_INCOMING)
        self._incoming_bytes = 0
        self._fresh_connection = threading.Event()
        self._callback_errors: set[str] = set()
        self._refused_logged: set[str] = set()
        self._stopping = False
        self._connected_at = 0.0
        self._short_connections: deque[float] = deque()
        self._dropped_logged_at, self._dropped_logged = float("-inf"), 0
        self.client_id = client_id or cfg.client_id or default_client_id(device)
        # v5 by default: its PUBACK says when the broker refuses a message; 3.1.1 only for brokers without v5.
        self.v5 = cfg.protocol == "v5"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  **({"protocol": mqtt.MQTTv5} if self.v5 else
                                     {"protocol": mqtt.MQTTv311, "clean_session": True}))
        login_and_tls(self.client, cfg)
        # The broker announces "offline" for us if we vanish without a goodbye.
        if availability:
            self.client.will_set(self.status_topic, "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    def subscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        """Call `handler` from pump() for every message on `topic_filter`; (re)subscribed on every connect."""
        self._handlers[topic_filter] = handler
        if self.connected.is_set():
            self.client.subscribe(topic_filter, qos=1)

    def on_connected(self, hook: Callable[[], None]) -> None:
        """Run `hook` from pump() after every (re)connect: retained state is re-published there."""
        self._connect_hooks.append(hook)

    def on_pump(self, hook: Callable[[], None]) -> None:
        """Run `hook` at the end of every pump(): deferred, rate-limited work (it must be cheap when idle)."""
        self._pump_hooks.append(hook)

    def sign_with(self, topic_filter: str, signer: Callable[[str, str], str]) -> None:
        """Outbox rows on `topic_filter` are sent as signer(topic, payload): signed when sent, not when
        queued, so a message that waited out an outage is not stale on arrival (edge/fleet.py)."""
        self._signers[topic_filter] = signer

    def publish_now(self, topic: str, payload: str | bytes, retain: bool = True, qos: int = 1) -> bool:
        """Send state that need not survive an outage (it is re-sent on reconnect); False when offline."""
        if not self.connected.is_set():
            return False
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS and qos > 0:
            with self._lock:
                if len(self._sent_now) < 10000:      # only to name the topic if the broker refuses it
                    self._sent_now[info.mid] = topic
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    @property
    def refusing(self) -> bool:
        """The broker refuses at least one of our topics now (status line, health)."""
        return bool(self.refused)

    # --- paho callbacks (network thread) ---------------------------------------------
    def _log_callback_error(self, where: str, exc: Exception) -> None:
        key = f"{where}:{type(exc).__name__}"
        if key not in self._callback_errors and len(self._callback_errors) < 100:
            self._callback_errors.add(key)
            log.error("MQTT: %s failed: %s: %.200s (logged once)", where, type(exc).__name__, exc)

    @_guarded
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            message = f"MQTT broker {self.cfg.host}:{self.cfg.port} refused the connection: {reason_code}"
            if message != self.last_error:     # once per cause, not per retry
                log.error("%s; events are kept in the outbox", message)
            self.last_error = message
            return
        if self.last_error:
            log.warning("MQTT connected to %s:%s", self.cfg.host, self.cfg.port)
        self.last_error = None
        self._connected_at = time.monotonic()
        if self.availability:
            client.publish(self.status_topic, "online", qos=1, retain=True)
        for topic_filter in self._handlers:
            client.subscribe(topic_filter, qos=1)
        self._fresh_connection.set()
        self.connected.set()

    @_guarded
    def _on_connect_fail(self, client, userdata):
        # paho calls this inside its `except OSError:` block and drops the exception, so the
        # cause (refused, unreachable, TLS verification) is only reachable through sys.exc_info().
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLCertVerificationError):
            cause = f"TLS certificate verification failed ({exc.verify_message}); check mqtt.ca_file"
        elif isinstance(exc, ssl.SSLError):
            cause = f"TLS handshake failed ({exc.reason or exc})"
        else:
            cause = getattr(exc, "strerror", None) or str(exc) or "connection failed"
        message = f"MQTT broker {self.cfg.host}:{self.cfg.port} unreachable: {cause}"
        if message != self.last_error:
            log.error("%s; events are kept in the outbox", message)
        self.last_error = message

    @_guarded
    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if self.connected.is_set() and not self._stopping:
            log.warning("MQTT disconnected (%s); events are kept in the outbox until it is back", reason_code)
            self._notice_takeover(reason_code)
        self.connected.clear()
        with self._lock:
            # Unacknowledged events are sent again after reconnecting (duplicates, never losses).
            self._in_flight.clear()
            self._sent_now.clear()

    def _notice_takeover(self, reason_code) -> None:
        """MQTT v5 brokers may say 0x8E "Session taken over"; Mosquitto 2.0 just closes the socket, so
        a connection closed again and again soon after connecting is read as the same sign."""
        now = time.monotonic()
        taken_over = getattr(reason_code, "value", None) == 0x8E
        if now - self._connected_at < SHORT_CONNECTION_S:
            self._short_connections.append(now)
        while self._short_connections and now - self._short_connections[0] > TAKEOVER_WINDOW_S:
            self._short_connections.popleft()
        if taken_over or len(self._short_connections) >= TAKEOVER_COUNT:
            self._short_connections.clear()
            log.error("MQTT: the broker keeps closing this connection soon after it opens; another client is "
                      "probably connecting with the same client id %r (mqtt.client_id): give each daemon its own",
                      self.client_id)

    @_guarded
    def _on_publish(self, client, userdata, mid, reason_code, properties):
        # paho gives a ReasonCode for v5 PUBACKs (0 = success, 0x10 = no matching subscribers: also success).
        value = getattr(reason_code, "value", 0)
        self._acks.put((mid, value, "" if value < 0x80 else f"{reason_code} (0x{value:02X})"))

    @_guarded
    def _on_message(self, client, userdata, message):
        payload = message.payload[:MAX_INCOMING_PAYLOAD]
        with self._lock:
            if self._incoming_bytes + len(payload) > MAX_QUEUED_INCOMING_BYTES:
                self.incoming_dropped += 1    # pump() is far behind: shed load, it is someone's flood
                return
            try:
                self._incoming.put_nowait((message.topic, payload, bool(message.retain)))
            except queue.Full:
                self.incoming_dropped += 1
                return
            self._incoming_bytes += len(payload)

    # --- caller's thread ------------------------------------------------------------------
    def start(self) -> None:
        try:
            # A clean start on every connect: the outbox, not the broker's session, holds what is unsent.
            self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive,
                                      **({"clean_start": True} if self.v5 else {}))
        except (OSError, ValueError) as exc:
            log.error("MQTT: cannot connect to %s:%s: %s", self.cfg.host, self.cfg.port, exc)
        self.client.loop_start()

    def pump(self, only: set[int] | None = None) -> int:
        """Run connect hooks and message handlers, drop accepted events from the outbox and send pending
        ones (`only`: just these outbox rows, for a CLI command); returns events sent."""
        if self._fresh_connection.is_set():
            self._fresh_connection.clear()
            for hook in self._connect_hooks:
                hook()
        self._handle_incoming()
        self._handle_acks()
        sent = self._send_pending(only) if self.connected.is_set() else 0
        for hook in self._pump_hooks:
            hook()
        return sent

    def _handle_incoming(self) -> None:
        deadline = time.monotonic() + INCOMING_BUDGET_S
        while time.monotonic() < deadline:
            try:
                topic, payload, retained = self._incoming.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                self._incoming_bytes -= len(payload)
            for topic_filter, handler in list(self._handlers.items()):
                if mqtt.topic_matches_sub(topic_filter, topic):
                    try:
                        handler(topic, payload, retained)
                    except StoreError:
                        raise                 # the database failing is the daemon's to report (exit 1)
                    except Exception as exc:  # noqa: BLE001 -- network input must never stop the daemon
                        self._log_callback_error(f"handler for {topic_filter}", exc)
        if self.incoming_dropped > self._dropped_logged and time.monotonic() - self._dropped_logged_at > 60:
            self._dropped_logged_at, self._dropped_logged = time.monotonic(), self.incoming_dropped
            log.warning("MQTT: %d incoming messages dropped so far: they arrive faster than they are handled "
                        "(someone floods a topic we subscribe to)", self.incoming_dropped)

    def _handle_acks(self) -> None:
        accepted = []
        now = time.monotonic()
        while True:
            try:
                mid, value, reason = self._acks.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                row = self._in_flight.pop(mid, None)
                now_topic = self._sent_now.pop(mid, None)
            topic = row[1] if row else now_topic
            if value >= 0x80:
                self.refused_count += 1
                if topic is not None:
                    self._refuse(topic, reason, now, queued=row is not None)
            elif row is not None:
                accepted.append(row[0])
                if topic in self.refused:
                    del self.refused[topic]
                family = topic.split("/")[0]
                if family in self._refused_logged and not any(t.split("/")[0] == family for t in self.refused):
                    self._refused_logged.discard(family)
                    log.warning("MQTT broker accepts messages on %s again; held-back messages follow", topic)
        if accepted:
            self.store.delivered(accepted)
            self.delivered_count += len(accepted)

    def _refuse(self, topic: str, reason: str, now: float, queued: bool) -> None:
        """Log once per first topic level (door1/..., edge-fleet/...: one line for a hundred fleet topics);
        a queued message's topic is held back and retried (see _send_pending)."""
        family = topic.split("/")[0]
        if queued and topic not in self.refused:
            self.refused[topic] = RefusedTopic(reason, now + REFUSED_RETRY_S[0], REFUSED_RETRY_S[0])
        if family in self._refused_logged:
            return                  # already reported; retries are scheduled
        self._refused_logged.add(family)
        what = "kept in the outbox and retried" if queued else "current state, sent again on reconnect"
        user = self.cfg.resolved_username()
        log.error("MQTT broker %s:%s refused a message on %s: %s; %s (not logged again for %s/... until it is "
                  "accepted). Check the broker's ACL for client %r (%s)", self.cfg.host, self.cfg.port, topic,
                  reason, what, family, self.client_id, f"user {user!r}" if user else "anonymous")

    def _send_pending(self, only: set[int] | None) -> int:
        now = time.monotonic()
        held_back = frozenset(t for t, r in self.refused.items() if now < r.retry_at)
        with self._lock:
            room = self.max_in_flight - len(self._in_flight)
            busy = {row for row, _ in self._in_flight.values()}
        if room <= 0:
            return 0
        if only is None:
            rows = self.store.pending(limit=room, exclude=busy, skip_topics=held_back, own_prefix=self.own_prefix)
        else:
            rows = [r for r in self.store.pending(limit=10000, exclude=busy, skip_topics=held_back,
                                                  own_prefix=self.own_prefix)
                    if r.id in only][:room]
        probing: set[str] = set()
        sent = 0
        for event in rows:
            if event.topic in self.refused:
                # Retry time reached: one message tries the topic; the rest wait for its answer.
                if event.topic in probing:
                    continue
                probing.add(event.topic)
                held = self.refused[event.topic]
                held.retry_at, held.delay_s = now + held.delay_s, min(held.delay_s * 2, REFUSED_RETRY_S[1])
            # Retained rows are fleet state (edge/fleet.py): at least once whatever mqtt.qos says.
            qos = max(1, self.cfg.qos) if event.retain else self.cfg.qos
            payload = self._signed(event.topic, event.payload)
            info = self.client.publish(event.topic, payload, qos=qos, retain=event.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            with self._lock:
                self._in_flight[info.mid] = (event.id, event.topic)
            if qos == 0:
                self._acks.put((info.mid, 0, ""))
            sent += 1
        return sent

    def _signed(self, topic: str, payload: str) -> str:
        for topic_filter, signer in self._signers.items():
            if mqtt.topic_matches_sub(topic_filter, topic):
                return signer(topic, payload)
        return payload

    def flush(self, timeout_s: float) -> bool:
        """Deliver the outbox for up to `timeout_s`; True when it is empty (of this daemon's rows: another
        camera's daemon on the same database delivers its own)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.pump()
            if self.store.outbox_depth(self.own_prefix) == 0:
                return True
            with self._lock:
                waiting = bool(self._in_flight)
            if self.refused and not waiting and not self.store.pending(limit=1, skip_topics=frozenset(self.refused),
                                                                      own_prefix=self.own_prefix):
                break               # what is left is refused by the broker: no use waiting for it
            time.sleep(0.05)
        self.pump()
        return self.store.outbox_depth(self.own_prefix) == 0

    def stop(self) -> None:
        self._stopping = True             # our own goodbye is not worth a warning
        if self.connected.is_set() and self.availability:
            info = self.client.publish(self.status_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
