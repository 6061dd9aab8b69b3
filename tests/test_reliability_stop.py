"""Graceful stop on a real subprocess and a real broker: SIGTERM/SIGINT finish the frame, close open tracks
with face_left, flush the outbox within a bounded time, exit 0."""

from __future__ import annotations

import signal
import sqlite3
import time

import pytest

from conftest import free_port
from edge_process import EdgeProcess, base_args


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_with_face_in_view_sends_face_left(signum, broker, subscriber_factory, tmp_path):
    subscriber = subscriber_factory(broker.port, topic="door1/#")
    daemon = EdgeProcess(*base_args(tmp_path / "edge.db", port=broker.port))
    daemon.wait_events(lambda events: any(e["type"] == "face_appeared" for e in events))
    open_tracks = {e["track_id"] for e in daemon.events if e["type"] == "face_appeared"} - \
        {e["track_id"] for e in daemon.events if e["type"] == "face_left"}
    assert open_tracks, "a face must be in view when the signal arrives"
    sent_at = time.monotonic()
    daemon.signal(signum)
    assert daemon.wait(30) == 0, daemon.stderr()
    stop_s = time.monotonic() - sent_at
    assert stop_s < 10, f"stopping took {stop_s:.1f} s"
    assert subscriber.wait_for(lambda s: open_tracks <= {e["track_id"] for e in s.events()
                                                         if e["type"] == "face_left"}, timeout=10), \
        f"no face_left for {open_tracks}: {[e['type'] for e in subscriber.events()]}"
    produced = {e["event_id"] for e in daemon.events}
    assert produced <= {e["event_id"] for e in subscriber.events()}
    assert subscriber.payloads("door1/status")[-1] == b"offline"
    with sqlite3.connect(tmp_path / "edge.db") as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    assert "Traceback" not in daemon.stderr()


@pytest.mark.slow
def test_sigterm_with_broker_down_exits_within_the_flush_bound(tmp_path):
    """Flushing waits at most 5 s for a broker that is not there; the events stay queued for next time."""
    daemon = EdgeProcess(*base_args(tmp_path / "edge.db", port=free_port()))
    daemon.wait_events(lambda events: any(e["type"] == "face_appeared" for e in events))
    sent_at = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, daemon.stderr()
    stop_s = time.monotonic() - sent_at
    assert stop_s < 9, f"stopping took {stop_s:.1f} s with the broker down"
    assert "still in the outbox; they are sent on the next start" in daemon.stderr()
    with sqlite3.connect(tmp_path / "edge.db") as db:
        queued = {r[0] for r in db.execute("SELECT event_id FROM outbox")}
    assert {e["event_id"] for e in daemon.events} == queued
    assert any(e["type"] == "face_left" for e in daemon.events)
