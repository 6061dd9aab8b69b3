"""Home Assistant MQTT discovery on a real Mosquitto: configs, retained states, removal of a person's entity."""

from __future__ import annotations

import json
import time

import numpy as np

from conftest import Subscriber, pump_until
from edge.config import validate
from edge.homeassistant import HomeAssistant, presence_object_id
from edge.publish import Publisher
from edge.store import Store
from edge_process import EdgeProcess, base_args

# Keys Home Assistant's MQTT discovery needs to tie an entity to one device and its availability.
REQUIRED = ("name", "unique_id", "state_topic", "availability", "device", "origin")


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


def test_daemon_announces_device_entities_and_states(broker, subscriber_factory, enrolled_db):
    live = subscriber_factory(broker.port, topic="#", client_id="ha-live")
    daemon = EdgeProcess(*base_args(enrolled_db, port=broker.port, pace="every_frame"))
    assert daemon.wait() == 0, daemon.stderr()

    found = configs(retained(broker.port, "homeassistant/#", "ha-newcomer"))
    by_id = {t.split("/")[3]: (t.split("/")[1], c) for t, c in found.items()}
    person = presence_object_id("eileen_collins")
    assert {"people_present", "last_person", "last_age", "last_gender", "fps", "status", person} <= set(by_id)
    for topic, config in found.items():
        assert topic.startswith("homeassistant/") and topic.split("/")[2] == "test-box"
        for key in REQUIRED:
            assert config.get(key), f"{topic}: {key} missing"
        assert config["availability"] == [{"topic": "door1/status", "payload_available": "online",
                                           "payload_not_available": "offline"}]
        assert config["device"]["identifiers"] == ["edge_test-box"] and config["device"]["name"] == "test-box"
        assert config["state_topic"].startswith("door1/")
    assert len({c["unique_id"] for c in found.values()}) == len(found)
    assert by_id[person][0] == "binary_sensor" and by_id[person][1]["device_class"] == "occupancy"
    assert by_id["fps"][1]["entity_category"] == by_id["status"][1]["entity_category"] == "diagnostic"
    assert by_id["last_gender"][1]["device_class"] == "enum"

    # States as they happened, then as the broker keeps them after a clean stop.
    presence_topic = by_id[person][1]["state_topic"]
    assert b"eileen_collins" in live.payloads("door1/state/last_person")
    assert live.payloads(presence_topic)[:1] == [b"OFF"] and b"ON" in live.payloads(presence_topic)
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


def _box(tmp_path, port: int, device: str = "hall") -> tuple[Store, Publisher, HomeAssistant]:
    cfg = validate({"device": device, "mqtt": {"host": "127.0.0.1", "port": port, "prefix": "hall"}})
    store = Store(tmp_path / "edge.db")
    publisher = Publisher(cfg.mqtt, cfg.device, store)
    return store, publisher, HomeAssistant(cfg, publisher, store)





def test_forgotten_person_loses_their_entity_even_when_forgotten_offline(broker, tmp_path):
    store, publisher, ha = _box(tmp_path, broker.port)
    rng = np.random.default_rng(1)
    for name in ("alice", "Bob Smith"):
        store.enroll(name, rng.normal(size=(1, 128)).astype(np.float32), ["photo.jpg"], model="dlib_resnet_v1")
    publisher.start()
    bob = f"homeassistant/binary_sensor/hall/{presence_object_id('Bob Smith')}/config"
    alice = f"homeassistant/binary_sensor/hall/{presence_object_id('alice')}/config"
    assert pump_until(publisher, lambda: ha.people.keys() == {"alice", "Bob Smith"})
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
