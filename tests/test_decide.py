"""The identity decision on its own (edge/decide.py): frames needed, agreement, unknown may become a name."""

from __future__ import annotations

import numpy as np

from edge.config import IdentityConfig
from edge.decide import Decision, agreement, decide_identity
from edge.identify import Gallery

ANN = np.full(128, 0.1, np.float32)
BOB = np.full(128, -0.1, np.float32)
GALLERY = Gallery(np.array(["ann", "bob"], dtype=object), np.stack([ANN, BOB]))
IDENTITY = IdentityConfig(model="dlib_resnet_v1", min_agreement=0.6)          # L2 threshold 0.6


def decide(mean, per_frame, frames=5, current=None):
    return decide_identity(mean, per_frame, frames, current, GALLERY, IDENTITY, min_frames=5)


def test_no_decision_before_min_frames():
    assert decide(ANN, ["ann"] * 4, frames=4) is None
    assert decide(ANN, ["ann"] * 5).name == "ann"


def test_the_average_needs_the_per_frame_matches_to_agree():
    # 3 of 5 frames say ann (0.6): enough; 2 of 5: the track waits for more frames.
    assert decide(ANN, ["ann", "ann", "ann", None, "bob"]).name == "ann"
    assert decide(ANN, ["ann", "ann", None, None, "bob"]) is None


def test_a_stranger_is_decided_unknown_and_may_later_get_a_name_but_never_loses_it():
    stranger = np.full(128, 0.5, np.float32)                     # L2 3.6 from ann: unknown
    unknown = decide(stranger, [None] * 5)
    assert unknown is not None and unknown.name is None
    assert decide(stranger, [None] * 5, current=unknown) is None         # nothing new to say
    assert decide(ANN, ["ann"] * 5, current=unknown).name == "ann"       # came closer: named
    named = Decision("ann", 0.9, 0.1)
    assert decide(stranger, [None] * 5, current=named) is None           # a name is never taken back


def test_agreement_share():
    assert agreement(["a", "a", None, "b"], "a") == 0.5
    assert agreement([], "a") == 0.0


def test_the_margin_rule_refuses_a_face_close_to_two_people():
    from edge.identify import match_one
    ann, twin = np.zeros(128, np.float32), np.zeros(128, np.float32)
    twin[0] = 0.1
    gallery = Gallery(np.array(["ann", "ann", "twin"], dtype=object), np.stack([ann, ann + 0.001, twin]))
    probe = np.zeros(128, np.float32)
    probe[0] = 0.04                                  # 0.04 from ann, 0.06 from twin: both under 0.6
    plain = match_one(probe, gallery, 0.6)
    assert plain.name == "ann" and abs(plain.runner_up - 0.06) < 1e-6
    assert match_one(probe, gallery, 0.6, margin=0.05).name is None          # too close to call
    assert match_one(ann, gallery, 0.6, margin=0.05).name == "ann"           # 0.1 clear of twin
    # The runner-up is another *person*: ann's second photo does not count against her.
    assert abs(match_one(ann, gallery, 0.6).runner_up - 0.1) < 1e-6
