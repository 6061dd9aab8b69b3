"""Capture grabber (newest frame, reopen with backoff) and the tracker's association and averaging."""

from __future__ import annotations

import logging
import shutil
import time

import numpy as np
import pytest

from conftest import DEMO_VIDEO, wait_until
from edge.capture import LatestFrameGrabber, open_source
from edge.face import Face
from edge.config import IdentityConfig, TrackingConfig
from edge.identify import Gallery
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
    tracker = Tracker(TrackingConfig(iou_threshold=0.3, min_hits=2, max_missed_s=0.5, window=4, min_frames=4), IdentityConfig())
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
    tracker = Tracker(TrackingConfig(window=5, min_frames=5), IdentityConfig())
    view = None
    embedding = np.full(128, 0.1, np.float32)
    for step, female in enumerate([0.9, 0.95, 0.1, 0.9, 0.92, 0.88]):   # one blurry frame says male
        faces, _ = tracker.update([_face(10, 10, female=female, age=30 + step)], step * 0.1)
        measured = [faces[0].with_(embedding=embedding)]
        tracker.observe(measured, faces, Gallery.empty())
        view = tracker.view(faces[0].track_id)
    assert view.frames_averaged == 5
    assert view.female_probability > 0.5
    assert view.age == np.mean([31, 32, 33, 34, 35])


def test_a_looped_file_or_a_clock_stepped_back_never_gives_a_negative_dwell():
    tracker = Tracker(TrackingConfig(min_hits=1), IdentityConfig())
    for timestamp in (100.0, 100.1, 0.0, 0.1, 0.2):          # the file restarts at 0 under a track in view
        faces, ended = tracker.update([_face(10, 10)], timestamp)
        assert not ended
    view = tracker.view(faces[0].track_id)
    assert view.dwell_s == pytest.approx(0.3) and view.first_frame_ts == 100.0


def test_the_tracker_confirms_a_track_after_min_hits_and_then_names_it():
    tracker = Tracker(TrackingConfig(min_hits=3, min_frames=2, window=4), IdentityConfig())
    ann = np.full(128, 0.1, np.float32)
    gallery = Gallery(np.array(["ann"], dtype=object), ann[None])
    kinds = []
    for step in range(4):
        faces, _ = tracker.update([_face(10, 10)], step * 0.1)
        changes = tracker.observe([faces[0].with_(embedding=ann + 0.01)], faces, gallery)
        kinds.append([(kind, view.identity) for kind, view in changes])
    assert kinds == [[], [], [("face_appeared", None), ("face_identified", "ann")], []]
    view = tracker.views()[0]
    assert view.confirmed and view.decided and view.identity == "ann" and view.in_view


def test_a_person_forgotten_while_in_view_is_not_named_when_the_track_ends():
    tracker = Tracker(TrackingConfig(min_hits=1, min_frames=1, window=4), IdentityConfig())
    ann = np.full(128, 0.1, np.float32)
    faces, _ = tracker.update([_face(10, 10)], 0.0)
    tracker.observe([faces[0].with_(embedding=ann)], faces, Gallery(np.array(["ann"], dtype=object), ann[None]))
    assert tracker.views()[0].identity == "ann"
    faces, _ = tracker.update([_face(10, 10)], 0.1)
    tracker.observe([], faces, Gallery.empty())                # `edge identities forget ann` meanwhile
    [ended] = tracker.close_all()
    assert ended.identity is None and not ended.decided


def test_haar_nested_duplicate_of_one_face_is_dropped():
    from edge.detect.haar import suppress_nested
    tight = Face(box=(100, 100, 80, 80), score=9.0)
    around = Face(box=(85, 90, 120, 120), score=4.0)      # IoU 0.44 with `tight`, covers it entirely
    neighbour = Face(box=(170, 100, 80, 80), score=3.0)   # a second person, touching: kept
    kept = suppress_nested([around, tight, neighbour])
    assert [f.box for f in kept] == [tight.box, neighbour.box]
