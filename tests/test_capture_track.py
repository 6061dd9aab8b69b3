"""Capture grabber (newest frame, reopen with backoff) and the tracker's association and averaging."""

from __future__ import annotations

import logging
import shutil
import time

import numpy as np

from conftest import DEMO_VIDEO, wait_until
from edge.capture import LatestFrameGrabber, open_source
from edge.face import Face
from edge.track import Tracker, iou


def test_missing_source_is_retried_logged_once_and_opened_when_it_appears(tmp_path, caplog):
    target = tmp_path / "camera.mp4"
    grabber = LatestFrameGrabber(open_source(str(target)), loop=True, reopen_initial_s=0.05,
                                 reopen_max_s=0.2).start()
    try:
        with caplog.at_level(logging.WARNING):
            time.sleep(1.0)
            assert grabber.get(timeout=0.1) is None
            shutil.copy(DEMO_VIDEO, target)
            frame = wait_until(lambda: grabber.get(timeout=0.2), timeout=10, interval=0)
        assert frame is not None and frame.image.shape == (480, 640, 3)
        unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(unavailable) == 1, "one log line per outage, not one per retry"
        assert grabber.reopened_after_s and grabber.reopened_after_s[0] >= 1.0
    finally:
        grabber.stop()


def test_newest_frame_wins_when_the_consumer_is_slow():
    grabber = LatestFrameGrabber(open_source(str(DEMO_VIDEO)), realtime=True).start()
    try:
        first = grabber.get(timeout=2)
        time.sleep(1.0)           # a slow model: ~15 frames arrive meanwhile
        later = grabber.get(timeout=2)
        assert later.index - first.index >= 10, "stale frames must be dropped, not queued"
    finally:
        grabber.stop()


def test_every_frame_mode_delivers_all_frames_of_a_file():
    grabber = LatestFrameGrabber(open_source(str(DEMO_VIDEO)), every_frame=True).start()
    indices = []
    while True:
        frame = grabber.get(timeout=1)
        if frame is not None:
            indices.append(frame.index)
        elif grabber.finished.is_set():   # the last frame is published before `finished` is set
            break
    grabber.stop()
    assert indices == list(range(1, len(indices) + 1)) and len(indices) == 240


def _face(x, y, size=100, female=0.9, age=30.0, embedding=None):
    return Face(box=(x, y, size, size), score=1.0, landmarks=np.zeros((5, 2)), age=age,
                female_probability=female, embedding=embedding)


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == 50 / 150
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0


def test_tracker_keeps_ids_across_motion_and_ends_unseen_tracks():
    tracker = Tracker(iou_threshold=0.3, min_hits=2, max_missed_s=0.5, window=4)
    ids = []
    for step in range(5):   # two faces walking right, 10 px per frame
        faces, ended = tracker.update([_face(10 + 10 * step, 50), _face(300 + 10 * step, 60)], step * 0.1)
        ids.append(tuple(f.track_id for f in faces))
        assert not ended
    assert len(set(ids)) == 1 and len(set(ids[0])) == 2
    _, ended = tracker.update([_face(60, 50)], 0.5)
    assert not ended
    _, ended = tracker.update([_face(70, 50)], 1.2)          # the right face unseen for 0.8 s
    assert [t.id for t in ended] == [ids[0][1]]


def test_track_averages_over_its_window_so_one_bad_frame_does_not_flip_gender():
    tracker = Tracker(window=5)
    track = None
    for step, female in enumerate([0.9, 0.95, 0.1, 0.9, 0.92, 0.88]):   # one blurry frame says male
        faces, _ = tracker.update([_face(10, 10, female=female, age=30 + step)], step * 0.1)
        track = tracker.tracks[faces[0].track_id]
        track.add_observation(faces[0], None)
    assert len(track.female_probabilities) == 5
    assert track.mean_female_probability > 0.5
    assert track.mean_age == np.mean([31, 32, 33, 34, 35])


def test_haar_nested_duplicate_of_one_face_is_dropped():
    from edge.detect.haar import suppress_nested
    tight = Face(box=(100, 100, 80, 80), score=9.0)
    around = Face(box=(85, 90, 120, 120), score=4.0)      # IoU 0.44 with `tight`, covers it entirely
    neighbour = Face(box=(170, 100, 80, 80), score=3.0)   # a second person, touching: kept
    kept = suppress_nested([around, tight, neighbour])
    assert [f.box for f in kept] == [tight.box, neighbour.box]
