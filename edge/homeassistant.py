"""Home Assistant MQTT discovery: the box as one device with its sensors, and their retained states.

Configs go to `<discovery_prefix>/<component>/<node_id>/<object_id>/config` (retained) on every
(re)connect and when Home Assistant announces itself on `<discovery_prefix>/status`. States are
derived from the events the daemon emits, so this module never looks inside the pipeline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re

from . import __version__
from .config import AppConfig
from .publish import Publisher
from .store import Store

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 16384       # our own configs are < 1 KiB; anything bigger on our topics is not ours


def presence_object_id(name: str) -> str:
    """Topic- and entity-id-safe id for a person; the hash keeps "Anne B" and "anne_b" apart."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:40] or "person"
    return f"presence_{slug}_{hashlib.sha1(name.encode()).hexdigest()[:6]}"


class HomeAssistant:
    def __init__(self, cfg: AppConfig, publisher: Publisher, store: Store):
        self.publisher = publisher
        self.store = store
        self.node_id = cfg.homeassistant.node_id or cfg.device
        self.embedding_model = cfg.identity.model
        self.discovery_prefix = cfg.homeassistant.discovery_prefix
        prefix = cfg.mqtt.prefix
        self.state_root = f"{prefix}/state"
        self.diagnostics_topic = f"{prefix}/diagnostics"
        self.device = {"identifiers": [f"edge_{self.node_id}"], "name": cfg.device,
                       "manufacturer": "edge-face-appliance", "model": f"Edge face appliance ({cfg.camera})",
                       "sw_version": __version__}
        self.origin = {"name": "edge-face-appliance", "sw_version": __version__}
        self.availability = [{"topic": publisher.status_topic, "payload_available": "online",
                              "payload_not_available": "offline"}]
        self.people: dict[str, str] = {}           # enrolled name -> object id of their presence sensor
        self.open_tracks: set[str] = set()         # confirmed and not yet left
        self.track_names: dict[str, str] = {}      # open track -> identified name
        self.states: dict[str, str] = {f"{self.state_root}/people_present": "0"}
        publisher.on_connected(self.announce)
        # Home Assistant's birth message: it restarted and may have lost what it knew.
        publisher.subscribe(f"{self.discovery_prefix}/status", self._on_home_assistant_status)
        # Our retained presence configs as the broker holds them: ones for people no longer enrolled
        # (forgotten while the daemon was down) are removed there.
        publisher.subscribe(f"{self.discovery_prefix}/binary_sensor/{self.node_id}/+/config", self._on_own_config)

    # --- discovery ---------------------------------------------------------------------------
    def config_topic(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node_id}/{object_id}/config"

    def _entity(self, object_id: str, name: str, state_topic: str, **extra) -> dict:
        return {"name": name, "unique_id": f"edge_{self.node_id}_{object_id}", "state_topic": state_topic,
                "availability": self.availability, "device": self.device, "origin": self.origin, **extra}

    def fixed_entities(self) -> list[tuple[str, str, dict]]:
        """(component, object_id, config) of the sensors every box has."""
        root = self.state_root
        diagnostic = {"entity_category": "diagnostic"}
        return [
            ("sensor", "people_present", self._entity("people_present", "People present", f"{root}/people_present",
                                                      state_class="measurement", icon="mdi:account-group")),
            ("sensor", "last_person", self._entity("last_person", "Last identified person", f"{root}/last_person",
                                                   icon="mdi:account-check")),
            ("sensor", "last_age", self._entity("last_age", "Last age", f"{root}/last_age",
                                                unit_of_measurement="years", state_class="measurement",
                                                icon="mdi:cake-variant")),
            ("sensor", "last_gender", self._entity("last_gender", "Last gender", f"{root}/last_gender",
                                                   device_class="enum", options=["female", "male"])),
            ("sensor", "fps", self._entity("fps", "Frame rate", self.diagnostics_topic,
                                           value_template="{{ value_json.fps }}", unit_of_measurement="fps",
                                           state_class="measurement", **diagnostic)),
            ("sensor", "status", self._entity("status", "Status", self.diagnostics_topic,
                                              value_template="{{ value_json.status }}", **diagnostic)),
        ]

    def person_entity(self, name: str) -> tuple[str, str, dict]:
        object_id = presence_object_id(name)
        return ("binary_sensor", object_id,
                self._entity(object_id, f"{name} present", f"{self.state_root}/presence/{object_id}",
                             device_class="occupancy", payload_on="ON", payload_off="OFF"))

    def announce(self) -> None:
        """Every config, then every state; runs on each (re)connect."""
        self.people = {name: presence_object_id(name) for name in self._enrolled()}
        for component, object_id, config in self.fixed_entities() + [self.person_entity(n) for n in self.people]:
            self.publisher.publish_now(self.config_topic(component, object_id), json.dumps(config))
        self._presence_states()
        for topic, value in self.states.items():
            self.publisher.publish_now(topic, value)

    def refresh_people(self) -> None:
        """Enrolled people changed (enroll, forget, fleet): add and remove their presence sensors."""
        enrolled = set(self._enrolled())
        for name in set(self.people) - enrolled:
            object_id = self.people.pop(name)
            # An empty retained config removes the entity; an empty retained state clears the broker.
            self.publisher.publish_now(self.config_topic("binary_sensor", object_id), "")
            topic = f"{self.state_root}/presence/{object_id}"
            self.states.pop(topic, None)
            self.publisher.publish_now(topic, "")
        for name in sorted(enrolled - set(self.people)):
            component, object_id, config = self.person_entity(name)
            self.people[name] = object_id
            self.publisher.publish_now(self.config_topic(component, object_id), json.dumps(config))
        self._presence_states()

    def _enrolled(self) -> list[str]:
        return sorted({str(n) for n in self.store.gallery(self.embedding_model).names})

    def _on_home_assistant_status(self, topic: str, payload: bytes, retained: bool) -> None:
        if payload == b"online":
            self.announce()

    def _on_own_config(self, topic: str, payload: bytes, retained: bool) -> None:
        object_id = topic.split("/")[-2]
        if not payload or len(payload) > MAX_CONFIG_BYTES or not object_id.startswith("presence_"):
            return
        if object_id not in self.people.values():
            log.info("Home Assistant: removing the presence sensor %s (person no longer enrolled)", object_id)
            self.publisher.publish_now(topic, "")
            self.publisher.publish_now(f"{self.state_root}/presence/{object_id}", "")

    # --- states ------------------------------------------------------------------------------
    def observe(self, event: dict) -> None:
        """Fold one daemon event into the state topics."""
        track, kind = event.get("track_id"), event.get("type")
        if kind == "face_appeared":
            self.open_tracks.add(track)
        elif kind == "face_left":
            self.open_tracks.discard(track)
            self.track_names.pop(track, None)
        elif kind == "face_identified":
            identity = event.get("identity")
            if identity:
                self.track_names[track] = identity["name"]
            self._set("last_person", identity["name"] if identity else "unknown")
            if event.get("age") is not None:
                self._set("last_age", f"{event['age']:.0f}")
            if event.get("gender"):
                self._set("last_gender", event["gender"]["label"])
        self._set("people_present", str(len(self.open_tracks)))
        self._presence_states()

    def tick(self, fps: float, faces: int, outbox: int) -> None:
        """Diagnostics, from the daemon's status timer."""
        status = "running" if fps > 0 else "no frames"
        self.publisher.publish_now(self.diagnostics_topic, json.dumps(
            {"fps": round(fps, 1), "faces": faces, "outbox": outbox, "status": status}))
        if set(self._enrolled()) != set(self.people):
            self.refresh_people()

    def close(self) -> None:
        """A clean stop: the retained diagnostics must not keep saying `running` while the box is stopped."""
        self.publisher.publish_now(self.diagnostics_topic, json.dumps(
            {"fps": 0.0, "faces": 0, "outbox": self.store.outbox_depth(), "status": "stopped"}))

    def _presence_states(self) -> None:
        present = set(self.track_names.values())
        for name, object_id in self.people.items():
            self._set(f"presence/{object_id}", "ON" if name in present else "OFF")

    def _set(self, key: str, value: str) -> None:
        topic = f"{self.state_root}/{key}"
        if self.states.get(topic) != value:
            self.states[topic] = value
            self.publisher.publish_now(topic, value)
