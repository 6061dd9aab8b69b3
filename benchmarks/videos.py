"""Benchmark videos built deterministically from the two public-domain photos of the demo.

`crowd`: six faces in view at once (three renditions of each photo, gently swaying), 10 s.
`empty`: the demo corridor with nobody in it for most of 30 s; one person walks in, stands, leaves.
They are written to a cache folder (never committed) and rebuilt only when missing; the cut-out,
background and motion code is `training/make_demo_assets.py`'s own.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

VERSION = 1   # bump when a video changes, so stale cached copies are rebuilt
SEED = 20240611


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path(tempfile.gettempdir()))
    path = base / "edge-bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _assets():
    from training import make_demo_assets
    return make_demo_assets


def _write(path: Path, frames) -> Path:
    tmp = path.with_suffix(".part.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 15, (640, 480))
    for frame in frames:
        writer.write(frame)
    writer.release()
    tmp.replace(path)
    return path


def _finish(rng, frame: np.ndarray, t: float, phase: float) -> np.ndarray:
    # The demo's realism: slow brightness drift, per-frame flicker, sensor noise.
    gain = 1.0 + 0.045 * math.sin(2 * math.pi * t / 6.5 + phase) + rng.normal(0, 0.008)
    frame = frame * gain + rng.normal(0, 1.0)
    frame += rng.normal(0, 2.0, frame.shape).astype(np.float32)
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def _composite(frame, cutout, m, a_mod):
    fg = cv2.warpAffine(cutout.bgr, m, (a_mod.WIDTH, a_mod.HEIGHT), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(cutout.alpha, m, (a_mod.WIDTH, a_mod.HEIGHT), flags=cv2.INTER_LINEAR)[..., None]
    return frame * (1 - alpha) + fg * alpha


def crowd_video() -> Path:
    path = cache_dir() / f"crowd_v{VERSION}.mp4"
    if path.is_file():
        return path
    a = _assets()
    rng = np.random.default_rng(SEED)
    src = a.load_sources()
    people = [a.make_cutout("eileen", src["astronaut"], a.ASTRONAUT_FACE, (0.96, 4.0)),
              a.make_cutout("hopper", src["hopper"], a.HOPPER_FACE, (0.98, 2.0))]
    background = a.make_background(rng)
    phase = rng.uniform(0, 2 * math.pi)
    # Upper row first: the lower row's heads cover the upper row's shoulders, faces never overlap.
    slots = [(105, 120, 0), (320, 115, 1), (535, 120, 0), (110, 330, 1), (325, 335, 0), (535, 330, 1)]

    def frames():
        for i in range(150):
            t = i / 15
            frame = background.copy()
            for k, (x, y, who) in enumerate(slots):
                sway = 8 * math.sin(2 * math.pi * t / 3.0 + k)
                m = a.cutout_transform(people[who], x + sway, y + 2 * math.sin(t + k), 0.72 + 0.03 * (k % 3),
                                       1.5 * math.sin(t / 2 + k))
                frame = _composite(frame, people[who], m, a)
            yield _finish(rng, frame, t, phase)
    return _write(path, frames())


def empty_video() -> Path:
    path = cache_dir() / f"empty_v{VERSION}.mp4"
    if path.is_file():
        return path
    a = _assets()
    rng = np.random.default_rng(SEED + 1)
    src = a.load_sources()
    person = a.make_cutout("eileen", src["astronaut"], a.ASTRONAUT_FACE, (0.96, 4.0))
    background = a.make_background(rng)
    phase = rng.uniform(0, 2 * math.pi)
    # 30 s: nobody for 12 s, one person walks in, stands still ~3 s, walks out by 17 s, nobody after.
    track = [(12.0, a.OFF_L, 176, 1.0, 0.0), (13.0, 300, 176, 1.0, 0.0), (16.0, 306, 176, 1.0, 0.0),
             (17.0, a.OFF_R, 176, 1.0, 0.0)]

    def frames():
        for i in range(450):
            t = i / 15
            frame = background.copy()
            pose = a.pose_at(track, t)
            if pose is not None:
                m = a.cutout_transform(person, *pose)
                if a.on_screen(person, m):
                    frame = _composite(frame, person, m, a)
            yield _finish(rng, frame, t, phase)
    return _write(path, frames())
