#!/usr/bin/env python3
"""Build the redistributable assets of `edge demo`: a synthetic video, an enrollment photo,
the ground-truth timeline and ASSETS.md.

Only public-domain photos that ship inside PyPI packages are used (nothing is downloaded):

* ``skimage.data.astronaut()`` -- NASA photo of astronaut Eileen Collins (enrolled person).
* matplotlib ``mpl-data/sample_data/grace_hopper.jpg`` -- US Navy photo of Rear Admiral
  Grace Hopper (not enrolled; the demo must report her as ``unknown``).

Outputs (under ``--out``, default ``edge/demo``)::

    demo.mp4                    640x480, 15 fps, 16 s, mp4v
    gallery/eileen_collins.jpg  300x300 JPEG q92, a different rendition from the video frames
    timeline.json               per person: visible frame ranges and face box per frame
    ASSETS.md                   provenance, licence and how to regenerate

The script is deterministic for a given ``--seed``. At the end it reads the video back,
runs OpenCV's Haar frontal-face cascade on every frame and prints the per-person hit rate
against the ground truth and the number of false detections.

    python -m training.make_demo_assets
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = PROJECT_ROOT / "edge" / "demo"

WIDTH, HEIGHT, FPS = 640, 480, 15
DURATION_S = 16.0
N_FRAMES = int(round(DURATION_S * FPS))          # 240
FACE_PX = 125.0                                  # face box side at zoom 1.0 (zoom 0.9..1.2 -> 112..150 px)

# Face boxes (x, y, w, h) in the untouched source images, as found by OpenCV's Haar
# frontal-face cascade (scaleFactor 1.1, minNeighbors 5). Fixed here so that the ground
# truth does not depend on the detector; checked against the detector at start-up.
ASTRONAUT_FACE = (177, 66, 95, 95)      # skimage.data.astronaut(), 512x512
HOPPER_FACE = (155, 105, 222, 222)      # matplotlib grace_hopper.jpg, 512x600 (w x h)

HAAR = "haarcascade_frontalface_default.xml"


# ----------------------------------------------------------------------------- sources

def load_sources() -> dict:
    import matplotlib
    import matplotlib.cbook as cbook
    import skimage
    from skimage import data

    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    hopper_path = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    hopper = cv2.imread(str(hopper_path), cv2.IMREAD_COLOR)
    if hopper is None:
        raise SystemExit(f"cannot read {hopper_path}")
    return {
        "astronaut": astronaut,
        "hopper": hopper,
        "skimage_version": skimage.__version__,
        "matplotlib_version": matplotlib.__version__,
        "opencv_version": cv2.__version__,
    }


def check_source_faces(src: dict) -> None:
    """Warn (do not fail) if the fixed source face boxes drift from what the cascade finds."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR)
    for key, box in (("astronaut", ASTRONAUT_FACE), ("hopper", HOPPER_FACE)):
        gray = cv2.cvtColor(src[key], cv2.COLOR_BGR2GRAY)
        found = cascade.detectMultiScale(gray, 1.1, 5, minSize=(60, 60))
        best = max((iou(box, tuple(d)) for d in found), default=0.0)
        if best < 0.8:
            print(f"warning: source face box for {key} differs from Haar (IoU {best:.2f})",
                  file=sys.stderr)


# ----------------------------------------------------------------------------- cut-outs

@dataclass
class Cutout:
    name: str
    bgr: np.ndarray         # float32 crop
    alpha: np.ndarray       # float32 0..1, same size
    face_center: tuple[float, float]   # in crop coordinates
    face_w: float           # source face box side (px)
    base_scale: float       # crop px -> video px at zoom 1.0


def make_cutout(name: str, image: np.ndarray, face: tuple[int, int, int, int],
                tone: tuple[float, float]) -> Cutout:
    """Generous head-and-shoulders crop around `face` with a soft 'bust' alpha mask."""
    x, y, w, h = face
    cx, cy = x + w / 2.0, y + h / 2.0
    x0 = int(max(0, round(cx - 1.25 * w)))
    x1 = int(min(image.shape[1], round(cx + 1.25 * w)))
    y0 = int(max(0, round(y - 0.75 * h)))
    y1 = int(min(image.shape[0], round(y + 3.4 * h)))
    crop = image[y0:y1, x0:x1].astype(np.float32)
    gain, offset = tone
    crop = np.clip(crop * gain + offset, 0, 255)
    ch, cw = crop.shape[:2]
    fcx, fcy = cx - x0, cy - y0

    # Soft bust: an ellipse around the head joined to a wider ellipse for the shoulders
    # (running past the bottom of the crop), blurred so there is no hard edge; the bottom
    # rows fade out as well.
    mask = np.zeros((ch, cw), np.float32)
    half = min(fcx, cw - fcx)
    cv2.ellipse(mask, (int(round(fcx)), int(round(fcy - 0.12 * h))),
                (int(round(min(half, 0.95 * w))), int(round(1.05 * h))), 0, 0, 360, 1.0, -1)
    cv2.ellipse(mask, (int(round(fcx)), int(round(fcy + 2.3 * h))),
                (int(round(half * 0.97)), int(round(1.75 * h))), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=0.10 * w)
    # no hard edge where the mask meets the border of the crop (or of the source photo)
    rows = np.arange(ch, dtype=np.float32)
    cols = np.arange(cw, dtype=np.float32)
    fade_y = np.clip((ch - 1 - rows) / (0.35 * h), 0, 1) * np.clip(rows / (0.12 * h), 0, 1)
    fade_x = np.clip(np.minimum(cols, cw - 1 - cols) / (0.12 * w), 0, 1)
    mask *= fade_y[:, None] * fade_x[None, :]
    return Cutout(name, crop, mask, (fcx, fcy), float(w), FACE_PX / w)


# ----------------------------------------------------------------------------- background

def make_background(rng: np.random.Generator) -> np.ndarray:
    """A plain, lightly textured corridor seen from one end (float32 BGR)."""
    h, w = HEIGHT, WIDTH
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vx, vy = w * 0.52, h * 0.42                   # vanishing point
    # end wall rectangle
    ex0, ex1, ey0, ey1 = vx - 95, vx + 95, vy - 75, vy + 80

    img = np.zeros((h, w, 3), np.float32)
    wall = np.array([176, 186, 196], np.float32)   # warm grey (BGR)
    floor = np.array([96, 110, 122], np.float32)
    ceiling = np.array([214, 218, 222], np.float32)
    end = np.array([150, 165, 180], np.float32)

    # classify each pixel by the corridor's perspective wedges
    dx, dy = xx - vx, yy - vy
    with np.errstate(divide="ignore", invalid="ignore"):
        slope_floor = (h - vy) / (w / 2.0)
    is_floor = (dy > 0) & (np.abs(dx) * slope_floor * 0.9 < dy)
    is_ceiling = (dy < 0) & (np.abs(dx) * (vy / (w / 2.0)) * 0.9 < -dy)
    img[:] = wall
    img[is_floor] = floor
    img[is_ceiling] = ceiling
    inside = (xx > ex0) & (xx < ex1) & (yy > ey0) & (yy < ey1)
    img[inside] = end

    # depth shading: darker towards the vanishing point, brighter near the camera
    dist = np.sqrt((dx / w) ** 2 + (dy / h) ** 2)
    shade = 0.82 + 0.3 * np.clip(dist / 0.7, 0, 1)
    img *= shade[..., None]
    img[inside] *= 1.0

    # a few soft perspective lines (floor/wall junctions) and ceiling lights
    lines = np.zeros((h, w), np.float32)
    for sx in (0, w - 1):
        cv2.line(lines, (int(vx), int(vy)), (sx, h - 1), 1.0, 2, cv2.LINE_AA)
        cv2.line(lines, (int(vx), int(vy)), (sx, 0), 1.0, 2, cv2.LINE_AA)
    lines[inside] = 0
    lines = cv2.GaussianBlur(lines, (0, 0), 1.2)
    img *= (1 - 0.25 * lines)[..., None]
    lights = np.zeros((h, w), np.float32)
    for t in (0.25, 0.5, 0.78):
        cy_ = vy - (vy - 12) * t
        half = 18 + 70 * t
        cv2.ellipse(lights, (int(vx), int(cy_)), (int(half), int(3 + 6 * t)), 0, 0, 360, 1.0, -1)
    lights = cv2.GaussianBlur(lights, (0, 0), 3)
    img += 35 * lights[..., None]

    # low-frequency texture (plaster / lino), a few grey levels
    tex = rng.normal(0, 1, (h // 8, w // 8)).astype(np.float32)
    tex = cv2.resize(tex, (w, h), interpolation=cv2.INTER_CUBIC)
    tex = cv2.GaussianBlur(tex, (0, 0), 6)
    tex /= tex.std() + 1e-6
    img += 4.0 * tex[..., None]
    return np.clip(img, 0, 255)


# ----------------------------------------------------------------------------- motion

# Keyframes: (time s, face centre x, face centre y, zoom, rotation degrees).
# Positions are in video pixels; x = -190 / 830 is fully off-screen for every cut-out.
OFF_L, OFF_R = -190.0, 830.0
TRACKS: dict[str, list[list[tuple[float, float, float, float, float]]]] = {
    "eileen_collins": [
        [   # walks in from the left, pans/zooms gently, walks off to the right
            (1.50, OFF_L, 172, 1.00, 0.0),
            (2.40, 250, 176, 1.00, 0.0),
            (3.50, 335, 164, 1.18, 2.0),
            (4.70, 285, 182, 0.92, -2.0),
            (5.80, 350, 170, 1.10, 1.5),
            (6.55, 325, 174, 1.00, 0.0),
            (7.30, OFF_R, 176, 1.00, 0.0),
        ],
        [   # comes back from the left to stand next to Grace Hopper, leaves to the left
            (11.00, OFF_L, 176, 1.00, 0.0),
            (11.75, 172, 176, 1.00, 0.0),
            (12.70, 186, 170, 1.06, 1.0),
            (13.65, 176, 176, 1.00, 0.0),
            (14.50, OFF_L, 176, 1.00, 0.0),
        ],
    ],
    "unknown_grace_hopper": [
        [   # walks in from the right, moves around, steps right, leaves to the right
            (8.80, OFF_R, 188, 1.00, 0.0),
            (9.60, 360, 186, 1.00, 0.0),
            (10.55, 300, 176, 1.15, -2.0),
            (11.45, 468, 190, 0.95, 1.0),
            (12.45, 456, 181, 1.05, 0.0),
            (13.60, 470, 186, 1.00, 0.0),
            (14.50, OFF_R, 188, 1.00, 0.0),
        ],
    ],
}


def _ease(u: float) -> float:
    return 0.5 - 0.5 * math.cos(math.pi * u)


def pose_at(track: list[tuple[float, float, float, float, float]], t: float):
    """Interpolated (fx, fy, zoom, angle) at time t, or None outside the track."""
    if t < track[0][0] or t > track[-1][0]:
        return None
    for (t0, *a), (t1, *b) in zip(track, track[1:]):
        if t0 <= t <= t1:
            u = _ease((t - t0) / (t1 - t0))
            fx, fy, z, ang = (p + (q - p) * u for p, q in zip(a, b))
            # walking bob, proportional to horizontal speed
            speed = abs(b[0] - a[0]) / (t1 - t0)
            bob = 4.0 * min(1.0, speed / 400.0) * abs(math.sin(2 * math.pi * 1.8 * t))
            return fx, fy - bob, z, ang
    return None


def cutout_transform(c: Cutout, fx: float, fy: float, zoom: float, angle: float) -> np.ndarray:
    """2x3 affine from crop coordinates to video coordinates (face centre -> (fx, fy))."""
    m = cv2.getRotationMatrix2D(c.face_center, angle, c.base_scale * zoom)
    m[0, 2] += fx - c.face_center[0]
    m[1, 2] += fy - c.face_center[1]
    return m


def on_screen(c: Cutout, m: np.ndarray) -> bool:
    h, w = c.alpha.shape
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float32) @ m.T
    return (corners[:, 0].max() > 0 and corners[:, 0].min() < WIDTH
            and corners[:, 1].max() > 0 and corners[:, 1].min() < HEIGHT)


# ----------------------------------------------------------------------------- rendering

def render(out_dir: Path, src: dict, seed: int, noise_sigma: float) -> dict:
    rng = np.random.default_rng(seed)
    cutouts = {
        "eileen_collins": make_cutout("eileen_collins", src["astronaut"], ASTRONAUT_FACE,
                                      tone=(0.96, 4.0)),
        "unknown_grace_hopper": make_cutout("unknown_grace_hopper", src["hopper"], HOPPER_FACE,
                                            tone=(0.98, 2.0)),
    }
    background = make_background(rng)

    video_path = out_dir / "demo.mp4"
    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), FPS,
                             (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise SystemExit("cv2.VideoWriter cannot open an mp4v writer")

    people = {name: {"frames": [], "on_screen": []} for name in cutouts}
    empty_frames: list[int] = []
    # slow illumination drift (lights / auto-exposure) + per-frame flicker
    phase = rng.uniform(0, 2 * math.pi)
    for i in tqdm(range(N_FRAMES), desc="rendering demo.mp4", unit="frame", disable=None):
        t = i / FPS
        frame = background.copy()
        anyone = False
        # Grace Hopper is drawn first so the enrolled person is on top where the soft
        # shoulders meet; the faces themselves never overlap.
        for name in ("unknown_grace_hopper", "eileen_collins"):
            c = cutouts[name]
            for track in TRACKS[name]:
                pose = pose_at(track, t)
                if pose is None:
                    continue
                fx, fy, zoom, angle = pose
                m = cutout_transform(c, fx, fy, zoom, angle)
                if not on_screen(c, m):
                    continue
                anyone = True
                fg = cv2.warpAffine(c.bgr, m, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                a = cv2.warpAffine(c.alpha, m, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
                frame = frame * (1 - a) + fg * a
                side = c.face_w * c.base_scale * zoom
                box = [int(round(fx - side / 2)), int(round(fy - side / 2)),
                       int(round(side)), int(round(side))]
                inside = (box[0] >= 0 and box[1] >= 0 and box[0] + box[2] <= WIDTH
                          and box[1] + box[3] <= HEIGHT)
                people[name]["on_screen"].append(i)
                if inside:
                    people[name]["frames"].append({"frame": i, "box": box,
                                                   "zoom": round(zoom, 3),
                                                   "angle_deg": round(angle, 2)})
        if not anyone:
            empty_frames.append(i)

        gain = 1.0 + 0.045 * math.sin(2 * math.pi * t / 6.5 + phase) + rng.normal(0, 0.008)
        frame = frame * gain + rng.normal(0, 1.0)
        frame += rng.normal(0, noise_sigma, frame.shape).astype(np.float32)
        writer.write(np.clip(frame + 0.5, 0, 255).astype(np.uint8))
    writer.release()

    timeline = {
        "video": "demo.mp4",
        "width": WIDTH, "height": HEIGHT, "fps": FPS, "frame_count": N_FRAMES,
        "seed": seed,
        "box_format": "x, y, w, h in video pixels (Haar-style square face box)",
        "notes": ("'visible' / 'frames' list the frames where the person's whole face box is "
                  "inside the image; 'on_screen' also counts frames where only part of the "
                  "cut-out (walking in or out) is in view. 'empty' frames contain nobody."),
        "empty": ranges(empty_frames),
        "both_visible": ranges(sorted(
            {f["frame"] for f in people["eileen_collins"]["frames"]}
            & {f["frame"] for f in people["unknown_grace_hopper"]["frames"]})),
        "people": {
            name: {
                "identity": "eileen_collins" if name == "eileen_collins" else "unknown",
                "enrolled": name == "eileen_collins",
                "source": ("skimage.data.astronaut()" if name == "eileen_collins"
                           else "matplotlib sample_data/grace_hopper.jpg"),
                "visible": ranges([f["frame"] for f in p["frames"]]),
                "on_screen": ranges(sorted(set(p["on_screen"]))),
                "frames": p["frames"],
            }
            for name, p in people.items()
        },
    }
    return timeline


def ranges(frames: list[int]) -> list[list[int]]:
    """[1,2,3,7,8] -> [[1,3],[7,8]] (inclusive)."""
    out: list[list[int]] = []
    for f in frames:
        if out and f == out[-1][1] + 1:
            out[-1][1] = f
        else:
            out.append([f, f])
    return out


def make_gallery_photo(out_dir: Path, src: dict) -> Path:
    """Tighter, brighter, differently framed crop of astronaut(): not a video frame."""
    x, y, w, h = ASTRONAUT_FACE
    cx, cy = x + w / 2.0 + 4, y + h / 2.0 + 10        # slightly off-centre framing
    side = 2.05 * w
    scale = 300.0 / side
    m = np.array([[scale, 0, 150 - cx * scale], [0, scale, 150 - cy * scale]], np.float32)
    rot = cv2.getRotationMatrix2D((150, 150), -1.5, 1.0)   # tiny roll, different from video
    m = np.vstack([rot, [0, 0, 1]]) @ np.vstack([m, [0, 0, 1]])
    img = cv2.warpAffine(src["astronaut"], m[:2], (300, 300), flags=cv2.INTER_AREA,
                         borderMode=cv2.BORDER_REFLECT)
    img = img.astype(np.float32)
    img = 255.0 * (img / 255.0) ** 0.92 * 1.04 + 3          # lighter, a touch more contrast
    img = cv2.GaussianBlur(np.clip(img, 0, 255), (0, 0), 0.6).astype(np.uint8)
    path = out_dir / "gallery" / "eileen_collins.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


# ----------------------------------------------------------------------------- verification

def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def verify(out_dir: Path, timeline: dict, gallery_path: Path) -> dict:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR)
    cap = cv2.VideoCapture(str(out_dir / "demo.mp4"))
    if not cap.isOpened():
        raise SystemExit("cv2.VideoCapture cannot open demo.mp4")
    meta = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            cap.get(cv2.CAP_PROP_FPS))
    gt: dict[int, list[tuple[str, list[int]]]] = {}
    for name, p in timeline["people"].items():
        for f in p["frames"]:
            gt.setdefault(f["frame"], []).append((name, f["box"]))
    on_screen = {name: {f for a, b in p["on_screen"] for f in range(a, b + 1)}
                 for name, p in timeline["people"].items()}
    empty = {f for a, b in timeline["empty"] for f in range(a, b + 1)}

    hits = {name: 0 for name in timeline["people"]}
    false_empty = 0
    false_other = 0
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        dets = [tuple(int(v) for v in d) for d in
                cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(60, 60))]
        truth = gt.get(n, [])
        for name, box in truth:
            if any(iou(box, d) > 0.4 for d in dets):
                hits[name] += 1
        if n in empty:
            false_empty += len(dets)
        else:
            # a detection matching no visible face (partly visible faces are not counted)
            partial = [name for name in on_screen if n in on_screen[name]
                       and all(nm != name for nm, _ in truth)]
            for d in dets:
                if not any(iou(box, d) > 0.4 for _, box in truth) and not partial:
                    false_other += 1
        n += 1
    cap.release()

    gal = cv2.imread(str(gallery_path))
    gal_faces = cascade.detectMultiScale(cv2.cvtColor(gal, cv2.COLOR_BGR2GRAY), 1.1, 5,
                                         minSize=(60, 60))
    return {
        "frames_read": n, "meta": meta, "hits": hits,
        "visible": {name: len(p["frames"]) for name, p in timeline["people"].items()},
        "false_empty": false_empty, "empty_frames": len(empty), "false_other": false_other,
        "gallery_faces": len(gal_faces), "gallery_shape": gal.shape,
    }


# ----------------------------------------------------------------------------- ASSETS.md

def write_assets_md(out_dir: Path, src: dict, timeline: dict, seed: int) -> Path:
    sk, mpl, cvv = src["skimage_version"], src["matplotlib_version"], src["opencv_version"]
    e = timeline["people"]["eileen_collins"]
    g = timeline["people"]["unknown_grace_hopper"]

    def fr(rs):
        return ", ".join(f"{a}-{b} ({a / FPS:.1f}-{(b + 1) / FPS:.1f} s)" for a, b in rs)

    text = f"""# Demo assets

Everything in this directory is generated by `training/make_demo_assets.py` from two
public-domain photographs that ship inside PyPI packages; nothing is downloaded and no
other photo is used. Regenerate (deterministic for a given seed, default {seed}) with:

    python -m training.make_demo_assets

(generated with scikit-image {sk}, matplotlib {mpl}, opencv-python-headless {cvv})

## Source images

| Person | Package | File / function | Licence |
|---|---|---|---|
| Eileen Collins (NASA astronaut) — **enrolled** as `eileen_collins` | scikit-image {sk} | `skimage.data.astronaut()` (`skimage/data/astronaut.png`) | Public domain: NASA photograph (work of the US federal government) |
| Rear Admiral Grace Hopper — **not enrolled**, expected result `unknown` | matplotlib {mpl} | `matplotlib.cbook.get_sample_data('grace_hopper.jpg')` (`mpl-data/sample_data/grace_hopper.jpg`) | Public domain: US Navy photograph (work of the US federal government) |

Both images are redistributed by their packages as public-domain sample data. The derived
files below are likewise released into the public domain.

## Files

### `demo.mp4`
{WIDTH}x{HEIGHT}, {FPS} fps, {N_FRAMES} frames ({DURATION_S:.0f} s), MPEG-4 Part 2 (`mp4v`,
written with `cv2.VideoWriter`). A synthetic, lightly textured corridor background with
head-and-shoulders cut-outs (soft elliptical alpha mask) of the two photos composited on top;
faces stay upright and frontal (roll <= 2 degrees), face boxes 112-150 px. Mild realism:
slow brightness drift, per-frame flicker and light sensor noise.

Storyline:
- 0-1.5 s: empty corridor.
- Eileen Collins (from `astronaut()`) walks in from the left, pans and zooms gently
  (zoom 0.9-1.2) and walks out to the right; face fully visible in frames {fr(e['visible'][:1])}.
- about 1.5 s empty.
- Grace Hopper (from `grace_hopper.jpg`) walks in from the right and moves around;
  face fully visible in frames {fr(g['visible'])}.
- Eileen Collins comes back and both stand side by side (faces never overlap) in frames
  {fr(timeline['both_visible'])}; then both leave.
- the last 1.5 s are empty. Empty frames: {fr(timeline['empty'])}.

### `gallery/eileen_collins.jpg`
300x300 JPEG (quality 92), the enrollment photo of `eileen_collins`. Made from
`skimage.data.astronaut()` (scikit-image {sk}) with a tighter, slightly off-centre crop,
a different scale, a 1.5 degree roll, and lighter exposure — a different rendition from
every video frame. It contains one face. Public domain (NASA).

### `timeline.json`
Ground truth for tests, derived from the same parameters as the video (no detector involved):
per person the frame ranges where the whole face box is inside the image (`visible`), the
ranges where any part of the cut-out is on screen (`on_screen`), and the face box
`[x, y, w, h]` in video pixels for every visible frame (`frames`); also the `empty` and
`both_visible` frame ranges. Face boxes are the Haar-cascade face box of the source photo
mapped through the same transform used to composite it.

### `ASSETS.md`
This file (generated).
"""
    path = out_dir / "ASSETS.md"
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="output directory (default: edge/demo)")
    ap.add_argument("--seed", type=int, default=20240611, help="random seed (default: %(default)s)")
    ap.add_argument("--noise", type=float, default=2.0,
                    help="per-pixel sensor noise sigma in grey levels (default: %(default)s)")
    ap.add_argument("--no-verify", action="store_true", help="skip the Haar verification pass")
    args = ap.parse_args(argv)

    cv2.setRNGSeed(args.seed)
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    src = load_sources()
    check_source_faces(src)

    timeline = render(out_dir, src, args.seed, args.noise)
    (out_dir / "timeline.json").write_text(json.dumps(timeline, indent=1) + "\n",
                                           encoding="utf-8")
    gallery_path = make_gallery_photo(out_dir, src)
    write_assets_md(out_dir, src, timeline, args.seed)

    ok = True
    if not args.no_verify:
        r = verify(out_dir, timeline, gallery_path)
        w, h, fps = r["meta"]
        print(f"read back: {r['frames_read']} frames, {w}x{h} @ {fps:g} fps")
        ok &= r["frames_read"] == N_FRAMES and (w, h) == (WIDTH, HEIGHT)
        for name, hits in r["hits"].items():
            vis = r["visible"][name]
            frac = hits / vis if vis else 0.0
            print(f"  {name:22s} detected in {hits}/{vis} visible frames = {frac:.1%} "
                  f"(Haar, IoU > 0.4)")
            ok &= frac >= 0.85
        print(f"  false detections in {r['empty_frames']} empty frames: {r['false_empty']}")
        print(f"  unmatched detections in frames with people: {r['false_other']}")
        print(f"  gallery photo {r['gallery_shape'][1]}x{r['gallery_shape'][0]}: "
              f"{r['gallery_faces']} face(s) detected")
        ok &= r["false_empty"] == 0 and r["gallery_faces"] == 1
    for p in sorted(out_dir.rglob("*")):
        if p.is_file():
            print(f"  {p.relative_to(PROJECT_ROOT) if p.is_relative_to(PROJECT_ROOT) else p}: "
                  f"{p.stat().st_size / 1024:.1f} KiB")
    if not ok:
        print("verification: FAILED targets (>= 85% per person, 0 false, 1 gallery face)",
              file=sys.stderr)
        return 1
    print("verification: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
