"""Bad input never produces a traceback: fuzzed configs (hypothesis) through validate/load_config and the
CLI, and enrollment photos that are not images, truncated or absurdly large."""

from __future__ import annotations

import sqlite3
import struct
import zlib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import DEMO_GALLERY, run_edge
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
                truncated: "damaged or truncated", empty: "not an image file",
                tmp_path / "missing.jpg": "no such file"}
    for photo, message in expected.items():
        # A good photo first: enrollment is all or nothing.
        result = run_edge("enroll", "alice", str(DEMO_GALLERY / "eileen_collins.jpg"), str(photo),
                          "--set", f"store.path={db}")
        assert result.returncode == 4, (photo, result.stderr)
        assert result.stderr.strip() == f"image error: {photo}: {message}" or \
            (message in result.stderr and len(result.stderr.strip().splitlines()) == 1), result.stderr
        assert "Traceback" not in result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 0


@pytest.mark.slow
def test_huge_png_header_in_analyze_is_refused_before_decoding(tmp_path):
    huge = tmp_path / "huge.png"
    png_header_only(huge, 20000, 20000)
    result = run_edge("analyze", str(huge))
    assert result.returncode == 4 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"image error: {huge}: image dimensions are implausibly large"
    # Below Pillow's bomb limit, edge's own pixel limit answers, naming the size.
    png_header_only(huge, 9000, 9000)
    result = run_edge("analyze", str(huge))
    assert result.returncode == 4 and "9000x9000, more than 40 megapixels" in result.stderr
