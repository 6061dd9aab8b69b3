"""Hostile input on every topic the daemon subscribes to, against the real `edge run` and a real Mosquitto:
retained crash payloads, a hypothesis fuzz, a Home Assistant birth flood, fleet floods (forged and signed),
two daemons with one client id. Figures are printed next to the work done (run with -s to see them)."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Subscriber
from edge.config import validate
from edge.fleet import BadMessage, PersonVersion, decode, encode
from edge.fleet_trust import FleetTrust
from edge_process import EdgeProcess, base_args

FLEET = "edge-fleet/gallery"
KEY = "hostile-test-fleet-key-0123456789"
MODEL = "dlib_resnet_v1"
OWN_CONFIG = "homeassistant/binary_sensor/test-box/presence_x/config"     # device=test-box in base_args

CRASH_PAYLOADS = {
    f"{FLEET}/brackets": b"[" * 5000,
    f"{FLEET}/braces": b'{"a":' * 5000,
    f"{FLEET}/bigint": b'{"schema":2,"op":"forget","name":"bigint","box":"x","version":' + b"9" * 5000 + b"}",
    f"{FLEET}/notutf8": b"\xff\xfe\xfd" * 100,
    f"{FLEET}/nan": b'{"schema":NaN}',
    f"{FLEET}/huge": b" " * (300 << 10),
    "homeassistant/status": b"[" * 5000,
    OWN_CONFIG: b"[" * 5000,
}


def signer(key: str | None = KEY) -> FleetTrust:
    trust = FleetTrust(validate({"fleet": {"enabled": True, "allow_unsigned": True}}))
    trust.key = key.encode() if key else None
    return trust


def face_like(rng: np.random.Generator, count: int) -> np.ndarray:
    """Vectors as long as real dlib face embeddings (1.27-1.61 on LFW) and far from each other."""
    vectors = rng.normal(size=(count, 128)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True) * 1.4


def enrollment(name: str, vectors: np.ndarray, version: int, box: str = "box-rogue") -> dict:
    return json.loads(encode(PersonVersion(name, version, box, 0, ""), vectors, MODEL))


class Diagnostics:
    """Frames/s as the daemon reports it every 5 s on <prefix>/diagnostics, and its events with arrival times."""

    def __init__(self, port: int, prefix: str = "door1"):
        self.fps: list[tuple[float, float]] = []            # (monotonic arrival, fps)
        self.events: list[tuple[float, dict]] = []          # (wall-clock arrival, event)
        self.configs: list[float] = []                      # arrival of discovery configs (monotonic)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"diag-{time.monotonic_ns()}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        for topic in (f"{prefix}/diagnostics", f"{prefix}/events", "homeassistant/+/+/+/config"):
            self.client.subscribe(topic, qos=0)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        if message.topic.endswith("/diagnostics"):
            self.fps.append((time.monotonic(), json.loads(message.payload)["fps"]))
        elif message.topic.endswith("/events"):
            self.events.append((time.time(), json.loads(message.payload)))
        elif not message.retain:
            self.configs.append(time.monotonic())

    def fps_between(self, start: float, end: float) -> list[float]:
        return [fps for t, fps in self.fps if start <= t <= end]

    def latencies(self, emitted: list[dict], wait_s: float = 60) -> list[float]:
        """Event timestamp (made when the daemon emits it) to arrival here, seconds, for each of `emitted`
        (as the daemon printed them); one still missing after `wait_s` counts as `wait_s`."""
        wanted = {e["event_id"]: stamp(e) for e in emitted}
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not set(wanted) <= {e["event_id"] for _, e in self.events}:
            time.sleep(0.1)
        arrived = {e["event_id"]: t for t, e in self.events}
        return [arrived[i] - made if i in arrived else wait_s for i, made in wanted.items()]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def stamp(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of the process so far (independent of what else the machine runs)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def keeps_frame_rate(fps: list[float]) -> bool:
    """At camera pace the demo runs at 15 frames/s; the loop stalled by the old fleet handling gave 0.2.
    Wide margin: the test machine runs other work too (with load average 15-20 on 2 cores, an undisturbed
    daemon was seen at 9-12 frames/s)."""
    return bool(fps) and min(fps) >= 3 and statistics.mean(fps) >= 7


def daemon_args(db: Path, port: int, *extra: str) -> list[str]:
    return [*base_args(db, "--set", "capture.loop=true", port=port), "--set", "fleet.enabled=true", *extra]


def sender(port: int) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"hostile-{time.monotonic_ns()}")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def stop(daemon: EdgeProcess) -> int:
    daemon.signal(signal.SIGTERM)
    return daemon.wait(60)


def test_retained_crash_payloads_on_every_subscribed_topic_leave_the_daemon_running(broker, tmp_path):
    client = sender(broker.port)
    for topic, payload in CRASH_PAYLOADS.items():
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    diagnostics = Diagnostics(broker.port)
    try:
        for start in range(2):             # retained: they hit again on every start
            daemon = EdgeProcess(*daemon_args(tmp_path / "edge.db", broker.port), env={"EDGE_FLEET_KEY": KEY})
            daemon.wait_events(lambda events: any(e["type"] == "face_identified" for e in events), timeout=60)
            started = time.monotonic()
            daemon.wait_until(lambda p: len(diagnostics.fps_between(started, time.monotonic())) >= 2, 30,
                              "two diagnostics messages")
            fps = diagnostics.fps_between(started, time.monotonic())
            assert stop(daemon) == 0, daemon.stderr()
            ignored = [line for _, line in daemon.log if "fleet: ignored" in line]
            print(f"\nstart {start + 1} with {len(CRASH_PAYLOADS)} retained crash payloads: running, "
                  f"frames/s {fps}, {len(ignored)} fleet messages ignored, exit 0")
            assert "Traceback" not in daemon.stderr(), daemon.stderr()
            assert len(ignored) == sum(t.startswith(FLEET) for t in CRASH_PAYLOADS), daemon.stderr()
            assert any("brackets" in line and "nested too deep" in line for line in ignored)
            assert any("bigint" in line and "digits" in line for line in ignored)
            assert keeps_frame_rate(fps[1:] or fps), fps
    finally:
        diagnostics.close()


def json_values():
    return st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                        lambda children: st.lists(children, max_size=4)
                        | st.dictionaries(st.text(max_size=10), children, max_size=4), max_leaves=20)


def payloads():
    valid = enrollment("fuzz", face_like(np.random.default_rng(0), 2), 1)
    fields = sorted(valid) + ["ts", "nonce", "sig"]
    mutated_signed = st.tuples(st.sampled_from(fields), json_values(), st.booleans()).map(
        lambda change: json.dumps(signer().sign({**valid, change[0]: change[1]}) if change[2]
                                  else {**signer().sign(valid), change[0]: change[1]}).encode())
    return st.one_of(
        st.binary(max_size=3000),
        json_values().map(lambda value: json.dumps(value).encode()),
        mutated_signed,
        st.integers(1, 6000).map(lambda n: b"[" * n),
        st.integers(1, 6000).map(lambda n: b'{"schema":2,"version":' + b"9" * n + b"}"),
        st.sampled_from([b"online", b"offline", b"", b"online\x00"]))


def topics():
    # Mosquitto disconnects a client whose topic holds control characters: those never reach the daemon.
    level = st.text(st.characters(whitelist_categories=("L", "N", "P", "S", "Zs"), blacklist_characters="/#+"),
                    min_size=1, max_size=30)
    return st.one_of(level.map(lambda name: f"{FLEET}/{name}"), st.just("homeassistant/status"),
                     level.map(lambda name: f"homeassistant/binary_sensor/test-box/{name}/config"))


def test_fuzzing_every_subscribed_topic_neither_stops_nor_slows_the_daemon(broker, tmp_path):
    diagnostics = Diagnostics(broker.port)
    daemon = EdgeProcess(*daemon_args(tmp_path / "edge.db", broker.port), env={"EDGE_FLEET_KEY": KEY})
    client = sender(broker.port)
    sent = []
    try:
        daemon.wait_events(lambda events: any(e["type"] == "face_appeared" for e in events), timeout=60)
        started = time.monotonic()

        @settings(max_examples=400, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(topic=topics(), payload=payloads(), retain=st.booleans())
        def publish(topic, payload, retain):
            client.publish(topic, payload, qos=1, retain=retain)
            sent.append(topic)
        publish()
        client.publish(f"{FLEET}/end", b"{}", qos=1).wait_for_publish(10)
        daemon.wait_until(lambda p: len(diagnostics.fps_between(started + 5, time.monotonic())) >= 2, 40,
                          "diagnostics after the fuzz")
        fps = diagnostics.fps_between(started, time.monotonic())
        assert daemon.process.poll() is None, daemon.stderr()
    finally:
        code = stop(daemon)
        client.disconnect()
        client.loop_stop()
        diagnostics.close()
    print(f"\nfuzz: {len(sent)} messages on {len(set(sent))} topics; daemon frames/s while fuzzed {fps}; exit {code}")
    assert code == 0 and "Traceback" not in daemon.stderr(), daemon.stderr()[-3000:]
    assert not [line for _, line in daemon.log if "failed:" in line], daemon.stderr()[-3000:]
    assert keeps_frame_rate(fps), fps
    # Rate-limited: a flood of rejections writes a bounded number of lines.
    assert sum("ignored the message" in line for _, line in daemon.log) <= 2 * 20


@settings(max_examples=1500, deadline=None)
@given(payload=payloads(), name=st.text(max_size=30))
def test_decode_raises_only_its_own_error(payload, name):
    try:
        decode(name, payload, 262144, 100, MODEL, signer())
    except BadMessage:
        pass


def test_home_assistant_birth_flood_is_coalesced_and_events_keep_their_latency(broker, tmp_path):
    diagnostics = Diagnostics(broker.port)
    daemon = EdgeProcess(*base_args(tmp_path / "edge.db", "--set", "capture.loop=true", port=broker.port))
    client = sender(broker.port)
    flood_s, rate = 8.0, 2000
    try:
        daemon.wait_events(lambda events: any(e["type"] == "face_appeared" for e in events), timeout=60)
        time.sleep(16)                          # one loop of the demo video before the flood, for the baseline
        rss_before = rss_mb(daemon.pid)
        cpu_before = cpu_s(daemon.pid)
        flood_start_wall, flood_start = time.time(), time.monotonic()
        births = 0
        while time.monotonic() - flood_start < flood_s:
            for _ in range(rate // 100):
                client.publish("homeassistant/status", b"online", qos=0)
                births += 1
            time.sleep(max(0.0, flood_start + births / rate - time.monotonic()))
        flood_end_wall, flood_end = time.time(), time.monotonic()
        flood_cpu = (cpu_s(daemon.pid) - cpu_before) / (flood_end - flood_start)
        time.sleep(2)
        rss_after = rss_mb(daemon.pid)
        assert daemon.process.poll() is None, daemon.stderr()
        before = diagnostics.latencies([e for e in daemon.events
                                        if flood_start_wall - 16 <= stamp(e) < flood_start_wall])
        during = diagnostics.latencies([e for e in daemon.events
                                        if flood_start_wall <= stamp(e) <= flood_end_wall + 2])
    finally:
        code = stop(daemon)
        client.disconnect()
        client.loop_stop()
        diagnostics.close()
    configs = [t for t in diagnostics.configs if flood_start <= t <= flood_end + 2]
    fps = diagnostics.fps_between(flood_start + 5, flood_end + 2)
    print(f"\nbirth flood: {births} births in {flood_end - flood_start:.1f} s; event latency before "
          f"median {statistics.median(before):.3f} / max {max(before):.3f} s ({len(before)} events), during "
          f"median {statistics.median(during):.3f} / max {max(during):.3f} s ({len(during)} events); "
          f"{len(configs)} discovery configs re-sent; daemon CPU {flood_cpu * 1000:.0f} ms/s during; RSS {rss_before:.0f} -> {rss_after:.0f} MB; frames/s {fps}")
    assert code == 0, daemon.stderr()
    assert births >= 0.8 * flood_s * rate and len(before) >= 3 and len(during) >= 3
    assert max(during) < 1.0, during
    per_announce = 6                            # the fixed entities (nobody is enrolled here)
    assert len(configs) <= per_announce * (int((flood_end - flood_start) / 5) + 2), len(configs)
    assert rss_after - rss_before < 30


def test_fleet_floods_forged_and_signed_keep_the_frame_rate(broker, tmp_path):
    db = tmp_path / "edge.db"
    diagnostics = Diagnostics(broker.port)
    daemon = EdgeProcess(*daemon_args(db, broker.port), env={"EDGE_FLEET_KEY": KEY})
    client = sender(broker.port)
    rng = np.random.default_rng(3)
    try:
        daemon.wait_events(lambda events: any(e["type"] == "face_appeared" for e in events), timeout=60)
        daemon.wait_until(lambda p: len(diagnostics.fps) >= 2, 30, "baseline diagnostics")
        baseline = [fps for _, fps in diagnostics.fps[-2:]]
        # Made before the clock starts, so that the sender's own work does not take the daemon's CPU.
        forged = [json.dumps(signer(key=None).sign(enrollment(f"forged{i}", face_like(rng, 100), 10 ** 12)))
                  for i in range(300)]
        version = int(time.time() * 1000)
        bodies = []
        for i in range(400):
            name, version = f"member{i % 40}", version + 1
            bodies.append(enrollment(name, face_like(rng, 2), version) if i % 2 == 0 else
                          json.loads(encode(PersonVersion(name, version, "box-rogue", 1, ""), None, MODEL)))
        trust = signer()
        cpu_before, quiet_start = cpu_s(daemon.pid), time.monotonic()
        time.sleep(5)
        baseline_cpu = (cpu_s(daemon.pid) - cpu_before) / (time.monotonic() - quiet_start)
        cpu_before, start = cpu_s(daemon.pid), time.monotonic()
        # 1. Forged: no key, 300 people x 100 embeddings (the attack that added 100,001 embeddings).
        for i, message in enumerate(forged):
            client.publish(f"{FLEET}/forged{i}", message, qos=0)
            time.sleep(0.01)
        # 2. Signed by a fleet member: 400 enroll/forget messages for 40 people in ~4 s (each forget VACUUMed).
        for body in bodies:
            client.publish(f"{FLEET}/{body['name']}", json.dumps(trust.sign(body)), qos=0)
            time.sleep(0.01)
        flood_end = time.monotonic()
        flood_cpu = (cpu_s(daemon.pid) - cpu_before) / (flood_end - start)
        daemon.wait_until(lambda p: len(diagnostics.fps_between(flood_end + 1, time.monotonic())) >= 2, 40,
                          "diagnostics after the flood")
        during = diagnostics.fps_between(start + 1, time.monotonic())
        rss = rss_mb(daemon.pid)
    finally:
        code = stop(daemon)
        client.disconnect()
        client.loop_stop()
        diagnostics.close()
    import sqlite3
    with sqlite3.connect(db) as conn:
        forged = conn.execute("SELECT COUNT(*) FROM identities WHERE name LIKE 'forged%'").fetchone()[0]
        embeddings = conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
    applied = sum("fleet: applied" in line for _, line in daemon.log)
    print(f"\nfleet flood: 300 forged enrollments x 100 embeddings + 400 signed enroll/forget in "
          f"{flood_end - start:.1f} s; frames/s before {baseline}, during/after {during}; {forged} forged people "
          f"stored, {embeddings} embeddings in the database, {applied} signed changes applied "
          f"(rate-limited); daemon CPU {baseline_cpu * 1000:.0f} ms/s before, {flood_cpu * 1000:.0f} ms/s during; "
          f"RSS {rss:.0f} MB")
    assert code == 0 and "Traceback" not in daemon.stderr(), daemon.stderr()[-3000:]
    assert forged == 0
    assert keeps_frame_rate(during), during
    # The daemon's own CPU is the figure a busy machine does not blur: the flood adds little to it.
    assert flood_cpu <= 1.5 * baseline_cpu + 0.1, (baseline_cpu, flood_cpu)
    assert 0 < applied <= 5 * (time.monotonic() - start) + 5


def test_two_daemons_with_one_client_id_are_named_and_unique_ids_coexist(broker, tmp_path):
    def pair(*extra: str) -> list[EdgeProcess]:
        return [EdgeProcess(*base_args(tmp_path / f"{name}.db", "--set", "capture.loop=true", *extra,
                                       port=broker.port)) for name in ("a", "b")]
    same = pair("--set", "mqtt.client_id=door1-camera")
    try:
        same[0].wait_log(r"same client id 'door1-camera'", timeout=60)
    finally:
        for daemon in same:
            stop(daemon)
    unique = pair()
    try:
        for daemon in unique:
            daemon.wait_events(lambda events: len(events) >= 1, timeout=60)
        time.sleep(8)
    finally:
        codes = [stop(daemon) for daemon in unique]
    assert codes == [0, 0]
    for daemon in unique:
        assert "MQTT disconnected" not in daemon.stderr() and "same client id" not in daemon.stderr(), \
            daemon.stderr()
