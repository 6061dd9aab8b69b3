"""The CLI on real models and a real SQLite file: analyze, enroll, identities list/forget, doctor, models."""

from __future__ import annotations

import json
import re
import sqlite3

import cv2
import numpy as np
import pytest

from conftest import DEMO_GALLERY, run_edge

COLLINS = DEMO_GALLERY / "eileen_collins.jpg"


def test_analyze_json_shape_and_identity(enrolled_db, tmp_path, hopper_photo):
    # A frame with both public-domain faces side by side: Hopper (unknown) left, Collins right.
    hopper = cv2.imread(str(hopper_photo))
    collins = cv2.imread(str(COLLINS))
    height = 420
    pair = np.hstack([cv2.resize(hopper, (int(hopper.shape[1] * height / hopper.shape[0]), height)),
                      cv2.resize(collins, (height, height))])
    both = tmp_path / "both.jpg"
    cv2.imwrite(str(both), pair)
    result = run_edge("analyze", str(both), "--json", "--set", f"store.path={enrolled_db}")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip())
    assert report["image"] == str(both)
    faces = report["faces"]
    assert len(faces) == 2
    assert faces[0]["box"][0] < faces[1]["box"][0], "faces must be ordered left to right"
    hopper_face, collins_face = faces
    assert hopper_face["identity"] is None
    assert collins_face["identity"]["name"] == "eileen_collins"
    assert 0.4 < collins_face["identity"]["similarity"] <= 1
    assert collins_face["gender"] == {"label": "female", "confidence": pytest.approx(1.0, abs=0.2)}
    assert 25 < collins_face["age"] < 60 and hopper_face["age"] > 60
    for face in faces:
        assert set(face) == {"box", "age", "gender", "identity"} and len(face["box"]) == 4


@pytest.mark.slow
def test_enroll_list_forget_erases_every_trace(tmp_path):
    db = tmp_path / "edge.db"
    assert run_edge("enroll", "eileen", str(COLLINS), "--set", f"store.path={db}").returncode == 0
    listed = json.loads(run_edge("identities", "list", "--json", "--set", f"store.path={db}").stdout)
    assert [(r["name"], r["embeddings"]) for r in listed] == [("eileen", 1)]
    with sqlite3.connect(db) as conn:
        vector = conn.execute("SELECT vector FROM embeddings").fetchone()[0]
    # Add a sighting and a queued event naming her, as the daemon would.
    from edge.store import Store
    store = Store(db)
    store.record("edge/events", {"event_id": "ev-1", "identity": {"name": "eileen"}},
                 {"track": "t1", "camera": "c", "first_seen": 1.0, "last_seen": 2.0, "age": 40.0,
                  "gender": "female", "gender_confidence": 0.9, "frames": 5})
    store.close()
    forgot = run_edge("identities", "forget", "eileen", "--set", f"store.path={db}")
    assert forgot.returncode == 0, forgot.stderr
    with sqlite3.connect(db) as conn:
        for table in ("identities", "embeddings", "sightings", "outbox"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
    raw = db.read_bytes() + (db.with_name(db.name + "-wal").read_bytes() if db.with_name(db.name + "-wal").exists() else b"")
    assert vector not in raw and b"eileen" not in raw, "the person's bytes must be gone from the file"
    assert run_edge("identities", "forget", "eileen", "--set", f"store.path={db}").returncode == 1


def test_enroll_refuses_photo_with_two_faces(tmp_path, hopper_photo):
    collins = cv2.imread(str(COLLINS))
    hopper = cv2.resize(cv2.imread(str(hopper_photo)), (collins.shape[1], collins.shape[0]))
    two = tmp_path / "two.jpg"
    cv2.imwrite(str(two), np.hstack([collins, hopper]))
    result = run_edge("enroll", "pair", str(two), "--set", f"store.path={tmp_path / 'db'}")
    assert result.returncode == 4 and "2 faces found" in result.stderr


def test_doctor_reports_board_backends_camera_broker(broker, tmp_path):
    result = run_edge("doctor", "--set", f"mqtt.port={broker.port}", "--set", "mqtt.host=127.0.0.1",
                      "--set", f"source={tmp_path / 'missing.mp4'}")
    assert result.returncode == 1, result.stderr      # the camera check failed: doctor says so in its exit code
    out = result.stdout
    assert "board: generic" in out and "onnxruntime:" in out
    assert re.search(r"^  embedding\S*: onnxruntime ", out, re.M), out     # embedding or embedding_<model id>
    assert "camera: FAIL cannot open" in out and "1 check(s) failed" in out
    assert f"127.0.0.1:{broker.port}: accepted the connection" in out


def test_models_list_and_verify():
    listed = run_edge("models", "list")
    assert listed.returncode == 0 and "embedding:" in listed.stdout and "CC0-1.0" in listed.stdout
    verify = run_edge("models", "verify")
    assert verify.returncode == 0 and "FAIL" not in verify.stdout
