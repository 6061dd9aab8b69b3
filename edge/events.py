"""What leaves the pipeline: the event and sighting schema, and the sinks that take events.

A sink is anything with `observe(event)` and `close()`: the store's outbox (written first, so an event exists
on disk before anyone may lose it), kept unknown faces, snapshots, Home Assistant, the live view, a callback.
The daemon hands every event to each sink in order (like Frigate's Communicator) and knows nothing else of them.
The still-image result of `edge analyze` and the web API's recognise call (`analysis_record`, used by
edge/analysis.py) is defined here too, so both schemas sit together.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Protocol

import numpy as np

from .face import Face
from .identify import Match
from .models.gender import gender_label
from .track import TrackView

EVENT_TYPES = ("face_appeared", "face_identified", "face_left")


@dataclass(frozen=True)
class Event:
    payload: dict                           # published as JSON on <prefix>/events
    sighting: dict                          # the row of the track in the sightings table
    embedding: np.ndarray | None = None     # the track's averaged embedding (kept for unknowns: edge/unknowns.py)
    snapshot: np.ndarray | None = None      # BGR crop of the track's best frame, only with snapshots on


class Sink(Protocol):
    def observe(self, event: Event) -> None: ...

    def close(self) -> None: ...


def _gender(female_probability: float | None) -> dict | None:
    if female_probability is None:
        return None
    label, confidence = gender_label(female_probability)
    return {"label": label, "confidence": round(confidence, 3)}


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds")


def track_event(kind: str, view: TrackView, device: str, camera: str, now: float,
                snapshot: np.ndarray | None = None) -> Event:
    """The event of `kind` for a track, at wall-clock time `now`."""
    gender = _gender(view.female_probability)
    identity = None
    if view.decided and view.identity:
        identity = {"name": view.identity, "similarity": round(view.similarity, 3),
                    "distance": round(view.distance, 3)}
    age = round(view.age, 1) if view.age is not None else None
    dwell = max(0.0, view.dwell_s)
    payload = {
        "event_id": uuid.uuid4().hex,
        "type": kind,
        "timestamp": _iso(now),
        "device": device,
        "camera": camera,
        "track_id": view.uid,
        "identity": identity,
        "identity_decided": view.decided,
        "gender": gender,
        "age": age,
        "frames_averaged": view.frames_averaged,
        "box": list(view.face.box),
        "dwell_s": round(dwell, 2),
    }
    sighting = {"track": view.uid, "camera": camera, "first_seen": view.first_wall,
                "last_seen": view.first_wall + dwell, "age": age,
                "gender": gender["label"] if gender else None,
                "gender_confidence": gender["confidence"] if gender else None, "frames": view.hits}
    return Event(payload, sighting, view.embedding, snapshot)


def analysis_record(face: Face, match: Match | None) -> dict:
    """One face of a still image, as `edge analyze --json` (and the web API) report it."""
    identity = {"name": match.name, "similarity": round(match.similarity, 3)} if match and match.name else None
    return {"box": [int(v) for v in face.box], "age": round(face.age, 1), "gender": _gender(face.female_probability),
            "identity": identity}


class OutboxSink:
    """The store: the event into the outbox (when MQTT is on) and its track's sighting row, in one transaction."""

    def __init__(self, store, topic: str | None):
        self.store, self.topic = store, topic

    def observe(self, event: Event) -> None:
        self.store.record(self.topic, event.payload, event.sighting)

    def close(self) -> None:
        pass


class UnknownsSink:
    """Keeps the averaged embedding of tracks decided unknown (edge/unknowns.py groups them later)."""

    def __init__(self, store, min_frames: int, model: str):
        self.store, self.min_frames, self.model = store, min_frames, model

    def observe(self, event: Event) -> None:
        from .unknowns import remember
        remember(self.store, event, self.min_frames, self.model)

    def close(self) -> None:
        pass


class PayloadSink:
    """A sink from any callable that takes the event's JSON payload (a print, Home Assistant, the live view)."""

    def __init__(self, handler: Callable[[dict], None]):
        self.handler = handler

    def observe(self, event: Event) -> None:
        self.handler(event.payload)

    def close(self) -> None:
        pass
