"""Status page and metrics through real HTTP clients: `edge run` with `web.enabled` on the demo video and a real
Mosquitto broker; /healthz, /metrics (parsed by prometheus_client's own parser), /snapshot.jpg, the MJPEG
/stream, and the HTML page rendered by headless Chromium."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Broker, free_port, listening_sockets, require_mosquitto, require_program, wait_port
from edge_process import EdgeProcess, base_args
from edge.overlay import STATUS_BACKGROUND


def get(port: int, path: str, timeout: float = 10) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def metric_samples(port: int) -> dict[tuple[str, tuple], float]:
    status, headers, body = get(port, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


@pytest.fixture(scope="module")
def status_daemon(tmp_path_factory, enrolled_db):
    require_mosquitto()
    workdir = tmp_path_factory.mktemp("web")
    broker = Broker(workdir).start()
    db = workdir / "edge.db"
    shutil.copy(enrolled_db, db)
    port = free_port()
    edge = EdgeProcess(*base_args(db, "--set", "capture.loop=true", "--set", "web.enabled=true",
                                  "--set", f"web.port={port}", port=broker.port))
    try:
        wait_port(port, 60)
        edge.wait_events(lambda events: any((e["identity"] or {}).get("name") == "eileen_collins"
                                            for e in events), timeout=60)
        yield SimpleNamespace(edge=edge, port=port, workdir=workdir)
    finally:
        edge.signal(15)
        code = edge.wait(60)
        broker.stop()
    assert code == 0, edge.stderr()


@pytest.mark.slow
def test_healthz_reports_camera_broker_frame_age_and_outbox(status_daemon):
    status, headers, body = get(status_daemon.port, "/healthz")
    health = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json", body
    assert health["status"] == "ok" and health["camera"] == "connected" and health["broker"] == "connected", health
    assert 0 <= health["last_frame_age_s"] < 1.0, health
    assert isinstance(health["outbox_depth"], int) and health["outbox_depth"] >= 0
    assert health["frames"] > 0 and health["fps"] > 3, health


@pytest.mark.slow
def test_metrics_prometheus_text_with_stage_histograms(status_daemon):
    first = metric_samples(status_daemon.port)
    time.sleep(1.0)
    second = metric_samples(status_daemon.port)
    frames = ("edge_frames_total", ())
    assert second[frames] > first[frames] > 0, "frame counter does not move"
    assert second[("edge_faces_detected_total", ())] > 0
    assert second[("edge_events_total", (("type", "face_identified"),))] >= 1
    assert ("edge_outbox_depth", ()) in second and second[("edge_broker_connected", ())] == 1.0
    assert second[("edge_camera_connected", ())] == 1.0
    assert 0 <= second[("edge_last_frame_age_seconds", ())] < 1.0
    # Per-stage histograms fed by the pipeline's StageTimer: cumulative buckets ending in +Inf == count.
    for stage in ("detect", "track", "embed", "match"):
        buckets = sorted(((float(dict(labels)["le"]), value) for (name, labels), value in second.items()
                          if name == "edge_stage_seconds_bucket" and dict(labels)["stage"] == stage))
        count = second[("edge_stage_seconds_count", (("stage", stage),))]
        assert count > 0, f"no {stage} timings"
        assert [v for _, v in buckets] == sorted(v for _, v in buckets) and buckets[-1] == (float("inf"), count)
        assert 0 < second[("edge_stage_seconds_sum", (("stage", stage),))] < count * 2.5


@pytest.mark.slow
def test_snapshot_is_the_frame_with_overlay(status_daemon):
    status, headers, body = get(status_daemon.port, "/snapshot.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (480, 640, 3)
    # The status line across the bottom (JPEG: near the colour, not exact).
    bottom = image[-6:].astype(int)
    assert (np.abs(bottom - np.array(STATUS_BACKGROUND)).max(axis=2) < 40).mean() > 0.5


@pytest.mark.slow
def test_mjpeg_stream_delivers_live_frames_at_the_capped_rate(status_daemon):
    connection = http.client.HTTPConnection("127.0.0.1", status_daemon.port, timeout=10)
    connection.request("GET", "/stream")
    response = connection.getresponse()
    assert response.status == 200
    boundary = response.headers["Content-Type"].split("boundary=")[1]
    assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
    frames, started = [], time.monotonic()
    while len(frames) < 6:
        assert response.fp.readline().strip() == f"--{boundary}".encode()
        headers = {}
        while (line := response.fp.readline().strip()):
            key, _, value = line.decode().partition(":")
            headers[key.lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        jpeg = response.fp.read(int(headers["content-length"]))
        response.fp.readline()
        frames.append(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    elapsed = time.monotonic() - started
    connection.close()
    assert all(f is not None and f.shape == (480, 640, 3) for f in frames)
    assert any(np.abs(a.astype(int) - b).mean() > 0.5 for a, b in zip(frames, frames[1:])), "stream is frozen"
    # stream_max_fps = 10: five intervals take at least ~0.5 s.
    assert elapsed > 0.4, f"6 frames in {elapsed:.2f} s: rate cap not applied"


@pytest.mark.slow
def test_listens_on_localhost_only_and_unknown_paths_404(status_daemon):
    addresses = [s.split()[1] for s in listening_sockets(status_daemon.edge.pid) if s.startswith("tcp")]
    assert addresses == [f"0100007F:{status_daemon.port:04X}"], addresses
    assert get(status_daemon.port, "/../etc/passwd")[0] == 404


@pytest.mark.slow
def test_status_page_in_headless_chromium(status_daemon, tmp_path):
    chromium = require_program("chromium", "chromium-browser", package="chromium")
    url = f"http://127.0.0.1:{status_daemon.port}/"
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,700"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    # Rendered by a browser: the people table names the enrolled person, the events table lists events.
    assert "<table id=\"people\">" in dom and "eileen_collins" in dom.split("id=\"people\"")[1], dom[:2000]
    events_table = dom.split("id=\"events\"")[1].split("</table>")[0]
    assert "face_appeared" in events_table and "face_identified" in events_table
    shot = tmp_path / "page.png"
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (700, 1100), "no screenshot"
    # The live picture loaded: a large area that is neither page background nor table white.
    not_page = np.abs(image.astype(int) - 250).max(axis=2) > 40
    assert not_page.mean() > 0.15, f"page looks empty ({not_page.mean():.0%} non-background)"


@pytest.mark.slow
def test_healthz_fails_without_camera(tmp_path):
    port = free_port()
    edge = EdgeProcess(*base_args(tmp_path / "edge.db", "--set", "web.enabled=true", "--set", f"web.port={port}",
                                  source="57"))     # no such V4L2 camera: retried, never connected
    try:
        wait_port(port, 60)
        status, _, body = get(port, "/healthz")
        health = json.loads(body)
        assert status == 503 and health["status"] == "failing", health
        assert health["camera"] == "disconnected" and health["last_frame_age_s"] is None
        assert health["broker"] == "disabled"
        assert get(port, "/snapshot.jpg")[0] == 503
    finally:
        edge.signal(15)
        code = edge.wait(60)
    assert code == 0, edge.stderr()


def test_page_escapes_names_and_event_fields():
    from edge.config import AppConfig
    from edge.live import LiveOutputs
    from edge.pipeline import StageTimer
    from edge.web import render_page

    live = LiveOutputs(AppConfig(), SimpleNamespace(timer=StageTimer(), faces_seen=0))
    live.people = [{"name": "<img src=x onerror=alert(1)>", "embeddings": 1, "sightings": 0, "last_seen": None}]
    live.event({"type": "face_identified", "timestamp": "2026-11-23T09:56:36.676+00:00",
                "identity": {"name": "<script>alert(1)</script>"}, "identity_decided": True,
                "gender": {"label": "female"}, "age": 37.0, "dwell_s": 1.5})
    page = render_page(live)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x" in page


def test_hash_password_command_gives_a_hash_the_page_accepts(tmp_path):
    import os
    from conftest import ROOT, edge_command
    from edge.config import load_config
    from edge.web_auth import Auth, verify

    made = subprocess.run(edge_command("hash-password"), input="correct horse battery\n", capture_output=True,
                          text=True, cwd=ROOT, timeout=60, env={**os.environ})
    hashed = made.stdout.strip()
    assert made.returncode == 0 and hashed.startswith("scrypt$16384$8$1$"), made.stderr
    assert verify("correct horse battery", hashed) and not verify("correct horse batter", hashed)
    # In the config only the hash is written, and the server keeps it as it is.
    cfg = load_config(None, ["web.enabled=true", "web.host=0.0.0.0", f"web.password={hashed}"])
    auth = Auth.from_config(cfg.web)
    assert auth.password_hash == hashed and auth.check_password("client", "correct horse battery")
    # A plain password is hashed at start-up: the server holds no copy of it.
    plain = Auth.from_config(load_config(None, ["web.password=hunter2hunter2"]).web)
    assert plain.password_hash.startswith("scrypt$") and "hunter2" not in plain.password_hash
    short = subprocess.run(edge_command("hash-password"), input="short\n", capture_output=True, text=True,
                           cwd=ROOT, timeout=60)
    assert short.returncode == 2 and "at least 8 characters" in short.stderr


def test_host_header_and_multipart_parsing_refuse_what_they_should():
    from edge.web_server import BadRequest, host_allowed, parse_multipart

    allowed = {"edge.local", "localhost"}
    assert host_allowed("edge.local:8080", allowed, "192.168.1.20")
    assert host_allowed("192.168.1.20:8080", allowed, "192.168.1.20")      # the address connected to
    assert host_allowed("[::1]:8080", allowed, "::1")
    for bad in (None, "", "evil.example", "edge.local.evil.example:8080", "192.168.1.21"):
        assert not host_allowed(bad, allowed, "192.168.1.20"), bad
    boundary = "b0undary"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="../../etc/p{i}.jpg"'
                    f'\r\n\r\nxx\r\n'.encode() for i in range(3)) + f"--{boundary}--\r\n".encode()
    fields, files = parse_multipart(f"multipart/form-data; boundary={boundary}", body, max_files=3)
    assert [name for _, name, _ in files] == ["p0.jpg", "p1.jpg", "p2.jpg"]      # no folders kept
    with pytest.raises(BadRequest) as refused:
        parse_multipart(f"multipart/form-data; boundary={boundary}", body, max_files=2)
    assert refused.value.status == 413
    with pytest.raises(BadRequest):
        parse_multipart("text/plain", b"hello", max_files=2)


def test_port_in_use_costs_the_page_only(caplog):
    import socket
    from edge.config import AppConfig
    from edge.live import LiveOutputs
    from edge.pipeline import StageTimer
    from edge.web import StatusServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        # web.optional: the page is dispensable; without it the port stops start-up (tests/test_packaging.py).
        cfg = AppConfig.model_validate({"web": {"enabled": True, "port": taken.getsockname()[1], "optional": True}})
        server = StatusServer(LiveOutputs(cfg, SimpleNamespace(timer=StageTimer(), faces_seen=0)), cfg.web)
        server.start()
    assert server.httpd is None
    assert any("cannot listen on 127.0.0.1" in r.getMessage() for r in caplog.records)
    server.stop()
