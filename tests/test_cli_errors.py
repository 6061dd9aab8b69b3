"""Bad input gets a clear error and loses nothing: config, model files, images; secrets are never echoed."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import cv2
import pytest

from conftest import DEMO_GALLERY, DEMO_VIDEO, ROOT, Broker, free_ports, run_edge
from edge.config import load_config


@pytest.mark.parametrize("override, expected", [
    ("detector.min_face=2", "config error: detector.min_face: "),
    ("mqtt.port=99999", "config error: mqtt.port: "),
    ("detector.type=yolo", "config error: detector.type: "),
    ("mqtt.colour=blue", "config error: mqtt.colour: unknown key"),
    ("tracking.min_frames=50", "config error: tracking.min_frames: must be <= tracking.window"),
])
def test_bad_config_names_the_key_and_exits_2(override, expected, tmp_path):
    result = run_edge("run", "--set", override, "--set", f"store.path={tmp_path}/db")
    assert result.returncode == 2
    assert result.stderr.strip().startswith(expected), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_bad_yaml_file_names_the_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("device: box\nmqtt:\n  port: [1883\n")
    result = run_edge("doctor", "--config", str(config))
    assert result.returncode == 2 and "not valid YAML" in result.stderr and "line" in result.stderr


def _models_copy(tmp_path):
    copy = tmp_path / "models"
    shutil.copytree(ROOT / "models", copy)
    return copy


def test_missing_model_file_is_named(tmp_path):
    models = _models_copy(tmp_path)
    (models / "age_v1.onnx").unlink()
    result = run_edge("analyze", str(DEMO_GALLERY / "eileen_collins.jpg"), "--set", f"models.dir={models}")
    assert result.returncode == 3
    assert "age_v1.onnx" in result.stderr and "missing" in result.stderr


def test_corrupt_model_file_is_named(tmp_path):
    models = _models_copy(tmp_path)
    data = bytearray((models / "gender_v1.onnx").read_bytes())
    data[1000:1100] = b"\0" * 100
    (models / "gender_v1.onnx").write_bytes(bytes(data))
    result = run_edge("analyze", str(DEMO_GALLERY / "eileen_collins.jpg"), "--set", f"models.dir={models}")
    assert result.returncode == 3 and "gender_v1.onnx" in result.stderr and "corrupt" in result.stderr
    # `edge models verify` says which file is wrong and passes the others.
    verify = run_edge("models", "verify", "--set", f"models.dir={models}")
    assert verify.returncode == 3
    failing = [line for line in verify.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 1 and "gender_v1.onnx" in failing[0]


def test_corrupt_image_gives_clear_error(tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((DEMO_GALLERY / "eileen_collins.jpg").read_bytes()[:3000])
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo")
    result = run_edge("analyze", str(truncated), str(text))
    assert result.returncode == 4
    assert "truncated.jpg: image is damaged or truncated" in result.stderr
    assert "notes.jpg: not an image file" in result.stderr
    assert "Traceback" not in result.stderr


def test_image_without_face_is_refused_and_nothing_is_written(tmp_path):
    empty = tmp_path / "wall.jpg"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(empty), cv2.GaussianBlur(rng.integers(90, 160, (300, 400, 3), dtype=np.uint8), (9, 9), 0))
    analyze = run_edge("analyze", str(empty))
    assert analyze.returncode == 0 and "no face found" in analyze.stdout
    db = tmp_path / "edge.db"
    # One good photo and one without a face, --strict: the whole enrollment is refused.
    enroll = run_edge("enroll", "alice", str(DEMO_GALLERY / "eileen_collins.jpg"), str(empty), "--strict",
                      "--set", f"store.path={db}")
    assert enroll.returncode == 4
    assert "wall.jpg: no face found" in enroll.stderr and "nothing was saved" in enroll.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM identities").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 0


# --- secrets never reach an error, a log or the terminal (issue 14, point 5) ----------------------------

NUMERIC_PASSWORD = "483920"


@pytest.fixture
def numeric_password_broker(tmp_path):
    """A real Mosquitto whose second listener wants user `edge` with the all-digit password."""
    binary = shutil.which("mosquitto_passwd")
    if not binary or not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        pytest.skip("mosquitto / mosquitto_passwd not installed")
    passwords = tmp_path / "passwd"
    subprocess.run([binary, "-b", "-c", str(passwords), "edge", NUMERIC_PASSWORD], check=True, capture_output=True)
    os.chmod(passwords, 0o600)
    broker = Broker(tmp_path)
    broker.auth_port = free_ports(1, avoid={broker.port})[0]
    # Started as root, mosquitto drops to user `mosquitto`, which could not read the 0600 password file.
    broker.conf.write_text(
        f"user root\nper_listener_settings true\npersistence false\nlog_dest file {tmp_path}/mosquitto.log\n"
        f"listener {broker.port} 127.0.0.1\nallow_anonymous true\n"
        f"listener {broker.auth_port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n")
    broker.start()
    yield broker
    broker.stop()


def test_numeric_password_is_accepted_as_text_and_never_printed(numeric_password_broker, subscriber_factory,
                                                                tmp_path):
    """Before: `config error: mqtt.password: Input should be a valid string (got 483920)`, exit 2."""
    subscriber = subscriber_factory(numeric_password_broker.port, topic="door1/events")
    result = run_edge("run", "--source", str(DEMO_VIDEO), "--max-frames", "60", "--print-events",
                      "--set", "capture.pace=every_frame", "--set", f"store.path={tmp_path / 'edge.db'}",
                      "--set", "mqtt.prefix=door1", "--set", "mqtt.host=127.0.0.1",
                      "--set", f"mqtt.port={numeric_password_broker.auth_port}", "--set", "mqtt.username=edge",
                      "--set", f"mqtt.password={NUMERIC_PASSWORD}", "--set", "log_level=DEBUG",
                      env={"EDGE_MQTT_PASSWORD": ""})
    assert result.returncode == 0, result.stderr
    produced = {json.loads(line)["event_id"] for line in result.stdout.splitlines() if line.startswith("{")}
    assert produced and subscriber.wait_for(lambda s: produced <= {e["event_id"] for e in s.events()}, 15)
    assert NUMERIC_PASSWORD not in result.stdout + result.stderr


def test_yaml_keeps_a_secret_as_written(tmp_path):
    """YAML 1.1 reads 0123 as octal 83 and 12:30 as 750; a password is the characters typed."""
    config = tmp_path / "secret.yaml"
    config.write_text("mqtt:\n  password: 0123\n")
    assert load_config(config).mqtt.resolved_password() == "0123"
    config.write_text("mqtt:\n  password: 12:30\n")
    assert load_config(config).mqtt.resolved_password() == "12:30"
    assert load_config(None, ["mqtt.password=0x1F"]).mqtt.resolved_password() == "0x1F"
    assert "0x1F" not in repr(load_config(None, ["mqtt.password=0x1F"]))      # SecretStr in any repr


@pytest.mark.parametrize("how, secret, key", [
    ("file", "mqtt:\n  password: [483920]\n", "mqtt.password"),
    ("file", "mqtt:\n  password: {pin: 483920}\n", "mqtt.password"),
    ("file", "mqtt:\n  password_file: [483920]\n", "mqtt.password_file"),
    ("set", "mqtt.password:483920", "mqtt.password"),
    ("set", "web.port=rtsp://admin:483920@camera.local/stream", "web.port"),
    ("set", "source=[rtsp://admin:483920@camera.local/stream]", "source"),
])
def test_wrong_secret_names_the_key_never_the_value(how, secret, key, tmp_path):
    # A config that validated after all would run one frame of the demo, not wait for a camera.
    args = ["--set", f"store.path={tmp_path / 'edge.db'}", "--source", str(DEMO_VIDEO), "--max-frames", "1",
            "--set", "mqtt.enabled=false"]
    if how == "file":
        config = tmp_path / "bad.yaml"
        config.write_text(secret)
        args += ["--config", str(config)]
    else:
        args += ["--set", secret]
    result = run_edge("run", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"config error: {key}") or result.stderr.startswith(f"config error: --set {key}")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert NUMERIC_PASSWORD not in result.stderr + result.stdout, result.stderr
