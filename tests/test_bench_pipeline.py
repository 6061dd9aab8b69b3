"""The pipeline benchmark reports the work behind each speed figure, and no speed for a clip without faces."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import DEMO_VIDEO, ROOT


def bench(tmp_path, video, *extra: str) -> tuple[dict, str]:
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "benchmarks.bench_pipeline", "--video", str(video),
                             "--variants", "fast", "--no-shared", "--json", str(out), *extra],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(out.read_text()), result.stdout


@pytest.mark.slow
def test_demo_clip_reports_faces_tracks_and_decisions(tmp_path):
    results, table = bench(tmp_path, DEMO_VIDEO)
    run = results["demo"]["variants"]["fast"]
    assert "error" not in run, run
    assert run["faces_detected"] >= run["frames"] / 2          # one or two people in view most of the 16 s
    assert run["tracks"] >= 2                                    # Collins, then Hopper
    assert run["decisions"]["named"] >= 1 and run["decisions"]["unknown"] >= 1
    assert results["demo"]["video"] == "edge/demo/demo.mp4"     # relative: no machine path in the results
    row = next(line for line in table.splitlines() if line.startswith("| demo | fast |"))
    assert f"| {run['faces_detected']} | {run['tracks']} |" in row and "no face found" not in row


@pytest.mark.slow
def test_clip_without_faces_shows_no_speed_figure(tmp_path):
    video = tmp_path / "nobody.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 15, (640, 480))
    rng = np.random.default_rng(0)
    for _ in range(45):
        writer.write(rng.integers(80, 100, (480, 640, 3), dtype=np.uint8))   # sensor noise, nobody there
    writer.release()
    results, table = bench(tmp_path, video)
    run = results["nobody"]["variants"]["fast"]
    assert run["faces_detected"] == 0 and run["tracks"] == 0
    row = next(line for line in table.splitlines() if line.startswith("| nobody | fast |"))
    assert "no face found" in row
