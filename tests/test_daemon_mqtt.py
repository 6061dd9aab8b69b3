"""The appliance end to end on real components: demo video -> models -> SQLite outbox -> Mosquitto -> subscriber."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import DEMO_VIDEO, ROOT, edge_command, free_port


class DaemonProcess:
    """`edge run` as a real subprocess; stdout event lines are collected as they come."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen(edge_command("run", "--print-events", *args), cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def wait_events(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline and self.process.poll() is None:
            time.sleep(0.05)
        assert len(self.events) >= count, f"only {len(self.events)} events; stderr: {self.stderr()}"

    def wait(self, timeout: float = 180) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        return self.process.stderr.read()


def daemon_args(port: int, db, pace: str = "every_frame", *extra: str) -> list[str]:
    return ["--source", str(DEMO_VIDEO), "--set", f"capture.pace={pace}", "--set", f"mqtt.port={port}",
            "--set", "mqtt.host=127.0.0.1", "--set", f"store.path={db}", "--set", "mqtt.prefix=door1",
            "--set", "device=test-box", *extra]


def test_demo_video_identity_age_gender_over_real_broker(broker, subscriber_factory, enrolled_db):
    subscriber = subscriber_factory(broker.port, topic="door1/#")
    daemon = DaemonProcess(*daemon_args(broker.port, enrolled_db))
    assert daemon.wait() == 0, daemon.stderr()
    assert subscriber.wait_for(lambda s: len(s.events()) >= len(daemon.events), timeout=20)
    events = subscriber.events()
    identified = [e for e in events if e["type"] == "face_identified"]
    collins = [e for e in identified if e["identity"] and e["identity"]["name"] == "eileen_collins"]
    assert collins, f"no face_identified for the enrolled person: {identified}"
    for event in collins:
        assert 0.4 < event["identity"]["similarity"] <= 1.0
        assert event["gender"]["label"] == "female" and event["gender"]["confidence"] > 0.8
        assert 25 <= event["age"] <= 60, event["age"]          # photo taken at about 41
        assert event["frames_averaged"] >= 5
    # The unenrolled second person comes out unknown, never as the enrolled name.
    unknown = [e for e in identified if e["identity"] is None and e["age"] > 60]
    assert unknown, "Grace Hopper (not enrolled) should be identified as unknown"
    # Every identified track also left, with a dwell time.
    left = {e["track_id"]: e for e in events if e["type"] == "face_left"}
    for event in collins:
        assert event["track_id"] in left and left[event["track_id"]]["dwell_s"] > 1.0
    # Payload shape.
    sample = collins[0]
    for key in ("event_id", "type", "timestamp", "device", "camera", "track_id", "identity", "gender", "age",
                "frames_averaged", "box", "dwell_s"):
        assert key in sample
    assert sample["device"] == "test-box" and len(sample["box"]) == 4
    # Availability: online while running, offline (retained) after a clean stop.
    statuses = subscriber.payloads("door1/status")
    assert b"online" in statuses and statuses[-1] == b"offline"
    # Everything was acknowledged, so the outbox is empty.
    with sqlite3.connect(enrolled_db) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM sightings WHERE identity_id IS NOT NULL").fetchone()[0] >= 1


def test_broker_restart_mid_run_loses_no_event(broker, subscriber_factory, tmp_path):
    subscriber = subscriber_factory(broker.port, topic="door1/events", client_id="outage-sub")
    daemon = DaemonProcess(*daemon_args(broker.port, tmp_path / "edge.db", "realtime"))
    daemon.wait_events(1)
    broker.stop()
    produced_during_outage = len(daemon.events)
    time.sleep(6)
    produced_during_outage = len(daemon.events) - produced_during_outage
    broker.start()
    assert daemon.wait() == 0, daemon.stderr()
    produced = {e["event_id"] for e in daemon.events}
    assert subscriber.wait_for(lambda s: produced <= {e["event_id"] for e in s.events()}, timeout=30), \
        f"missing: {produced - {e['event_id'] for e in subscriber.events()}}"
    assert produced_during_outage >= 1, "the outage should cover at least one event"


def test_sigkill_with_queued_events_then_restart_delivers_them(broker, subscriber_factory, tmp_path):
    db = tmp_path / "edge.db"
    dead_port = free_port()   # nothing listens: every event stays in the outbox
    daemon = DaemonProcess(*daemon_args(dead_port, db, "realtime"))
    daemon.wait_events(2)
    daemon.process.send_signal(signal.SIGKILL)
    daemon.wait()
    queued = {e["event_id"] for e in daemon.events}
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        in_outbox = {r[0] for r in conn.execute("SELECT event_id FROM outbox")}
    assert queued <= in_outbox
    subscriber = subscriber_factory(broker.port, topic="door1/events")
    restarted = DaemonProcess(*daemon_args(broker.port, db, "every_frame", "--max-frames", "3"))
    assert restarted.wait() == 0, restarted.stderr()
    assert subscriber.wait_for(lambda s: queued <= {e["event_id"] for e in s.events()}, timeout=20)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
