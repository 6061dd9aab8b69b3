"""Prometheus metrics of the running daemon (prometheus_client): counters, gauges, per-stage latency histograms."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds. Stages on this kind of box take from ~0.1 ms (tracking) to ~100 ms (MTCNN on a Pi).
STAGE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# The classic text format, which every Prometheus server (and Telegraf, VictoriaMetrics...) parses;
# generate_latest() writes it for our plain metric names whatever the client library's newest version is.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """One registry per daemon (not prometheus_client's global one), so two daemons in one process
    (tests) never share counters. Every method is thread-safe (prometheus_client locks)."""

    def __init__(self):
        self.registry = registry = CollectorRegistry()
        self.frames = Counter("edge_frames", "Frames processed by the pipeline", registry=registry)
        self.faces = Counter("edge_faces_detected", "Faces found by the detector, one per face per detected frame",
                             registry=registry)
        self.events = Counter("edge_events", "Events produced, by type", ["type"], registry=registry)
        self.stage_seconds = Histogram("edge_stage_seconds", "Time of one run of a pipeline stage", ["stage"],
                                       buckets=STAGE_BUCKETS_S, registry=registry)
        self.outbox_depth = Gauge("edge_outbox_depth", "Events waiting for the broker's acknowledgement",
                                  registry=registry)
        self.faces_in_view = Gauge("edge_faces_in_view", "Tracked faces in the current frame", registry=registry)
        self.camera_connected = Gauge("edge_camera_connected", "1 while the camera delivers frames",
                                      registry=registry)
        self.broker_connected = Gauge("edge_broker_connected", "1 while connected to the MQTT broker "
                                      "(0 also when MQTT is disabled)", registry=registry)
        self.last_frame_age = Gauge("edge_last_frame_age_seconds", "Seconds since the last processed frame "
                                    "(-1 before the first)", registry=registry)
        self.mqtt_refused = Counter("edge_mqtt_refused", "Messages the broker refused (MQTT v5 PUBACK reason "
                                    ">= 0x80, e.g. an ACL); events stay in the outbox and are retried",
                                    registry=registry)
        for kind in ("face_appeared", "face_identified", "face_left"):
            self.events.labels(kind)       # present at 0 from the start: rate() needs the series to exist

    def observe_stage(self, stage: str, elapsed_ms: float) -> None:
        self.stage_seconds.labels(stage).observe(elapsed_ms / 1000.0)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
