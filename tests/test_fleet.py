"""Fleet gallery sync: two real daemons and the real `edge` CLI on one real Mosquitto; conflicts; bad messages."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import time

import cv2
import numpy as np
import pytest

from conftest import DEMO_GALLERY, Subscriber, pump_until, run_edge
from edge.config import validate
from edge.fleet import Fleet, PersonVersion, decode, digest, encode
from edge.homeassistant import presence_object_id
from edge.publish import Publisher
from edge.store import Store
from edge_process import EdgeProcess, base_args

PHOTO = DEMO_GALLERY / "eileen_collins.jpg"
FLEET = "edge-fleet/gallery"


def still_video(path) -> str:
    """An empty, still scene: the daemons idle (motion gate) while the fleet test runs."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, (160, 120))
    for _ in range(15):
        writer.write(np.full((120, 160, 3), 90, np.uint8))
    writer.release()
    return str(path)


def box_settings(db, port: int, box: str) -> list[str]:
    return ["--set", f"store.path={db}", "--set", f"device={box}", "--set", f"mqtt.prefix={box}",
            "--set", "mqtt.host=127.0.0.1", "--set", f"mqtt.port={port}", "--set", "fleet.enabled=true"]


def embeddings(db, name: str) -> list[tuple[bytes, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT e.vector, e.source FROM embeddings e JOIN identities i ON i.id = e.identity_id "
                            "WHERE i.name = ? ORDER BY e.id", [name]).fetchall()


def fleet_row(db, name: str):
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT version, box, deleted FROM fleet_versions WHERE name = ?", [name]).fetchone()


def wait(condition, timeout: float = 40, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_daemons_share_enrollments_and_forgets_through_the_broker(broker, subscriber_factory, tmp_path):
    video = still_video(tmp_path / "still.mp4")
    db_a, db_b = tmp_path / "a.db", tmp_path / "b.db"
    watcher = subscriber_factory(broker.port, topic="#", client_id="fleet-watcher")
    daemons = {box: EdgeProcess(*base_args(db, port=broker.port, source=video, pace="realtime"),
                                "--set", "capture.loop=true", *box_settings(db, broker.port, box))
               for box, db in (("box-a", db_a), ("box-b", db_b))}
    try:
        watcher.wait_for(lambda s: s.payloads("box-a/status")[-1:] == [b"online"] and
                         s.payloads("box-b/status")[-1:] == [b"online"], timeout=30)

        # Enrolled on box A by the CLI (another process): box B gets the same embedding.
        enrolled = run_edge("enroll", "eileen_collins", str(PHOTO), *box_settings(db_a, broker.port, "box-a"))
        assert enrolled.returncode == 0, enrolled.stderr
        assert "fleet: shared" in enrolled.stdout, enrolled.stdout   # by the CLI, or by daemon A if it was first
        wait(lambda: embeddings(db_b, "eileen_collins"), what="box B to apply the enrollment")
        [(vector_a, source_a)] = embeddings(db_a, "eileen_collins")
        [(vector_b, source_b)] = embeddings(db_b, "eileen_collins")
        assert vector_a == vector_b and source_a.endswith("eileen_collins.jpg") and source_b == "fleet:box-a"
        version, box, deleted = fleet_row(db_b, "eileen_collins")
        assert (box, deleted) == ("box-a", 0) and fleet_row(db_a, "eileen_collins") == (version, box, 0)

        # The message: retained, embeddings only (no image, no file name), versioned.
        topic = f"{FLEET}/eileen_collins"
        message = json.loads(watcher.payloads(topic)[0])
        assert set(message) == {"schema", "op", "name", "version", "box", "dimensions", "embeddings"}
        assert (message["op"], message["box"], message["version"]) == ("enroll", "box-a", version)
        assert len(message["embeddings"]) == 1 and len(watcher.payloads(topic)[0]) < 2000
        # Box B's Home Assistant device gets a presence sensor for the person it learnt.
        sensor = f"homeassistant/binary_sensor/box-b/{presence_object_id('eileen_collins')}/config"
        assert watcher.wait_for(lambda s: any(s.payloads(sensor)), timeout=15)

        # Forgotten on box B: box A erases the person too; the tombstone is the retained message.
        forgot = run_edge("identities", "forget", "eileen_collins", *box_settings(db_b, broker.port, "box-b"))
        assert forgot.returncode == 0 and "fleet: shared" in forgot.stdout, forgot.stderr
        wait(lambda: not embeddings(db_a, "eileen_collins"), what="box A to apply the forget")
        later, box, deleted = fleet_row(db_a, "eileen_collins")
        assert later > version and (box, deleted) == ("box-b", 1)
        assert json.loads(watcher.payloads(topic)[-1])["op"] == "forget"
        assert watcher.wait_for(lambda s: s.payloads(f"homeassistant/binary_sensor/box-a/"
                                                     f"{presence_object_id('eileen_collins')}/config")[-1:] == [b""],
                                timeout=15)

        # Enrolled on A while the broker is down: queued in A's outbox, applied by B after the outage.
        broker.stop()
        offline = run_edge("enroll", "eileen_collins", str(PHOTO), *box_settings(db_a, broker.port, "box-a"))
        assert offline.returncode == 0 and "queued" in offline.stdout, offline.stdout + offline.stderr
        with sqlite3.connect(db_a) as conn:
            assert conn.execute("SELECT COUNT(*) FROM outbox WHERE retain = 1").fetchone()[0] == 1
        broker.start()
        wait(lambda: embeddings(db_b, "eileen_collins"), timeout=60, what="box B to apply the queued enrollment")
        assert fleet_row(db_b, "eileen_collins")[0] > later
    finally:
        for daemon in daemons.values():
            daemon.signal(signal.SIGTERM)
        codes = [daemon.wait() for daemon in daemons.values()]
    assert codes == [0, 0], [d.stderr()[-2000:] for d in daemons.values()]


def _cfg(box: str, port: int = 1883):
    return validate({"device": box, "fleet": {"enabled": True},
                     "mqtt": {"host": "127.0.0.1", "port": port, "prefix": box}})


def _message(name: str, version: int, box: str, vectors=None) -> tuple[PersonVersion, np.ndarray | None]:
    state = PersonVersion(name, version, box, int(vectors is None), digest(vectors))
    return decode(name, encode(state, vectors).encode(), 1 << 20, 100)


def test_conflicting_updates_resolve_the_same_way_in_any_order(tmp_path):
    rng = np.random.default_rng(7)
    first, second = rng.normal(size=(2, 128)).astype(np.float32), rng.normal(size=(1, 128)).astype(np.float32)
    messages = [_message("carol", 1000, "box-x", first), _message("carol", 1000, "box-y", second),
                _message("carol", 999, "box-z")]          # an older forget
    outcomes = []
    for order, box in (((0, 1, 2), "one"), ((2, 1, 0), "two"), ((1, 2, 0), "three")):
        store = Store(tmp_path / f"{box}.db")
        fleet = Fleet(_cfg(box), store)
        for i in order:
            fleet.receive(*messages[i])
        outcomes.append((store.fleet_states()["carol"]["box"], store.person_embeddings("dlib_resnet_v1")["carol"].tobytes()))
    # Same version: the higher box id wins, whatever the order of arrival; the older forget never wins.
    assert outcomes == [("box-y", second.tobytes())] * 3


def test_local_changes_are_found_queued_retained_and_dropped_with_the_person(tmp_path):
    store = Store(tmp_path / "edge.db")
    fleet = Fleet(_cfg("box-a"), store)
    store.enroll("dave", np.ones((2, 128), np.float32), ["a.jpg", "b.jpg"], model="dlib_resnet_v1")   # any writer, no hook needed
    assert len(fleet.share_local_changes()) == 1
    assert fleet.share_local_changes() == []              # nothing new
    [queued] = store.pending()
    message = json.loads(queued.payload)
    assert queued.retain and queued.topic == f"{FLEET}/dave" and message["op"] == "enroll"
    assert len(message["embeddings"]) == 2 and "a.jpg" not in queued.payload
    # Forgotten before delivery: its embeddings leave the queue, the tombstone takes their place.
    store.forget("dave")
    [tombstone] = fleet.share_local_changes()
    [queued] = store.pending()
    assert queued.id == tombstone and json.loads(queued.payload)["op"] == "forget"    # the enroll row is gone
    assert json.loads(queued.payload)["version"] > message["version"]





def test_bad_messages_are_ignored_and_logged_once_and_stale_ones_are_overwritten(broker, tmp_path, caplog):
    store = Store(tmp_path / "edge.db")
    cfg = _cfg("box-a", broker.port)
    publisher = Publisher(cfg.mqtt, cfg.device, store)
    fleet = Fleet(cfg, store, publisher)
    publisher.start()
    assert pump_until(publisher, publisher.connected.is_set)
    good = json.loads(encode(PersonVersion("erin", 5000, "box-b", 0, ""), np.ones((1, 128), np.float32)))
    bad = {
        "huge": b"x" * (cfg.fleet.max_message_bytes + 1),
        "notjson": b"{not json",
        "nan": json.dumps({**good, "name": "nan", "embeddings": [
            __import__("base64").b64encode(np.full(128, np.nan, "<f4").tobytes()).decode()]}).encode(),
        "dims": json.dumps({**good, "name": "dims", "dimensions": 512}).encode(),
        "short": json.dumps({**good, "name": "short", "embeddings": ["AAAA"]}).encode(),
        "mismatch": json.dumps({**good, "name": "somebody-else"}).encode(),
        "future": json.dumps({**good, "name": "future", "version": int(time.time() * 1000) + 10 ** 10}).encode(),
        "boolversion": json.dumps({**good, "name": "boolversion", "version": True}).encode(),
        "badbox": json.dumps({**good, "name": "badbox", "box": "a/b"}).encode(),
        "op": json.dumps({**good, "name": "op", "op": "drop_tables"}).encode(),
    }
    sender = Subscriber(broker.port, topic="nothing", client_id="fleet-sender")
    caplog.set_level(logging.WARNING, logger="edge.fleet")
    for _ in range(2):                                      # every bad message twice: logged once
        for name, payload in bad.items():
            sender.client.publish(f"{FLEET}/{name}", payload, qos=1).wait_for_publish(5)
    sender.client.publish(f"{FLEET}/erin", json.dumps(good), qos=1, retain=True).wait_for_publish(5)
    assert pump_until(publisher, lambda: fleet.applied == 1)
    pump_until(publisher, lambda: False, timeout=0.5)
    assert set(store.person_embeddings("dlib_resnet_v1")) == {"erin"}
    warnings = [r.getMessage() for r in caplog.records if "fleet: ignored" in r.getMessage()]
    assert len(warnings) == len(bad), warnings
    assert all(len(w) < 300 for w in warnings)

    # A late message older than what we hold (a box that was offline for long) takes the retained slot:
    # we put the newer state back so that boxes joining later do not learn the stale one.
    old = json.loads(encode(PersonVersion("erin", 4000, "box-c", 1, ""), None))
    sender.client.publish(f"{FLEET}/erin", json.dumps(old), qos=1, retain=True).wait_for_publish(5)
    sender.close()

    def retained_version():
        newcomer = Subscriber(broker.port, topic=f"{FLEET}/erin", client_id=f"newcomer-{time.monotonic()}")
        time.sleep(0.3)
        newcomer.close()
        held = newcomer.payloads(f"{FLEET}/erin")
        return json.loads(held[-1])["version"] if held else None
    assert pump_until(publisher, lambda: retained_version() == 5000)
    assert set(store.person_embeddings("dlib_resnet_v1")) == {"erin"} and store.fleet_states()["erin"]["version"] == 5000
    publisher.stop()


@pytest.mark.parametrize("name", ["", "a/b", "x" * 101, " padded"])
def test_invalid_names_are_refused(name):
    state = PersonVersion(name, 1, "box", 1, "")
    with pytest.raises(ValueError):
        decode(name, encode(state, None).encode(), 1 << 20, 100)
