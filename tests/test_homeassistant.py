"""Home Assistant MQTT discovery on a real Mosquitto: configs, retained states, removal of a person's entity."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from conftest import Subscriber, free_port, pump_until
from edge.config import validate
from edge.homeassistant import HomeAssistant, display_name, presence_object_id
from edge.publish import Publisher
from edge.store import Store
from edge_process import EdgeProcess, base_args

# Keys Home Assistant's MQTT discovery needs to tie an entity to one device and its availability.
REQUIRED = ("name", "unique_id", "availability", "device", "origin")


def retained(port: int, topic: str, client_id: str, settle_s: float = 1.0) -> dict[str, bytes]:
    """What the broker holds retained under `topic`, as a newcomer (Home Assistant after a restart) sees it."""
    subscriber = Subscriber(port, topic=topic, client_id=client_id)
    time.sleep(settle_s)
    subscriber.close()
    with subscriber.lock:
        held = {t: p for t, p, was_retained in subscriber.messages if was_retained}
    return {t: p for t, p in held.items() if p}


def configs(messages: dict[str, bytes]) -> dict[str, dict]:
    return {t: json.loads(p) for t, p in messages.items() if t.endswith("/config")}


@pytest.mark.slow
def test_daemon_announces_device_entities_and_states(broker, subscriber_factory, enrolled_db):
    live = subscriber_factory(broker.port, topic="#", client_id="ha-live")
    daemon = EdgeProcess(*base_args(enrolled_db, port=broker.port, pace="every_frame"))
    assert daemon.wait() == 0, daemon.stderr()

    found = configs(retained(broker.port, "homeassistant/#", "ha-newcomer"))
    by_id = {t.split("/")[3]: (t.split("/")[1], c) for t, c in found.items()}
    person = presence_object_id("eileen_collins")
    assert {"people_present", "last_person", "last_age", "last_gender", "fps", "status", "face", person} \
        == set(by_id)          # no image entity while snapshots are off
    for topic, config in found.items():
        assert topic.startswith("homeassistant/") and topic.split("/")[2] == "test-box"
        for key in REQUIRED:
            assert config.get(key), f"{topic}: {key} missing"
        assert config["availability"] == [{"topic": "door1/status", "payload_available": "online",
                                           "payload_not_available": "offline"}]
        assert config["device"]["identifiers"] == ["edge_test-box"] and config["device"]["name"] == "test-box"
        assert "configuration_url" not in config["device"]          # the status page is off
        assert config["state_topic"].startswith("door1/")
    assert len({c["unique_id"] for c in found.values()}) == len(found)
    assert by_id[person][0] == "binary_sensor" and by_id[person][1]["device_class"] == "occupancy"
    assert by_id[person][1]["name"] == "Eileen Collins present"
    assert by_id["fps"][1]["entity_category"] == by_id["status"][1]["entity_category"] == "diagnostic"
    assert by_id["last_gender"][1]["device_class"] == "enum"
    assert by_id["last_gender"][1]["options"] == ["female", "male"]
    assert by_id["face"][0] == "event" and by_id["face"][1]["event_types"] == ["identified", "unknown"]
    last_person = by_id["last_person"][1]
    assert last_person["force_update"] is True and last_person["json_attributes_topic"].startswith("door1/state/")

    # Every decision fires the event entity, with the person (or none) and the estimates as attributes.
    decided = [e for e in daemon.events if e["type"] == "face_identified"]
    fired = [json.loads(p) for p in live.payloads(by_id["face"][1]["state_topic"])]
    assert len(fired) == len(decided) >= 3
    for event, payload in zip(decided, fired):
        assert payload["event_type"] in by_id["face"][1]["event_types"]
        assert payload["track_id"] == event["track_id"] and payload["camera"] == "camera"
        if event["identity"]:
            assert payload["event_type"] == "identified" and payload["name"] == event["identity"]["name"]
            assert payload["display_name"] == "Eileen Collins" and 0.4 < payload["similarity"] <= 1
        else:
            assert payload["event_type"] == "unknown" and payload["name"] is None
        assert payload["gender"] == event["gender"]["label"] and payload["age"] == round(event["age"])
    # The last person changes on every arrival: never Home Assistant's "unknown", a stranger is "stranger",
    # and each arrival brings new attributes (arrival number, time), so two strangers in a row are two updates.
    states = live.payloads("door1/state/last_person")
    assert len(states) == len(decided) and b"unknown" not in states
    assert states == [e["identity"]["name"].encode() if e["identity"] else b"stranger" for e in decided]
    attributes = [json.loads(p) for p in live.payloads(last_person["json_attributes_topic"])]
    assert [a["arrival"] for a in attributes] == list(range(1, len(decided) + 1))
    assert [a["person"] for a in attributes] == [e["identity"]["name"] if e["identity"] else None for e in decided]

    # States as they happened, then as the broker keeps them after a clean stop.
    presence_topic = by_id[person][1]["state_topic"]
    assert b"eileen_collins" in live.payloads("door1/state/last_person")
    assert live.payloads(presence_topic)[:1] == [b"OFF"] and b"ON" in live.payloads(presence_topic)
    # Presence goes first in an identification's burst of messages (Home Assistant handles them in order:
    # last, it changed ~16 ms after the decision on a real Home Assistant, first ~5 ms).
    with live.lock:
        order = [(t, p) for t, p, _ in live.messages if t in (presence_topic, "door1/face_event")]
    first_identified = next(i for i, (t, p) in enumerate(order) if t == "door1/face_event" and b'"identified"' in p)
    assert order.index((presence_topic, b"ON")) < first_identified
    assert max(int(p) for p in live.payloads("door1/state/people_present")) >= 1
    assert b"female" in live.payloads("door1/state/last_gender")
    assert all(0 < float(p) < 120 for p in live.payloads("door1/state/last_age"))
    diagnostics = [json.loads(p) for p in live.payloads("door1/diagnostics")]
    assert diagnostics and all(d["fps"] >= 0 and d["status"] in ("running", "no frames") for d in diagnostics[:-1])
    kept = retained(broker.port, "door1/#", "state-newcomer")
    # A clean stop leaves "stopped", not a retained "running" from a box that is gone.
    assert json.loads(kept["door1/diagnostics"])["status"] == diagnostics[-1]["status"] == "stopped"
    assert kept[presence_topic] == b"OFF" and kept["door1/state/people_present"] == b"0"
    assert kept["door1/status"] == b"offline"
    # Snapshots are off by default: no face image left the box.
    assert not [t for t, _, _ in live.messages if "/snapshot" in t]


def _box(tmp_path, port: int, device: str = "hall", **sections) -> tuple[Store, Publisher, HomeAssistant]:
    cfg = validate({"device": device, "mqtt": {"host": "127.0.0.1", "port": port, "prefix": "hall"},
                    "identity": {"model": "dlib_resnet_v1"}, **sections})   # the tests enrol 128-D dlib vectors
    store = Store(tmp_path / "edge.db")
    publisher = Publisher(cfg.mqtt, cfg.device, store)
    return store, publisher, HomeAssistant(cfg, publisher, store)


def _running_box_with(tmp_path, port: int, people: tuple[str, ...], seed: int):
    """_box with `people` enrolled (one random 128-D vector each), connected, their entities announced."""
    store, publisher, ha = _box(tmp_path, port)
    rng = np.random.default_rng(seed)
    for name in people:
        store.enroll(name, rng.normal(size=(1, 128)).astype(np.float32), ["photo.jpg"], model="dlib_resnet_v1")
    publisher.start()
    assert pump_until(publisher, lambda: ha.people.keys() == set(people))
    return store, publisher, ha





@pytest.mark.slow
def test_forgotten_person_loses_their_entity_even_when_forgotten_offline(broker, tmp_path):
    store, publisher, ha = _running_box_with(tmp_path, broker.port, ("alice", "Bob Smith"), seed=1)
    bob = f"homeassistant/binary_sensor/hall/{presence_object_id('Bob Smith')}/config"
    alice = f"homeassistant/binary_sensor/hall/{presence_object_id('alice')}/config"
    pump_until(publisher, lambda: False, timeout=0.5)
    assert {alice, bob} <= set(retained(broker.port, "homeassistant/#", "before"))
    assert json.loads(retained(broker.port, bob, "bob")[bob])["name"] == "Bob Smith present"

    # Forgotten while running: the next status tick removes the entity (empty retained config).
    store.forget("Bob Smith")
    ha.tick(fps=3.0, faces=0, outbox=0)
    pump_until(publisher, lambda: False, timeout=0.5)
    held = retained(broker.port, "homeassistant/#", "after-forget")
    assert alice in held and bob not in held

    # Forgotten while the daemon was down: the next start finds the stale retained config and clears it.
    publisher.stop()
    store.forget("alice")
    store.close()
    store, publisher, ha = _box(tmp_path, broker.port)
    publisher.start()
    assert pump_until(publisher, lambda: alice not in retained(broker.port, "homeassistant/#", "restart", 0.3))
    assert "homeassistant/sensor/hall/people_present/config" in retained(broker.port, "homeassistant/#", "fixed")
    publisher.stop()


def test_configs_come_back_after_broker_loses_them_and_on_home_assistant_birth(broker, tmp_path):
    store, publisher, ha = _box(tmp_path, broker.port)
    publisher.start()
    topic = "homeassistant/sensor/hall/people_present/config"
    assert pump_until(publisher, lambda: publisher.connected.is_set() and ha.states)
    pump_until(publisher, lambda: False, timeout=0.5)
    # Someone wipes the retained config (Home Assistant's "delete device", a broker without persistence)...
    wiper = Subscriber(broker.port, topic="nothing", client_id="wiper")
    wiper.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    assert topic not in retained(broker.port, "homeassistant/#", "wiped")
    # ... Home Assistant's birth message brings every config back,
    wiper.client.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
    assert pump_until(publisher, lambda: topic in retained(broker.port, "homeassistant/#", "birth", 0.3))
    # ... and so does a reconnect after the broker restarted without them.
    wiper.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    wiper.close()
    broker.stop()
    assert pump_until(publisher, lambda: not publisher.connected.is_set())
    broker.start()
    assert pump_until(publisher, lambda: publisher.connected.is_set(), timeout=40)
    assert pump_until(publisher, lambda: topic in retained(broker.port, "homeassistant/#", "reconnect", 0.3))
    publisher.stop()


def identified(track: str, name: str | None) -> list[dict]:
    """A track's events as the daemon emits them (only the fields Home Assistant reads)."""
    identity = {"name": name, "similarity": 0.8} if name else None
    return [{"type": "face_appeared", "track_id": track},
            {"type": "face_identified", "track_id": track, "identity": identity, "age": 30.4,
             "gender": {"label": "female", "confidence": 0.9}, "camera": "door",
             "timestamp": "2026-11-30T06:00:00+00:00"}]


def test_forgotten_person_is_erased_from_the_last_identified_person(broker, tmp_path):
    store, publisher, ha = _running_box_with(tmp_path, broker.port, ("alice", "bob"), seed=2)
    state, attributes = "hall/state/last_person", "hall/state/last_person_attributes"
    for event in identified("t1", "bob") + identified("t2", None) + identified("t3", "alice"):
        ha.observe(event)
    pump_until(publisher, lambda: False, timeout=0.5)
    held = retained(broker.port, "hall/state/#", "before-forget")
    # The name is the attribute `person`: Home Assistant drops a json attribute called `name`.
    assert held[state] == b"alice" and json.loads(held[attributes])["person"] == "alice"
    assert "name" not in json.loads(held[attributes])

    # Forgotten while running: the next status tick erases the name (Home Assistant shows no value).
    store.forget("alice")
    ha.tick(fps=3.0, faces=0, outbox=0)
    pump_until(publisher, lambda: False, timeout=0.5)
    held = retained(broker.port, "hall/state/#", "after-forget")
    assert held[state] == b"None" and json.loads(held[attributes]) == {}
    assert b"alice" not in b"".join(held.values())

    # Forgotten while the daemon was down: the retained name is found and erased at the next start.
    ha.observe(identified("t4", "bob")[1])
    pump_until(publisher, lambda: retained(broker.port, state, "bob-last", 0.3).get(state) == b"bob")
    publisher.stop()
    store.forget("bob")
    store.close()
    store, publisher, ha = _box(tmp_path, broker.port)
    publisher.start()
    assert pump_until(publisher, lambda: retained(broker.port, state, "restart", 0.3).get(state) == b"None")
    assert b"bob" not in b"".join(retained(broker.port, "hall/state/#", "restart-all").values())
    # A stranger as the last person is no name to erase: it stays.
    ha.observe(identified("t5", None)[1])
    pump_until(publisher, lambda: False, timeout=0.5)
    publisher.stop()
    store, publisher, ha = _box(tmp_path, broker.port)
    publisher.start()
    pump_until(publisher, lambda: False, timeout=1.0)
    assert retained(broker.port, state, "stranger-kept").get(state) == b"stranger"
    publisher.stop()


def test_status_page_link_snapshot_image_and_display_names(broker, tmp_path):
    port = free_port()
    store, publisher, ha = _box(tmp_path, broker.port, web={"enabled": True, "port": port},
                                snapshots={"enabled": True},
                                homeassistant={"display_names": {"eileen_collins": "Aunt Eileen"}})
    rng = np.random.default_rng(3)
    for name in ("eileen_collins", "grace_hopper", "Bob  McDonald"):
        store.enroll(name, rng.normal(size=(1, 128)).astype(np.float32), ["photo.jpg"], model="dlib_resnet_v1")
    publisher.start()
    assert pump_until(publisher, lambda: len(ha.people) == 3)
    pump_until(publisher, lambda: False, timeout=0.5)
    found = configs(retained(broker.port, "homeassistant/#", "links"))
    assert {c["device"]["configuration_url"] for c in found.values()} == {f"http://127.0.0.1:{port}/"}
    names = {c["name"] for t, c in found.items() if "/binary_sensor/" in t}
    assert names == {"Aunt Eileen present", "Grace Hopper present", "Bob McDonald present"}
    image = found["homeassistant/image/hall/last_snapshot/config"]
    assert image["content_type"] == "image/jpeg" and "state_topic" not in image
    # The image topic is a filter over every snapshot topic: the newest snapshot is the entity's picture.
    watcher = Subscriber(broker.port, topic=image["image_topic"], client_id="ha-image")
    jpeg = b"\xff\xd8\xff\xe0 a face"
    publisher.publish_now("hall/snapshot/grace_hopper", jpeg, retain=False)
    assert watcher.wait_for(lambda w: w.payloads("hall/snapshot/grace_hopper") == [jpeg], timeout=5)
    watcher.close()
    publisher.stop()

    # Snapshots switched off later: the image entity is removed, the others stay.
    store.close()
    store, publisher, ha = _box(tmp_path, broker.port)
    publisher.start()
    assert pump_until(publisher, lambda: "homeassistant/image/hall/last_snapshot/config"
                      not in retained(broker.port, "homeassistant/#", "no-image", 0.3))
    assert "homeassistant/event/hall/face/config" in retained(broker.port, "homeassistant/#", "event-stays")
    publisher.stop()


def test_display_names():
    assert display_name("eileen_collins") == "Eileen Collins"
    assert display_name("alice") == "Alice"
    assert display_name("Bob Smith") == "Bob Smith" and display_name("McDonald_jr") == "McDonald jr"
    assert display_name("eileen_collins", {"eileen_collins": "Aunt Eileen"}) == "Aunt Eileen"
    assert display_name("__") == "__"
