"""Several cameras on one box: one `edge run` per camera (systemd/edge@.service), one shared database and
gallery, per-camera events and one Home Assistant device per camera, on a real broker and real video."""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import yaml

from conftest import DEMO_GALLERY, DEMO_VIDEO, ROOT, run_edge
from edge_process import EdgeProcess
from test_homeassistant import configs, retained

TEMPLATE = ROOT / "systemd" / "edge@.service"
SINGLE = ROOT / "systemd" / "edge.service"


def hallway_video(path: Path) -> Path:
    """The demo seen by another camera: mirrored, a little darker and re-encoded."""
    capture = cv2.VideoCapture(str(DEMO_VIDEO))
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), capture.get(cv2.CAP_PROP_FPS), size)
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        writer.write(cv2.convertScaleAbs(cv2.flip(frame, 1), alpha=0.85, beta=5))
    writer.release()
    capture.release()
    return path


def unit_arguments(camera: str, box_config: Path, cameras_dir: Path) -> list[str]:
    """The template's ExecStart for this instance, after `edge run`, with /etc/edge pointed at the test's files."""
    line = next(l for l in TEMPLATE.read_text().splitlines() if l.startswith("ExecStart="))
    command = line.removeprefix("ExecStart=").replace("%i", camera)
    command = command.replace("/etc/edge/edge.yaml", str(box_config)).replace("/etc/edge/cameras", str(cameras_dir))
    words = shlex.split(command)
    assert words[:2] == ["/opt/edge/venv/bin/edge", "run"]
    return words[2:]


def test_two_cameras_share_one_gallery_with_their_own_events_and_devices(broker, subscriber_factory, tmp_path):
    db = tmp_path / "state" / "edge.db"
    enrolled = run_edge("enroll", "eileen_collins", str(DEMO_GALLERY / "eileen_collins.jpg"),
                        "--set", f"store.path={db}")
    assert enrolled.returncode == 0, enrolled.stderr          # enrolled once, for both cameras
    box_config = tmp_path / "edge.yaml"
    box_config.write_text(yaml.safe_dump({"store": {"path": str(db)},
                                          "mqtt": {"host": "127.0.0.1", "port": broker.port},
                                          "capture": {"pace": "every_frame"}}))
    cameras_dir = tmp_path / "cameras"
    cameras_dir.mkdir()
    sources = {"door": DEMO_VIDEO, "hallway": hallway_video(tmp_path / "hallway.mp4")}
    for camera, source in sources.items():
        # Client ids set explicitly: the test must not depend on how the default one is derived.
        (cameras_dir / f"{camera}.yaml").write_text(yaml.safe_dump(
            {"source": str(source), "mqtt": {"client_id": f"test-edge-{camera}"}}))

    live = subscriber_factory(broker.port, topic="#", client_id="two-cameras-live")
    daemons = {camera: EdgeProcess(*unit_arguments(camera, box_config, cameras_dir)) for camera in sources}
    for camera, daemon in daemons.items():
        assert daemon.wait(240) == 0, f"{camera}: {daemon.stderr()}"
        assert "database is locked" not in daemon.stderr() and "Traceback" not in daemon.stderr()

    for camera, daemon in daemons.items():
        # Each camera's events name it and its own device, and both recognise the one enrolled person.
        assert daemon.events and {(e["camera"], e["device"]) for e in daemon.events} == {(camera, f"edge-{camera}")}
        names = {e["identity"]["name"] for e in daemon.events if e["type"] == "face_identified" and e["identity"]}
        assert names == {"eileen_collins"}, camera
        # The same events reached the broker under the camera's own prefix.
        published = [json.loads(p) for p in live.payloads(f"edge/{camera}/events")]
        assert {e["event_id"] for e in published} == {e["event_id"] for e in daemon.events}, daemon.stderr()
        # ... each sent once: a daemon leaves the other camera's queued events to that camera's daemon.
        assert len(published) == len(daemon.events)
        assert live.payloads(f"edge/{camera}/status")[-1:] == [b"offline"]

    # One database: sightings from both cameras, hers attributed to her.
    with sqlite3.connect(db) as connection:
        seen = dict(connection.execute(
            "SELECT s.camera, COUNT(*) FROM sightings s JOIN identities i ON i.id = s.identity_id "
            "WHERE i.name = 'eileen_collins' GROUP BY s.camera").fetchall())
    assert set(seen) == {"door", "hallway"} and min(seen.values()) >= 2
    # Grace Hopper, unknown, was seen by both cameras: her faces are one group in the shared unknowns.
    groups = json.loads(run_edge("unknowns", "list", "--json", "--set", f"store.path={db}").stdout)
    assert any(g["cameras"] == ["door", "hallway"] for g in groups), groups

    # Home Assistant: one device per camera, each with the whole gallery's presence sensors and its own topics.
    found = configs(retained(broker.port, "homeassistant/#", "two-cameras-ha"))
    devices: dict[str, list[dict]] = {}
    for config in found.values():
        devices.setdefault(config["device"]["identifiers"][0], []).append(config)
    assert set(devices) == {"edge_edge-door", "edge_edge-hallway"}
    for camera in sources:
        entities = devices[f"edge_edge-{camera}"]
        assert {c["device"]["model"] for c in entities} == {f"Edge face appliance ({camera})"}
        assert "Eileen Collins present" in {c["name"] for c in entities}
        assert all(c.get("state_topic", f"edge/{camera}/").startswith(f"edge/{camera}/") for c in entities)
    assert len({c["unique_id"] for c in found.values()}) == len(found)


def test_a_camera_without_its_config_file_stops_with_one_line(tmp_path):
    arguments = unit_arguments("garage", tmp_path / "edge.yaml", tmp_path / "cameras")
    (tmp_path / "edge.yaml").write_text("mqtt: {enabled: false}\n")
    result = subprocess.run([sys.executable, "-m", "edge", "run", *arguments, "--max-frames", "1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    # Exit 2 is in RestartPreventExitStatus=: systemd does not restart-loop on it.
    assert result.returncode == 2
    assert result.stderr.strip() == f"config error: cannot read {tmp_path / 'cameras' / 'garage.yaml'}: " \
                                    "No such file or directory"


def test_template_differs_from_the_single_unit_only_in_its_camera_lines():
    def body(path: Path) -> list[str]:
        return [l for l in path.read_text().splitlines() if l and not l.startswith("#")]
    single, template = body(SINGLE), body(TEMPLATE)
    changed = {l.split("=", 1)[0] for l in set(single) ^ set(template)}
    assert changed == {"Description", "ExecStart"}, set(single) ^ set(template)
    assert [l.split("=", 1)[0] for l in single] == [l.split("=", 1)[0] for l in template]
    exec_start = next(l for l in template if l.startswith("ExecStart="))
    assert re.search(r"--config /etc/edge/edge\.yaml --config /etc/edge/cameras/%i\.yaml --set camera=%i", exec_start)


def _open_store(path: str, barrier) -> str:
    from edge.store import Store, StoreError
    barrier.wait()
    try:
        Store(path).close()
        return "ok"
    except StoreError as exc:
        return str(exc)


def test_daemons_starting_together_on_a_new_database_all_open_it(tmp_path):
    # At boot every edge@ instance starts at once. On a fresh database each used to run the migrations it
    # had seen missing (all but one failed with 'table "identities" already exists'), and switching the new
    # file to WAL answered "database is locked" at once to about 2% of them.
    import multiprocessing
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(6) as pool:
        for attempt in range(8):
            barrier = manager.Barrier(6)
            path = str(tmp_path / f"edge{attempt}.db")
            assert pool.starmap(_open_store, [(path, barrier)] * 6) == ["ok"] * 6


def test_each_daemon_sends_its_own_queued_events_and_the_others_only_when_left_behind(tmp_path):
    import time
    from edge.store import Store
    store = Store(tmp_path / "edge.db")
    for prefix, event_id in (("edge/door_1", "d1"), ("edge/hallway", "h1"), ("edge/door_12", "x1"),
                             ("edge/door_1", "d2")):
        store.record(f"{prefix}/events", {"event_id": event_id, "identity": None}, None)
    store.save_fleet_state({"name": "ann", "version": 1, "box": "door", "deleted": 0, "digest": ""},
                           ("edge-fleet/gallery/ann", "{}"))
    mine = [e.event_id for e in store.pending(own_prefix="edge/door_1/")]
    # Its own two (no match on "edge/door_12", "_" is not a wildcard) and the fleet state anyone may send.
    assert mine[:2] == ["d1", "d2"] and len(mine) == 3 and "h1" not in mine and "x1" not in mine
    assert store.outbox_depth("edge/door_1/") == 3 and store.outbox_depth() == 5
    # Rows another daemon has left for longer than others_after_s are sent too: nothing is stranded.
    time.sleep(0.2)
    assert {e.event_id for e in store.pending(own_prefix="edge/door_1/", others_after_s=0.1)} >= {"h1", "x1"}
    store.close()
