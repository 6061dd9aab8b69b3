"""Home Assistant MQTT discovery: the box as one device with its sensors, and their retained states.

Configs go to `<discovery_prefix>/<component>/<node_id>/<object_id>/config` (retained) on every
(re)connect and when Home Assistant announces itself on `<discovery_prefix>/status`. States are
derived from the events the daemon emits, so this module never looks inside the pipeline.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time

from . import __version__
from .config import AppConfig
from .publish import Publisher
from .snapshots import name_parts
from .store import Store

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 16384       # our own configs are < 1 KiB; anything bigger on our topics is not ours
# However many births arrive (anyone may publish on <discovery_prefix>/status), one re-announcement per
# this many seconds: 2000 births/s used to queue ~95k configs ahead of the events (latency 0.01 -> 30 s).
ANNOUNCE_EVERY_S = 5.0

MAX_STATE_BYTES = 1024         # a name is at most 100 characters
# Home Assistant reads the payload "unknown" as its own "no value" and "None" as "clear the state", so an
# unrecognised face is called by a word of our own.
STRANGER = "stranger"
NO_VALUE = "None"
FACE_EVENT_TYPES = ["identified", "unknown"]


def display_name(name: str, overrides: dict[str, str] | None = None) -> str:
    """The name Home Assistant shows: an override, else "eileen_collins" -> "Eileen Collins" (a name typed
    with capitals, "Bob Smith" or "McDonald", is kept as typed apart from underscores)."""
    if overrides and name in overrides:
        return overrides[name]
    spaced = " ".join(name.replace("_", " ").split()) or name
    return spaced.title() if spaced == spaced.lower() else spaced


def status_page_url(cfg: AppConfig) -> str | None:
    """Where Home Assistant's device page links to: the configured URL, else the status page when served."""
    if cfg.homeassistant.configuration_url:
        return cfg.homeassistant.configuration_url
    if not cfg.web.enabled:
        return None
    host = cfg.web.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()      # listening everywhere: the box's name is what others can reach
    return f"http://{f'[{host}]' if ':' in host else host}:{cfg.web.port}/"


def presence_object_id(name: str) -> str:
    """Topic- and entity-id-safe id for a person (unchanged across versions: Home Assistant keys on it)."""
    return "presence_" + "_".join(name_parts(name))


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
        # Not retained: an event, not a state (Home Assistant keeps the last one itself).
        self.face_event_topic = f"{prefix}/face_event"
        self.last_person_attributes_topic = f"{self.state_root}/last_person_attributes"
        # The image entity follows every snapshot topic (<prefix>/snapshot/<name>), so it shows the latest.
        self.snapshot_topic = f"{prefix}/snapshot/+" if cfg.snapshots.enabled else None
        self.display_names = cfg.homeassistant.display_names
        self.camera = cfg.camera
        self.device = {"identifiers": [f"edge_{self.node_id}"], "name": cfg.device,
                       "manufacturer": "edge-face-appliance", "model": f"Edge face appliance ({cfg.camera})",
                       "sw_version": __version__}
        url = status_page_url(cfg)
        if url:
            self.device["configuration_url"] = url
        self.arrivals = 0                          # face_identified events so far, in attributes
        self.origin = {"name": "edge-face-appliance", "sw_version": __version__}
        self.availability = [{"topic": publisher.status_topic, "payload_available": "online",
                              "payload_not_available": "offline"}]
        self.people: dict[str, str] = {}           # enrolled name -> object id of their presence sensor
        self.open_tracks: set[str] = set()         # confirmed and not yet left
        self.track_names: dict[str, str] = {}      # open track -> identified name
        self.states: dict[str, str] = {f"{self.state_root}/people_present": "0"}
        publisher.on_connected(self.announce)
        # Home Assistant's birth message: it restarted and may have lost what it knew. Births only mark
        # a re-announcement as due; _announce_if_due() sends it, coalesced, from the publisher's pump.
        self._announced_at = float("-inf")
        self._announce_due = False
        self.births = 0
        publisher.subscribe(f"{self.discovery_prefix}/status", self._on_home_assistant_status)
        publisher.on_pump(self._announce_if_due)
        # Our retained presence configs as the broker holds them: ones for people no longer enrolled
        # (forgotten while the daemon was down) are removed there.
        publisher.subscribe(f"{self.discovery_prefix}/binary_sensor/{self.node_id}/+/config", self._on_own_config)
        # Our retained last person as the broker holds it: someone forgotten while the daemon was down is erased.
        publisher.subscribe(f"{self.state_root}/last_person", self._on_own_last_person)

    # --- discovery ---------------------------------------------------------------------------
    def config_topic(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node_id}/{object_id}/config"

    def _entity(self, object_id: str, name: str, state_topic: str | None, **extra) -> dict:
        config = {"name": name, "unique_id": f"edge_{self.node_id}_{object_id}", "state_topic": state_topic,
                  "availability": self.availability, "device": self.device, "origin": self.origin, **extra}
        return {key: value for key, value in config.items() if value is not None}

    def fixed_entities(self) -> list[tuple[str, str, dict]]:
        """(component, object_id, config) of the sensors every box has."""
        root = self.state_root
        diagnostic = {"entity_category": "diagnostic"}
        return [
            ("sensor", "people_present", self._entity("people_present", "People present", f"{root}/people_present",
                                                      state_class="measurement", icon="mdi:account-group")),
            # force_update + attributes (time, track, arrival count): two strangers in a row are two updates.
            ("sensor", "last_person", self._entity("last_person", "Last identified person", f"{root}/last_person",
                                                   icon="mdi:account-check", force_update=True,
                                                   json_attributes_topic=self.last_person_attributes_topic)),
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
            # Fired on every face_identified: {"event_type": "identified" | "unknown", "name", ...} (attributes).
            ("event", "face", self._entity("face", "Face", self.face_event_topic, event_types=FACE_EVENT_TYPES,
                                           icon="mdi:face-recognition")),
        ] + ([("image", "last_snapshot", self._entity("last_snapshot", "Last snapshot", None,
                                                      image_topic=self.snapshot_topic, content_type="image/jpeg"))]
             if self.snapshot_topic else [])

    def person_entity(self, name: str) -> tuple[str, str, dict]:
        object_id = presence_object_id(name)
        return ("binary_sensor", object_id,
                self._entity(object_id, f"{display_name(name, self.display_names)} present",
                             f"{self.state_root}/presence/{object_id}",
                             device_class="occupancy", payload_on="ON", payload_off="OFF"))

    def announce(self) -> None:
        """Every config, then every state; runs on each (re)connect."""
        self._announced_at, self._announce_due = time.monotonic(), False
        self.people = {name: presence_object_id(name) for name in self._enrolled()}
        for component, object_id, config in self.fixed_entities() + [self.person_entity(n) for n in self.people]:
            self.publisher.publish_now(self.config_topic(component, object_id), json.dumps(config))
        if self.snapshot_topic is None:      # snapshots switched off since: the image entity goes
            self.publisher.publish_now(self.config_topic("image", "last_snapshot"), "")
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
            self.track_names = {track: who for track, who in self.track_names.items() if who != name}
            if self.states.get(f"{self.state_root}/last_person") == name:
                self._erase_last_person(name)
        for name in sorted(enrolled - set(self.people)):
            component, object_id, config = self.person_entity(name)
            self.people[name] = object_id
            self.publisher.publish_now(self.config_topic(component, object_id), json.dumps(config))
        self._presence_states()

    def _enrolled(self) -> list[str]:
        return sorted({str(n) for n in self.store.gallery(self.embedding_model).names})

    def _on_home_assistant_status(self, topic: str, payload: bytes, retained: bool) -> None:
        if payload == b"online":
            self.births += 1
            self._announce_due = True

    def _announce_if_due(self) -> None:
        if self._announce_due and time.monotonic() - self._announced_at >= ANNOUNCE_EVERY_S:
            self.announce()

    def _erase_last_person(self, name: str) -> None:
        """A forgotten person's name leaves the retained last-person state (Home Assistant shows no value)."""
        log.info("Home Assistant: erasing %s from the last identified person", name)
        self._set("last_person", NO_VALUE)
        self.publisher.publish_now(self.last_person_attributes_topic, "{}")

    def _on_own_last_person(self, topic: str, payload: bytes, retained: bool) -> None:
        if not retained or not payload or len(payload) > MAX_STATE_BYTES:
            return        # live copies of our own messages, a cleared topic, or not ours
        name = payload.decode("utf-8", "replace")
        if name not in (STRANGER, NO_VALUE) and name not in self._enrolled():
            self._erase_last_person(name)

    def _on_own_config(self, topic: str, payload: bytes, retained: bool) -> None:
        object_id = topic.split("/")[-2]
        if not retained:
            return       # only the broker's stored configs at subscription time; live ones are nobody's cue to act
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
            decided_at = time.time()
            identity = event.get("identity")
            if identity:
                self.track_names[track] = identity["name"]
            # Presence first: Home Assistant handles this burst of messages in order, so the presence sensor
            # changes before the event, last person and estimates are processed (measured on a real Home
            # Assistant 2024.3 by scripts/check_home_assistant.py: last in the burst it changed ~16 ms later).
            self._presence_states()
            self._arrival(event, decided_at)
            if event.get("age") is not None:
                self._set("last_age", f"{event['age']:.0f}")
            if event.get("gender"):
                self._set("last_gender", event["gender"]["label"])
        self._set("people_present", str(len(self.open_tracks)))
        self._presence_states()

    def _arrival(self, event: dict, decided_at: float) -> None:
        """One face decided: the face event, and the last person with attributes that differ every time."""
        identity = event.get("identity")
        name = identity["name"] if identity else None
        gender = event.get("gender") or {}
        self.arrivals += 1
        details = {"name": name, "display_name": display_name(name, self.display_names) if name else None,
                   "similarity": identity.get("similarity") if identity else None,
                   "age": None if event.get("age") is None else round(event["age"]),
                   "gender": gender.get("label"), "camera": event.get("camera", self.camera),
                   "track_id": event.get("track_id"), "timestamp": event.get("timestamp")}
        self.publisher.publish_now(self.face_event_topic, json.dumps(
            {"event_type": "identified" if name else "unknown", **details}), retain=False)
        # The name as `person`: Home Assistant drops an MQTT json attribute called `name` (MQTT_ATTRIBUTES_BLOCKED;
        # the event entity keeps it).
        attributes = {"person" if key == "name" else key: value for key, value in details.items()}
        self.publisher.publish_now(self.last_person_attributes_topic, json.dumps(
            {**attributes, "arrival": self.arrivals, "at": round(decided_at, 3)}))
        # Published every time (not only on change): Home Assistant records each arrival (force_update).
        topic = f"{self.state_root}/last_person"
        self.states[topic] = name or STRANGER
        self.publisher.publish_now(topic, self.states[topic])

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
