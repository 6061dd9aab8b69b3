"""Fit where MTCNN's 5 landmarks sit in dlib's unit face-chip space, so MTCNN points can align dlib-style chips.

The attribute and embedding models were trained on dlib chips (get_face_chip_details on dlib's 5-point
predictor: eye corners and nose base). MTCNN gives eye centres, nose tip and mouth corners instead. On real
faces this script fits dlib's similarity transform (least squares from the 5 dlib points to dlib's unit
template, as dlib's find_similarity_transform), maps MTCNN's points for the same face through it, and
averages: that mean is the MTCNN template. It then measures how far chips aligned from MTCNN points with
that template land from dlib's own chips (mean corner displacement, 150 px chip, padding 0.25).

    python -m training.fit_mtcnn_template --lfw 300
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .paths import DATASETS, MODELS, REPORTS

REPORT = REPORTS / "mtcnn_template.json"
# dlib's 5-point template (dlib/image_transforms/interpolation.h, get_face_chip_details), parts 0..4:
# image-right eye outer and inner corner, image-left eye outer and inner corner, nose base.
DLIB_TEMPLATE = np.array([(0.8595674595992, 0.2134981538014), (0.6460604764104, 0.2289674387677),
                          (0.1205750620789, 0.2137274526848), (0.3340850613712, 0.2290642403242),
                          (0.4901123135679, 0.6277975316475)])
MTCNN_NAMES = ["image-left eye", "image-right eye", "nose", "mouth image-left", "mouth image-right"]


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2 x 3 least-squares similarity (rotation, uniform scale, shift) taking src to dst (Umeyama 1991,
    the method of dlib's find_similarity_transform)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])  # no reflection
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def chip_points(template: np.ndarray, size: int, padding: float) -> np.ndarray:
    return (padding + template) / (2 * padding + 1) * size


def image_paths(n_lfw: int) -> list[Path]:
    paths = []
    people = DATASETS / "people" / "labels.csv"
    if people.is_file():
        paths += [people.parent / r["file"] for r in csv.DictReader(people.open()) if r["faces"] == "1"]
    lfw = DATASETS / "lfw" / "labels.csv"
    if lfw.is_file() and n_lfw:
        rows = list(csv.DictReader(lfw.open()))
        step = max(len(rows) // n_lfw, 1)
        paths += [lfw.parent / r["file"] for r in rows[::step][:n_lfw]]
    return paths


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw, ih = max(0, min(ax + aw, bx + bw) - max(ax, bx)), max(0, min(ay + ah, by + bh) - max(ay, by))
    return iw * ih / (aw * ah + bw * bh - iw * ih)


def collect(paths: list[Path], backend: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(dlib 5 points, MTCNN 5 points, file names) for faces both found in each image."""
    import cv2
    import dlib

    from edge.backends import load_backend
    from edge.detect.mtcnn import MtcnnDetector
    from .convert_age_gender_tflite import package_dir  # the CC0 5-point predictor ships there

    ext = "tflite" if backend == "litert" else "onnx"
    detector = MtcnnDetector(*[load_backend(backend, MODELS / f"mtcnn_{n}.{ext}") for n in ("pnet", "rnet", "onet")])
    hog = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(package_dir() / "shape_predictor_5_face_landmarks.dat"))
    dlib_pts, mtcnn_pts, names = [], [], []
    for path in tqdm(paths, desc=f"landmarks ({backend})", unit="photo", disable=None):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        rects = hog(rgb, 1 if max(rgb.shape) < 400 else 0)  # LFW faces are small enough to need one upsample
        faces = detector.detect(rgb)
        if not len(rects) or not faces:
            continue
        rect = max(rects, key=lambda r: r.area())
        box = (rect.left(), rect.top(), rect.width(), rect.height())
        face = max(faces, key=lambda f: iou(f.box, box))
        if iou(face.box, box) < 0.3:
            continue
        shape = predictor(rgb, rect)
        dlib_pts.append([(shape.part(i).x, shape.part(i).y) for i in range(5)])
        mtcnn_pts.append(face.landmarks)
        names.append(str(path.relative_to(DATASETS)))
    return np.array(dlib_pts, float), np.array(mtcnn_pts, float), names


def fit(dlib_pts: np.ndarray, mtcnn_pts: np.ndarray) -> np.ndarray:
    """MTCNN points of every face in dlib's unit template space, (N, 5, 2)."""
    return np.stack([apply(similarity(d, DLIB_TEMPLATE), m) for d, m in zip(dlib_pts, mtcnn_pts)])


def corner_displacement(dlib_pts, mtcnn_pts, template, size=150, padding=0.25) -> np.ndarray:
    """Per face, mean distance (in chip pixels) between the 4 chip corners placed by dlib's own transform
    and by the MTCNN-template transform."""
    corners = np.array([(0, 0), (size, 0), (0, size), (size, size)], float)
    out = []
    for d, m in zip(dlib_pts, mtcnn_pts):
        t_dlib = similarity(chip_points(DLIB_TEMPLATE, size, padding), d)  # chip -> image, as dlib
        t_mtcnn = similarity(chip_points(template, size, padding), m)
        image_px_per_chip_px = np.linalg.norm(t_dlib[:, 0])
        out.append(np.linalg.norm(apply(t_dlib, corners) - apply(t_mtcnn, corners), axis=1).mean() / image_px_per_chip_px)
    return np.array(out)


def check_against_dlib(path: Path) -> tuple[float, float, float]:
    """Our similarity() against dlib.get_face_chip_details on one photo: differences of chip side (px),
    angle (rad) and centre (px). Pixels are not compared: dlib's extractor adds its own sampling conventions."""
    import math

    import cv2
    import dlib
    from .convert_age_gender_tflite import package_dir

    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    rect = dlib.get_frontal_face_detector()(rgb, 1)[0]
    shape = dlib.shape_predictor(str(package_dir() / "shape_predictor_5_face_landmarks.dat"))(rgb, rect)
    pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], float)
    details = dlib.get_face_chip_details(shape, 150, 0.25)
    m = similarity(chip_points(DLIB_TEMPLATE, 150, 0.25), pts)  # chip -> image
    r = details.rect
    centre = apply(m, np.array([[75.0, 75.0]]))[0]
    return (abs(np.linalg.norm(m[:, 0]) * 150 - r.width()), abs(math.atan2(m[1, 0], m[0, 0]) - details.angle),
            float(np.abs(centre - [(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2]).max()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", type=int, default=300, help="LFW photos added to people/'s single-face photos")
    ap.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "opencv", "litert"])
    ap.add_argument("--out", type=Path, default=REPORT)
    args = ap.parse_args()
    paths = image_paths(args.lfw)
    if not paths:
        sys.exit(f"no photos under {DATASETS} (people/ and lfw/ are needed)")
    t0 = time.perf_counter()
    dlib_pts, mtcnn_pts, names = collect(paths, args.backend)
    print(f"{len(names)} faces found by both dlib HOG and MTCNN in {len(paths)} photos ({time.perf_counter() - t0:.0f} s)")
    unit = fit(dlib_pts, mtcnn_pts)
    template, spread = unit.mean(0), unit.std(0)
    print("MTCNN template in dlib's unit face space (mean, std over faces):")
    for name, (x, y), (sx, sy) in zip(MTCNN_NAMES, template, spread):
        print(f"  ({x:.10f}, {y:.10f})   std ({sx:.4f}, {sy:.4f})   {name}")
    disp = corner_displacement(dlib_pts, mtcnn_pts, template)
    # Honest figure: template fitted on one half of the faces, measured on the other.
    half = np.arange(len(names)) % 2 == 0
    cross = np.concatenate([corner_displacement(dlib_pts[~half], mtcnn_pts[~half], fit(dlib_pts[half], mtcnn_pts[half]).mean(0)),
                            corner_displacement(dlib_pts[half], mtcnn_pts[half], fit(dlib_pts[~half], mtcnn_pts[~half]).mean(0))])
    print("chip corner displacement, MTCNN-template chip vs dlib chip (150 px, padding 0.25), chip pixels:")
    print(f"  fitted on all faces:  mean {disp.mean():.2f}  median {np.median(disp):.2f}  p90 {np.percentile(disp, 90):.2f}  max {disp.max():.2f}")
    print(f"  2-fold cross-checked: mean {cross.mean():.2f}  median {np.median(cross):.2f}  p90 {np.percentile(cross, 90):.2f}  max {cross.max():.2f}")
    side, angle, centre = check_against_dlib(paths[0])
    print(f"sanity: this similarity() vs dlib.get_face_chip_details on {paths[0].name}: chip side {side:.1e} px, "
          f"angle {angle:.1e} rad, centre {centre:.1e} px")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "description": "MTCNN 5 landmarks in dlib's unit face-chip space (before padding); a padded chip point is "
                       "(padding + p) / (2 * padding + 1) * size, as dlib's get_face_chip_details",
        "order": MTCNN_NAMES,
        "template": [[round(float(x), 10), round(float(y), 10)] for x, y in template],
        "std": [[round(float(x), 6), round(float(y), 6)] for x, y in spread],
        "faces": len(names), "photos": len(paths), "mtcnn_backend": args.backend,
        "sources": "shared/datasets people/ (single-face) and lfw/ (every k-th of labels.csv)",
        "chip_corner_displacement_px_150_pad025": {
            "fitted_mean": round(float(disp.mean()), 3), "fitted_median": round(float(np.median(disp)), 3),
            "fitted_p90": round(float(np.percentile(disp, 90)), 3),
            "crossval_mean": round(float(cross.mean()), 3), "crossval_p90": round(float(np.percentile(cross, 90)), 3)},
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
