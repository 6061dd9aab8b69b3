"""Snapshots: the best crop of a track as a JPEG over a real broker, thumbnails, their retention and erasure."""

from __future__ import annotations

import os
import shutil
import stat
import time

import cv2
import numpy as np
import pytest

from conftest import run_edge
from edge.config import validate
from edge.identify import match_one
from edge.models.loader import load_models
from edge.pipeline import analyze_faces
from edge.publish import Publisher
from edge.snapshots import Snapshots, crop_face, person_slug
from edge.store import Store
from edge_process import EdgeProcess, base_args


@pytest.mark.slow
def test_best_crop_of_each_track_is_published_and_kept_only_when_switched_on(broker, subscriber_factory,
                                                                           enrolled_db, tmp_path):
    db = tmp_path / "edge.db"
    shutil.copy(enrolled_db, db)
    subscriber = subscriber_factory(broker.port, topic="door1/snapshot/#", client_id="snapshots")
    daemon = EdgeProcess(*base_args(db, port=broker.port, pace="every_frame"), "--set", "snapshots.enabled=true",
                         "--set", "snapshots.keep_thumbnails=true", "--set", "homeassistant.enabled=false")
    assert daemon.wait() == 0, daemon.stderr()
    identified = {e["track_id"]: e for e in daemon.events if e["type"] == "face_identified"}
    assert subscriber.wait_for(lambda s: len(s.messages) >= len(identified), timeout=10)

    collins = subscriber.payloads("door1/snapshot/eileen_collins")
    assert collins, [t for t, _, _ in subscriber.messages]
    cfg = validate({"store": {"path": str(db)}})
    models = load_models(cfg)
    gallery = Store(db).gallery(cfg.identity.model)
    for jpeg in collins:
        assert jpeg[:2] == b"\xff\xd8"
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert max(image.shape[:2]) <= 320 and image.shape[0] < 480      # a crop, not the frame
        # The crop holds the person it is named after: the models recognise her in it.
        _, faces = analyze_faces(models, image)
        assert len(faces) == 1
        assert match_one(faces[0].embedding, gallery, cfg.identity.threshold,
                         cfg.identity.metric).name == "eileen_collins"
    # The unenrolled person's track is published as unknown.
    assert subscriber.payloads("door1/snapshot/unknown")

    # Thumbnails: owner-only files, one per track, erased with the person.
    folder = tmp_path / "thumbnails"
    files = sorted(folder.glob("*.jpg"))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert {f.name.split("_")[0] for f in files} <= {e["track_id"] for e in daemon.events}
    hers = list(folder.glob(f"*_{person_slug('eileen_collins')}.jpg"))
    assert hers and len(hers) < len(files)
    forgot = run_edge("identities", "forget", "eileen_collins", "--set", f"store.path={db}")
    assert forgot.returncode == 0, forgot.stderr
    assert not list(folder.glob(f"*_{person_slug('eileen_collins')}.jpg"))
    assert len(list(folder.glob("*.jpg"))) == len(files) - len(hers)


class _Event:
    def __init__(self, kind, track, name, snapshot):
        self.payload = {"type": kind, "track_id": track, "identity": {"name": name} if name else None}
        self.snapshot = snapshot


def test_unchanged_crop_is_sent_once_and_thumbnails_expire(broker, subscriber_factory, tmp_path):
    cfg = validate({"store": {"path": str(tmp_path / "edge.db")}, "mqtt": {"host": "127.0.0.1", "port": broker.port},
                    "snapshots": {"enabled": True, "keep_thumbnails": True, "thumbnail_retention_days": 2}})
    subscriber = subscriber_factory(broker.port, topic="edge/snapshot/#", client_id="snapshot-rules")
    publisher = Publisher(cfg.mqtt, cfg.device, Store(cfg.store.path))
    publisher.start()
    assert publisher.connected.wait(10)
    snapshots = Snapshots(cfg, publisher)
    crop = np.full((40, 30, 3), 128, np.uint8)
    better = np.full((60, 45, 3), 100, np.uint8)
    snapshots.observe(_Event("face_appeared", "t1", None, None))
    snapshots.observe(_Event("face_identified", "t1", None, crop))
    snapshots.observe(_Event("face_identified", "t1", "ann", crop))       # same crop, now with a name: kept
    snapshots.observe(_Event("face_left", "t1", "ann", better))           # a better crop by the end: sent
    assert subscriber.wait_for(lambda s: len(s.messages) >= 2, timeout=10)
    time.sleep(0.3)
    assert [t for t, _, _ in subscriber.messages] == ["edge/snapshot/unknown", "edge/snapshot/ann"]
    assert snapshots.published == 2
    files = list((tmp_path / "thumbnails").glob("*.jpg"))
    assert [f.name for f in files] == [f"t1_{person_slug('ann')}.jpg"]   # the unknown one was replaced
    assert cv2.imdecode(np.frombuffer(files[0].read_bytes(), np.uint8), cv2.IMREAD_COLOR).shape == (60, 45, 3)
    # Retention: a thumbnail older than thumbnail_retention_days goes at the next purge.
    three_days_ago = time.time() - 3 * 86400
    os.utime(files[0], (three_days_ago, three_days_ago))
    assert snapshots.purge() == 1 and not files[0].exists()
    # Switched off: nothing is published, and the purge erases whatever was kept.
    (tmp_path / "thumbnails" / "x_y.jpg").write_bytes(b"old")
    off = Snapshots(validate({"store": {"path": str(tmp_path / "edge.db")}}), publisher)
    off.observe(_Event("face_identified", "t2", "bo", crop))
    assert off.purge() == 1 and not list((tmp_path / "thumbnails").glob("*.jpg"))
    publisher.stop()
    assert len(subscriber.messages) == 2 and off.published == 0
    # Not retained unless snapshots.retain: a newcomer finds no face image on the broker.
    newcomer = subscriber_factory(broker.port, topic="edge/snapshot/#", client_id="snapshot-newcomer")
    time.sleep(0.5)
    assert newcomer.messages == []


def test_crop_is_clipped_to_the_frame_and_shrunk():
    cfg = validate({"snapshots": {"max_size": 64, "margin": 0.5}}).snapshots
    frame = np.zeros((480, 640, 3), np.uint8)
    assert crop_face(frame, (0, 0, 100, 100), cfg).shape == (64, 64, 3)           # 150x150 clipped, shrunk
    assert crop_face(frame, (600, 440, 40, 40), cfg).shape == (60, 60, 3)         # margin clipped at the edge
