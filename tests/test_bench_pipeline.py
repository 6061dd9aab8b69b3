"""The pipeline benchmark reports the work behind each speed figure (stage times from the daemon's own
StageTimer), no speed for a clip without faces, and takes clips by name, refusing at once a name or file that
does not exist."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from benchmarks.bench_pipeline import VideoError, resolve_video
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
    # Stage times are the daemon's: its grabber timed every read, its loop every frame's events and every pump;
    # the frames that emitted events and the pumps that sent them are filed apart.
    stages = run["stages"]
    assert stages["capture"]["n"] >= run["frames"] and stages["store"]["n"] >= run["frames"]
    emitted = sum(run["events"].values())
    assert 1 <= stages["store_events"]["n"] <= emitted and 1 <= stages["publish_events"]["n"] <= emitted


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


def small_video(path):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, (64, 48))
    for _ in range(3):
        writer.write(np.full((48, 64, 3), 90, np.uint8))
    writer.release()
    return path


def test_videos_are_named_like_the_results_or_given_as_files(tmp_path):
    shared = tmp_path / "shared_videos"
    shared.mkdir()
    street = small_video(shared / "covent_garden_walkers_facenet_pytorch.mp4")
    assert resolve_video("demo", shared) == ("demo", DEMO_VIDEO)
    for given in ("covent_garden_walkers_facenet_pytorch", "Covent Garden", "covent-garden"):
        assert resolve_video(given, shared) == ("covent_garden_walkers_facenet_pytorch", street)
    clip = small_video(tmp_path / "porch.mp4")
    assert resolve_video(str(clip), shared) == ("porch", clip)
    with pytest.raises(VideoError, match="names several clips .*crowd, covent_garden"):
        resolve_video("c", shared)
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(VideoError, match="OpenCV reads no frame"):
        resolve_video(str(tmp_path / "notes.mp4"), shared)


@pytest.mark.parametrize("given", ["nosuchclip", "missing/porch.mp4"])
def test_a_video_that_does_not_exist_is_one_line_and_exit_2_not_a_camera_wait(tmp_path, given):
    result = subprocess.run([sys.executable, "-m", "benchmarks.bench_pipeline", "--video", given, "--variants", "fast",
                             "--json", str(tmp_path / "bench.json")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "is no clip name and no such file (clips: demo, crowd, empty" \
        in result.stderr, result.stderr
    assert not (tmp_path / "bench.json").exists()
