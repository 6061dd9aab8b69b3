"""Bad input never produces a traceback: fuzzed configs (hypothesis) through validate/load_config and the
CLI, photos that are not images, truncated, absurdly large or 16-bit, and damaged video files."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import struct
import time
import zlib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import DEMO_GALLERY, DEMO_VIDEO, run_edge
from edge.config import AppConfig, ConfigError, load_config, validate

FUZZ_EXAMPLES = 1500   # issue: "1000+ fuzzed configs", asserted below
FILE_EXAMPLES = 300


def real_keys(model=AppConfig, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of the config schema, sections included."""
    paths = []
    for name, field in model.model_fields.items():
        paths.append(prefix + (name,))
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, AppConfig.__mro__[1]):
            paths += real_keys(annotation, prefix + (name,))
    return paths


KEYS = real_keys()
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=20), st.sampled_from(["", "0", "-1", "1e309", "haar", "auto", "!!", "~"]),
                    st.binary(max_size=8))
values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)), max_leaves=12)
key_paths = st.one_of(st.sampled_from(KEYS), st.lists(st.text(max_size=10), min_size=1, max_size=3).map(tuple))


@st.composite
def configs(draw):
    data: dict = {}
    for path in draw(st.lists(key_paths, max_size=6)):
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[path[-1]] = draw(values)
    return data


def check_one_line(exc: ConfigError) -> None:
    text = str(exc)
    assert text.startswith("config error: ") and "\n" not in text, text
    key = text.removeprefix("config error: ").split(":", 1)[0]
    assert key, text


@pytest.mark.slow
def test_fuzzed_configs_validate_or_name_a_key():
    """FUZZ_EXAMPLES generated configs through validate(); the count is asserted, so a change to the
    strategies that makes hypothesis give up early fails here instead of silently testing less."""
    tried = 0

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(configs())
    def check(data):
        nonlocal tried
        tried += 1
        try:
            validate(data)
        except ConfigError as exc:
            check_one_line(exc)
    check()
    assert tried >= 1000, f"only {tried} fuzzed configs were tried"


@pytest.mark.slow
def test_fuzzed_config_files_and_overrides(tmp_path):
    """Generated YAML files plus --set overrides through load_config(), as the CLI reads them."""
    tried = 0

    @settings(max_examples=FILE_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(configs(), st.lists(st.tuples(st.sampled_from([".".join(k) for k in KEYS]), st.text(max_size=12)),
                               max_size=3))
    def check(data, overrides):
        nonlocal tried
        tried += 1
        path = tmp_path / "fuzz.yaml"
        try:
            path.write_text(yaml.safe_dump(data, allow_unicode=True))
        except yaml.YAMLError:
            return
        try:
            load_config(path, [f"{k}={v}" for k, v in overrides])
        except ConfigError as exc:
            check_one_line(exc)
    check()
    assert tried >= 0.9 * FILE_EXAMPLES, f"only {tried} fuzzed config files were tried"


@pytest.mark.slow
def test_fuzzed_config_through_the_cli(tmp_path):
    """A handful of nasty files through the real `edge` process: exit 2, one line, no traceback."""
    cases = ["mqtt: [1, 2]", "store: {path: {a: 1}}", "capture: {fps: .nan}", "detector: {min_face: 1e400}",
             "tracking: {window: 5, min_frames: 500}", "\"\\ud800\": 1", "models: {dir: [x]}", "- a\n- b"]
    for i, text in enumerate(cases):
        config = tmp_path / f"c{i}.yaml"
        config.write_text(text)
        result = run_edge("models", "list", "--config", str(config))
        assert result.returncode == 2, (text, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, (text, result.stderr)


# --- enrollment photos ------------------------------------------------------------------------------


def png_header_only(path: Path, width: int, height: int) -> None:
    """A valid PNG signature + IHDR claiming width x height, and a tiny IDAT: a decompression bomb's shape."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.mark.slow
def test_enroll_rejects_bad_photos_and_saves_nothing(tmp_path):
    huge = tmp_path / "huge.png"
    png_header_only(huge, 20000, 20000)
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo at all")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes((DEMO_GALLERY / "eileen_collins.jpg").read_bytes()[:4000])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    db = tmp_path / "edge.db"
    # Pillow refuses a 400 MP header itself (decompression-bomb check) before edge's 40 MP limit is reached.
    expected = {huge: "image dimensions are implausibly large", text: "not an image file",
                truncated: "image is damaged or truncated", empty: "not an image file",
                tmp_path / "missing.jpg": "no such file"}
    for photo, message in expected.items():
        # A good photo first; --strict: all or nothing (without it the good photo would be stored).
        result = run_edge("enroll", "alice", str(DEMO_GALLERY / "eileen_collins.jpg"), str(photo), "--strict",
                          "--set", f"store.path={db}")
        assert result.returncode == 4, (photo, result.stderr)
        assert f"skipped: {photo}: {message}" in result.stderr and "nothing was saved" in result.stderr, \
            result.stderr
        assert "Traceback" not in result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 0


@pytest.mark.slow
def test_huge_png_header_in_analyze_is_refused_before_decoding(tmp_path):
    huge = tmp_path / "huge.png"
    png_header_only(huge, 20000, 20000)
    result = run_edge("analyze", str(huge))
    assert result.returncode == 4 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith(f"image error: {huge}: image dimensions are implausibly large")
    # Below Pillow's bomb limit, edge's own pixel limit answers, naming the size.
    png_header_only(huge, 9000, 9000)
    result = run_edge("analyze", str(huge))
    assert result.returncode == 4 and "9000x9000, more than 40 megapixels" in result.stderr


def test_very_wide_image_is_one_error_and_the_batch_goes_on(tmp_path):
    """Before: a 40000x10 image crashed `edge analyze` mid-batch in OpenCV's resize (inv_scale_x > 0)."""
    import cv2
    import numpy as np
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.full((10, 40000, 3), 128, np.uint8))
    tall = tmp_path / "tall.png"
    cv2.imwrite(str(tall), np.full((30000, 12, 3), 128, np.uint8))
    photo = DEMO_GALLERY / "eileen_collins.jpg"
    result = run_edge("analyze", str(wide), str(photo), str(tall))
    assert result.returncode == 4 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [
        f"image error: {wide}: image is 40000x10, more than 20 times wider than high (or the reverse); "
        "crop it around the face",
        f"image error: {tall}: image is 12x30000, more than 20 times wider than high (or the reverse); "
        "crop it around the face"]
    assert f"{photo} face 1:" in result.stdout        # the photo between them was analysed


def test_16_bit_greyscale_png_is_scaled_not_clipped_to_white(tmp_path):
    """Before: Pillow's convert("RGB") clipped 16-bit values at 255 (99.997% white pixels), "no face found"."""
    import cv2
    import numpy as np
    from edge.images import load_image
    grey8 = cv2.imread(str(DEMO_GALLERY / "eileen_collins.jpg"), cv2.IMREAD_GRAYSCALE)
    grey16 = tmp_path / "grey16.png"
    cv2.imwrite(str(grey16), grey8.astype(np.uint16) * 257)     # full 16-bit range, same picture
    grey8_path = tmp_path / "grey8.png"
    cv2.imwrite(str(grey8_path), grey8)
    loaded = load_image(grey16)
    assert loaded.dtype == np.uint8 and loaded.shape == grey8.shape + (3,)
    assert np.abs(loaded[:, :, 0].astype(int) - grey8).max() <= 1
    assert (loaded == 255).mean() < 0.05
    results = {}
    for path in (grey8_path, grey16):
        result = run_edge("analyze", str(path), "--json")
        assert result.returncode == 0, result.stderr
        results[path] = json.loads(result.stdout)["faces"]
    assert len(results[grey16]) == 1 and results[grey16] == results[grey8_path]


def damaged_copy(tmp_path: Path, name: str, damage) -> Path:
    data = bytearray(DEMO_VIDEO.read_bytes())
    damage(data)
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


def garbage_in_the_middle(data: bytearray) -> None:
    start = len(data) // 3
    data[start:start + 4000] = random.Random(14).randbytes(4000)


def zeroed_blocks(data: bytearray) -> None:
    for k in range(1, 6):
        start = len(data) // 6 * k
        data[start:start + 20000] = bytes(20000)


@pytest.mark.parametrize("damage, first_bad_frame", [(garbage_in_the_middle, 98), (zeroed_blocks, 56)])
def test_damaged_video_file_is_read_past_bad_frames_with_one_warning(damage, first_bad_frame, tmp_path, caplog):
    """Before: the first undecodable frame ended the file without a word (at frame 98 or 56 of 240) and
    FFmpeg wrote thousands of error lines to stderr."""
    from edge.capture import LatestFrameGrabber, open_source
    video = damaged_copy(tmp_path, "damaged.mp4", damage)
    with caplog.at_level(logging.WARNING):
        grabber = LatestFrameGrabber(open_source(str(video)), every_frame=True).start()
        frames, deadline = 0, time.monotonic() + 60
        while time.monotonic() < deadline:
            if grabber.get(timeout=0.2) is not None:
                frames += 1
            elif grabber.finished.is_set():
                break
        grabber.stop()
    warnings = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    print(f"\n{damage.__name__}: {frames} frames delivered; {warnings}")
    assert frames > first_bad_frame + 100
    assert len(warnings) == 1 and f"{frames} frames of 240 decoded" in warnings[0]
    assert "corrupt frame(s) skipped" in warnings[0]
    daemon = run_edge("run", "--source", str(video), "--set", "capture.pace=every_frame", "--set",
                      "mqtt.enabled=false", "--set", f"store.path={tmp_path / 'edge.db'}", "--print-events")
    assert daemon.returncode == 0, daemon.stderr[-2000:]
    damaged_lines = [line for line in daemon.stderr.splitlines() if "is damaged" in line]
    assert len(damaged_lines) == 1 and len(daemon.stderr.splitlines()) <= 3, daemon.stderr[-2000:]
    assert "face_left" in daemon.stdout
