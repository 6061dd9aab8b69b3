"""MQTT (paho-mqtt 2.x): connection, availability, and delivery of the SQLite outbox.

At-least-once: an event stays in the outbox until the broker acknowledges it (PUBACK for
QoS 1). paho's network thread only sets flags and queues acknowledgements and incoming
messages; every database access, connect hook and message handler runs in the caller's
thread through `pump()`.
"""

from __future__ import annotations

import logging
import queue
import ssl
import sys
import threading
import time
from typing import Callable

import paho.mqtt.client as mqtt

from .config import ConfigError, MqttConfig
from .store import Store

log = logging.getLogger(__name__)

# Incoming messages wait for pump() in memory: a flood beyond these bounds is dropped, and a payload
# beyond any handler's limit (fleet.max_message_bytes <= 16 MiB) is cut so the handler still sees it is too big.
MAX_QUEUED_INCOMING = 1000
MAX_QUEUED_INCOMING_BYTES = 32 << 20
MAX_INCOMING_PAYLOAD = (16 << 20) + 1

MessageHandler = Callable[[str, bytes, bool], None]     # (topic, payload, retained)


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
        self.status_topic = f"{cfg.prefix}/status"
        self.connected = threading.Event()
        self.last_error: str | None = None
        self.delivered_count = 0
        self._acks: queue.Queue[int] = queue.Queue()
        self._in_flight: dict[int, int] = {}       # paho message id -> outbox row id
        self._lock = threading.Lock()
        self._handlers: dict[str, MessageHandler] = {}
        self._connect_hooks: list[Callable[[], None]] = []
        self._incoming: queue.Queue[tuple[str, bytes, bool]] = queue.Queue(MAX_QUEUED_INCOMING)
        self._incoming_bytes = 0
        self._fresh_connection = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or cfg.client_id or f"edge-{device}", clean_session=True)
        username = cfg.resolved_username()
        if username:
            try:
                password = cfg.resolved_password()
            except OSError as exc:
                raise ConfigError(f"config error: mqtt.password_file: cannot read {cfg.password_file}: "
                                  f"{exc.strerror}") from None
            self.client.username_pw_set(username, password)
        if cfg.tls:
            # Server verification is always on; a client certificate only when configured.
            try:
                self.client.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                                    certfile=str(cfg.cert_file) if cfg.cert_file else None,
                                    keyfile=str(cfg.key_file) if cfg.key_file else None,
                                    cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"config error: mqtt.ca_file/cert_file/key_file: cannot load TLS files: "
                                  f"{getattr(exc, 'strerror', None) or exc}") from None
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

    def publish_now(self, topic: str, payload: str | bytes, retain: bool = True, qos: int = 1) -> bool:
        """Send state that need not survive an outage (it is re-sent on reconnect); False when offline."""
        if not self.connected.is_set():
            return False
        return self.client.publish(topic, payload, qos=qos, retain=retain).rc == mqtt.MQTT_ERR_SUCCESS

    # --- paho callbacks (network thread) ---------------------------------------------
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
        if self.availability:
            client.publish(self.status_topic, "online", qos=1, retain=True)
        for topic_filter in self._handlers:
            client.subscribe(topic_filter, qos=1)
        self._fresh_connection.set()
        self.connected.set()

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

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        # Our own disconnect() on a clean stop is "Normal disconnection", not a problem to warn about.
        if self.connected.is_set() and reason_code.is_failure:
            log.warning("MQTT disconnected (%s); events are kept in the outbox until it is back", reason_code)
        self.connected.clear()
        with self._lock:
            # Unacknowledged events are sent again after reconnecting (duplicates, never losses).
            self._in_flight.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._acks.put(mid)

    def _on_message(self, client, userdata, message):
        payload = message.payload[:MAX_INCOMING_PAYLOAD]
        with self._lock:
            if self._incoming_bytes + len(payload) > MAX_QUEUED_INCOMING_BYTES:
                return        # pump() is far behind: shed load, it is someone's flood
            try:
                self._incoming.put_nowait((message.topic, payload, bool(message.retain)))
            except queue.Full:
                return
            self._incoming_bytes += len(payload)

    # --- caller's thread ------------------------------------------------------------------
    def start(self) -> None:
        try:
            self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        except (OSError, ValueError) as exc:
            log.error("MQTT: cannot connect to %s:%s: %s", self.cfg.host, self.cfg.port, exc)
        self.client.loop_start()

    def pump(self) -> int:
        """Run connect hooks and message handlers, drop acknowledged events from the outbox and send
        pending ones; returns events sent."""
        if self._fresh_connection.is_set():
            self._fresh_connection.clear()
            for hook in self._connect_hooks:
                hook()
        for _ in range(MAX_QUEUED_INCOMING):
            try:
                topic, payload, retained = self._incoming.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                self._incoming_bytes -= len(payload)
            for topic_filter, handler in list(self._handlers.items()):
                if mqtt.topic_matches_sub(topic_filter, topic):
                    handler(topic, payload, retained)
        acked = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                row = self._in_flight.pop(mid, None)
            if row is not None:
                acked.append(row)
        if acked:
            self.store.delivered(acked)
            self.delivered_count += len(acked)
        if not self.connected.is_set():
            return 0
        with self._lock:
            room = self.max_in_flight - len(self._in_flight)
            busy = set(self._in_flight.values())
        sent = 0
        if room > 0:
            for event in self.store.pending(limit=room, exclude=busy):
                # Retained rows are fleet state (edge/fleet.py): at least once whatever mqtt.qos says.
                qos = max(1, self.cfg.qos) if event.retain else self.cfg.qos
                info = self.client.publish(event.topic, event.payload, qos=qos, retain=event.retain)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break
                with self._lock:
                    self._in_flight[info.mid] = event.id
                if qos == 0:
                    self._acks.put(info.mid)
                sent += 1
        return sent

    def flush(self, timeout_s: float) -> bool:
        """Deliver the outbox for up to `timeout_s`; True when it is empty."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.pump()
            if self.store.outbox_depth() == 0:
                return True
            time.sleep(0.05)
        self.pump()
        return self.store.outbox_depth() == 0

    def stop(self) -> None:
        if self.connected.is_set() and self.availability:
            info = self.client.publish(self.status_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
