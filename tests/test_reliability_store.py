"""The database under abuse, on real SQLite files: SIGKILL mid-write, a read-only or full file system
(real tmpfs mounts, root only), permissions, retention purge; a corrupt model for the daemon."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, free_port
from edge_process import EdgeProcess, base_args


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def outbox(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT event_id FROM outbox")}


@pytest.mark.slow
def test_sigkill_mid_write_keeps_database_consistent(broker, subscriber_factory, tmp_path):
    """Three SIGKILLs at random moments while every frame writes (every_frame pace, broker unreachable so
    the outbox only grows); then a restart against a live broker delivers every event ever printed."""
    db = tmp_path / "edge.db"
    produced: set[str] = set()
    rng = random.Random(7)
    for _ in range(3):
        daemon = EdgeProcess(*base_args(db, "--set", "capture.loop=true", pace="every_frame", port=free_port()))
        daemon.wait_events(lambda ev: len(ev) >= 1, timeout=90)
        time.sleep(rng.uniform(0.0, 3.0))
        daemon.signal(signal.SIGKILL)
        daemon.wait()
        # An event is printed only after its transaction committed, so it must have survived the kill.
        produced |= {e["event_id"] for e in daemon.events}
        assert integrity(db) == "ok"
        assert produced <= outbox(db)
    produced = outbox(db)   # may also hold events committed in the instant before the kill, never printed
    subscriber = subscriber_factory(broker.port, topic="door1/events")
    restarted = EdgeProcess(*base_args(db, "--max-frames", "3", pace="every_frame", port=broker.port))
    assert restarted.wait(120) == 0, restarted.stderr()
    assert subscriber.wait_for(lambda s: produced <= {e["event_id"] for e in s.events()}, timeout=20)
    delivered = produced & {e["event_id"] for e in subscriber.events()}
    print(f"\nSIGKILL x3 then restart: {len(produced)} events in the outbox, {len(delivered)} delivered")
    assert outbox(db) == set() and integrity(db) == "ok"


def test_database_files_are_owner_only(tmp_path):
    from edge.store import Store
    state = tmp_path / "state"
    store = Store(state / "edge.db")
    store.record("edge/events", {"event_id": "e1"}, None)
    for path in (state / "edge.db", state / "edge.db-wal", state / "edge.db-shm"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    store.close()


def sighting(track: str, last_seen: float) -> dict:
    return {"track": track, "camera": "c", "first_seen": last_seen - 5, "last_seen": last_seen, "age": 30.0,
            "gender": "female", "gender_confidence": 0.9, "frames": 5}


def test_retention_purges_old_sightings_at_start(tmp_path):
    from edge.store import Store
    db = tmp_path / "edge.db"
    store = Store(db)
    now = time.time()
    store.record(None, {"event_id": "old"}, sighting("old", now - 31 * 86400))
    store.record(None, {"event_id": "recent"}, sighting("recent", now - 29 * 86400))
    assert store.purge_sightings(30, now=now) == 1
    with sqlite3.connect(db) as conn:
        assert {r[0] for r in conn.execute("SELECT track FROM sightings")} == {"recent"}
    store.record(None, {"event_id": "old"}, sighting("old", now - 31 * 86400))
    store.close()
    # The daemon purges at start and then hourly, with store.retention_days from the config.
    daemon = EdgeProcess(*base_args(db, "--max-frames", "2", "--set", "store.retention_days=30",
                                    pace="every_frame"))
    assert daemon.wait(120) == 0, daemon.stderr()
    with sqlite3.connect(db) as conn:
        assert {r[0] for r in conn.execute("SELECT track FROM sightings")} == {"recent"}
    assert "purged 1 sightings older than 30 days" in daemon.stderr()


@pytest.fixture
def tmpfs(tmp_path):
    """A real small file system; needs root with CAP_SYS_ADMIN (a container started without it skips)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); needs root with CAP_SYS_ADMIN")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def assert_one_line_database_error(daemon: EdgeProcess, expected: str) -> None:
    code = daemon.wait(120)
    err = daemon.stderr()
    assert code == 1, err
    assert "Traceback" not in err
    final = [line for line in err.splitlines() if line.startswith("database error:")]
    assert len(final) == 1 and expected in final[0], err


def test_read_only_file_system(tmpfs):
    db = tmpfs / "edge.db"
    from edge.store import Store
    Store(db).close()        # an existing database ...
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)   # ... on a file system gone read-only
    daemon = EdgeProcess(*base_args(db, pace="every_frame"))
    assert_one_line_database_error(daemon, f"{db}: unable to open database file "
                                           "(the file system is mounted read-only)")


@pytest.mark.slow
def test_full_disk_stops_with_a_message(tmpfs):
    db = tmpfs / "edge.db"
    from edge.store import Store
    Store(db).close()
    # Fill the file system, leaving room for the -shm index and a few pages: the daemon starts, then the
    # first transactions that grow the WAL hit ENOSPC.
    filler = tmpfs / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)   # until ENOSPC
    os.truncate(filler, max(0, filler.stat().st_size - 64 * 1024))
    daemon = EdgeProcess(*base_args(db, "--set", "capture.loop=true", pace="every_frame"))
    assert_one_line_database_error(daemon, "database or disk is full")
    filler.unlink()
    assert integrity(db) == "ok"


def test_corrupt_model_stops_the_daemon_naming_the_file(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(ROOT / "models", models)
    data = bytearray((models / "age_v1.onnx").read_bytes())
    data[5000:5100] = b"\xff" * 100
    (models / "age_v1.onnx").write_bytes(bytes(data))
    daemon = EdgeProcess(*base_args(tmp_path / "edge.db", "--set", f"models.dir={models}"))
    assert daemon.wait(60) == 3
    assert "age_v1.onnx" in daemon.stderr() and "Traceback" not in daemon.stderr()
