"""Enrolment as users try it, on real models and a real SQLite file: `edge enroll NAME FOLDER` with a bad photo
in the batch (skipped and reported, or the whole batch refused with --strict), the same photo twice stored
once, a bad name as a usage error, a decompression bomb refused; `edge backup` while a writer is busy."""

from __future__ import annotations

import sqlite3
import struct
import threading
import time
import zlib

import cv2
import numpy as np
import pytest

from conftest import DEMO_GALLERY, run_edge

COLLINS = DEMO_GALLERY / "eileen_collins.jpg"


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG header claiming 900 megapixels with almost no data: decoding it would need ~2.7 GB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" + b"\x00" * (width * 3)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * 4)) + chunk(b"IEND", b""))


def embeddings(db) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT i.name, e.source FROM embeddings e JOIN identities i ON i.id = e.identity_id "
                            "ORDER BY e.id").fetchall()


@pytest.fixture
def folder(tmp_path, hopper_photo):
    """Eileen Collins twice (same bytes), a resized copy (new photo), a text file, both faces in one photo."""
    photos = tmp_path / "eileen"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(COLLINS.read_bytes())
    (photos / "z-copy.jpg").write_bytes(COLLINS.read_bytes())
    cv2.imwrite(str(photos / "b.jpg"), cv2.resize(cv2.imread(str(COLLINS)), (300, 300)))
    (photos / "notes.jpg").write_text("not a photo")
    hopper, collins = cv2.imread(str(hopper_photo)), cv2.imread(str(COLLINS))
    cv2.imwrite(str(photos / "pair.jpg"), np.hstack([cv2.resize(hopper, (420, 420)), cv2.resize(collins, (420, 420))]))
    (photos / "bomb.png").write_bytes(bomb_png())           # beyond Pillow's own limit
    (photos / "big.png").write_bytes(bomb_png(9000, 5000))  # within Pillow's, beyond ours
    (photos / ".hidden.jpg").write_bytes(b"ignored")
    return photos


def test_folder_enrolment_skips_and_reports_bad_photos_and_stores_each_photo_once(folder, tmp_path):
    db = tmp_path / "edge.db"
    result = run_edge("enroll", "eileen", str(folder), "--set", f"store.path={db}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "enrolled eileen from 2 photo(s), 5 skipped", result.stdout
    err = result.stderr
    assert "a.jpg in this batch; not stored again" in err              # z-copy.jpg: same bytes as a.jpg
    assert "skipped: " + str(folder / "notes.jpg") + ": not an image file" in err
    assert "skipped: " + str(folder / "pair.jpg") + ": 2 faces found" in err
    assert "skipped: " + str(folder / "bomb.png") + ": image dimensions are implausibly large (a decompression " \
        "bomb?)" in err
    assert "skipped: " + str(folder / "big.png") + ": image is 9000x5000, more than 40 megapixels" in err
    assert ".hidden" not in err and "Traceback" not in err
    stored = embeddings(db)
    assert [name for name, _ in stored] == ["eileen", "eileen"]
    assert sorted(source.split(" ", 1)[1] for _, source in stored) == [str(folder / "a.jpg"), str(folder / "b.jpg")]
    # Again: every usable photo is already there, nothing new is written and that is not an error.
    again = run_edge("enroll", "eileen", str(folder / "a.jpg"), str(folder / "b.jpg"), "--set", f"store.path={db}")
    assert again.returncode == 0 and "already enrolled as eileen; not stored again" in again.stderr
    assert len(embeddings(db)) == 2


def test_strict_refuses_the_whole_batch(folder, tmp_path):
    db = tmp_path / "edge.db"
    result = run_edge("enroll", "eileen", str(folder), "--strict", "--set", f"store.path={db}")
    assert result.returncode == 4
    assert "not enrolled" in result.stderr and "nothing was saved" in result.stderr
    assert embeddings(db) == []


@pytest.mark.parametrize("name", ["a/b", "x" * 101, "   ", "line\nbreak", "door#1"])
def test_bad_name_is_a_usage_error(name, tmp_path):
    result = run_edge("enroll", name, str(COLLINS), "--set", f"store.path={tmp_path / 'edge.db'}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("usage error: invalid name") and len(result.stderr.strip().splitlines()) == 1


def test_enroll_function_results_per_photo(tmp_path):
    """The function every caller shares: one result per photo, in order, with a status a program can read."""
    from edge.config import load_config
    from edge.enroll import BadName, enroll
    from edge.models.loader import load_models
    from edge.store import Store

    cfg = load_config(None, [f"store.path={tmp_path / 'edge.db'}"])
    models, store = load_models(cfg), Store(cfg.store.path)
    uploads = [("face.jpg", COLLINS.read_bytes()), ("bomb.png", bomb_png()), ("empty.jpg", b""),
               ("again.jpg", COLLINS.read_bytes())]
    result = enroll(models, store, "  eileen ", uploads)
    assert result.name == "eileen" and result.stored == 1 and not result.refused
    assert [p.status for p in result.photos] == ["ok", "too_large", "not_an_image", "duplicate"]
    assert result.as_dict()["photos"][1]["message"].startswith("bomb.png: image dimensions are implausibly large")
    with pytest.raises(BadName):
        enroll(models, store, "a+b", uploads)
    store.close()


def test_backup_while_a_writer_is_busy(tmp_path):
    from edge.store import Store

    db = tmp_path / "edge.db"
    store = Store(db)
    store.enroll("eileen", np.ones((1, 128), np.float32), ["photo.jpg"], model="test-model")
    store.close()
    stop, written = threading.Event(), []

    def writer():
        # The daemon's pattern: its own connection, one small transaction after another, in WAL mode.
        own = Store(db)
        while not stop.is_set():
            own.record(None, {"identity": None}, {"track": f"t{len(written)}", "camera": "c", "first_seen": 1.0,
                                                  "last_seen": time.time(), "frames": 1})
            written.append(1)
        own.close()
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 50:
            time.sleep(0.01)
        result = run_edge("backup", str(tmp_path / "copy.db"), "--set", f"store.path={db}")
        during = len(written)
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join(30)
    assert result.returncode == 0, result.stderr
    assert f"backed up {db} to {tmp_path / 'copy.db'}" in result.stdout
    assert len(written) > during, "the writer was blocked by the backup"
    copy = tmp_path / "copy.db"
    assert copy.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        sightings = conn.execute("SELECT COUNT(*) FROM sightings").fetchone()[0]
        assert conn.execute("SELECT name FROM identities").fetchall() == [("eileen",)]
    # A snapshot taken mid-stream: at least what was written before, at most what was written by the end.
    assert 50 <= sightings <= len(written)
    assert not list(tmp_path.glob(".copy.db.partial"))
    missing = run_edge("backup", str(tmp_path / "x.db"), "--set", f"store.path={tmp_path / 'none.db'}")
    assert missing.returncode == 1 and "no database at" in missing.stderr
