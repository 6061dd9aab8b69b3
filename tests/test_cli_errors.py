"""Bad input gets a clear error and loses nothing: config, model files, images."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import cv2
import pytest

from conftest import DEMO_GALLERY, ROOT, run_edge


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
