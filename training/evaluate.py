"""Accuracy of the daemon's own detection, alignment and models on labelled photos.

Every photo goes through `edge.pipeline.analyze_faces` with the config in force (`--config`,
`--set key=value`), exactly as `edge analyze` runs it. Writes a Markdown + JSON report and PNG plots
(default training/reports/accuracy.{md,json}, accuracy_*.png). Per-photo results are cached under
--cache (keyed by the detector config and the model files' hashes), so re-runs are cheap.

Sections and the data each one reads (default: the shared datasets, ../shared/datasets):
  detection     boxes CSV (file,x,y,w,h[,ignore|difficult]) per detector (--detectors haar,mtcnn); IoU >= 0.5
  attributes    age / gender labels: a labels CSV (file[,age][,gender]) or a UTKFace-named folder
                (age_gender_race_date.jpg, gender 0 = male, 1 = female); tight chips are padded (--pad)
  verification  a pairs CSV (file_a,file_b,same[,fold]): accuracy at identity.threshold, ROC, AUC, TAR@FAR
  open set      a folder with one sub-folder per person: half the people enrolled with one photo each,
                rank-1 on the others' photos, false accepts on the strangers' photos
  averaging     synthetic clips (shift, scale, blur, brightness, noise) from stills; metrics vs frames averaged;
                and on the shared real videos, tracked: N-frame identity decisions vs the whole track's

    python training/evaluate.py                       # everything on the shared datasets
    python training/evaluate.py --quick               # small subsets (the test suite runs this)
    python training/evaluate.py --pairs my/pairs.csv --people my/people --utkface my/utk --sections verification
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import pickle
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge import evaluation as ev  # noqa: E402
from edge.config import load_config, validate  # noqa: E402
from edge.images import ImageError, load_image  # noqa: E402
from edge.models.loader import load_models  # noqa: E402
from edge.pipeline import analyze_faces  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets"
REPORTS = ROOT / "training" / "reports"
DEFAULT_CACHE = Path("/tmp/edge-eval-cache")
SECTIONS = ("detection", "attributes", "verification", "openset", "averaging")
AGE_BANDS = [0, 13, 18, 30, 45, 60, 200]
ADULT_AGE = 18
FRAMES_AVERAGED = (1, 3, 5, 10, 20)
UTK_PAD = 0.5        # share of the chip size added on every side before detection


# --- running the daemon's pipeline, cached ----------------------------------------------------------
@dataclass
class FaceRecord:
    box: tuple[int, int, int, int]
    score: float
    age: float
    female: float
    embedding: np.ndarray

    def row(self) -> tuple:
        """Plain tuple for the cache (a pickled class would tie the cache to how this file was run)."""
        return (self.box, self.score, self.age, self.female, self.embedding)


def _records(rows):
    return None if rows is None else [FaceRecord(*r) for r in rows]


def _rows(records):
    return None if records is None else [r.row() for r in records]


def pad_image(image: np.ndarray, share: float) -> np.ndarray:
    """Tight chips leave the detector no context: add a mid-grey border of `share` x size per side."""
    if share <= 0:
        return image
    border = int(round(max(image.shape[:2]) * share))
    return cv2.copyMakeBorder(image, border, border, border, border, cv2.BORDER_CONSTANT, value=(128, 128, 128))


class Analyzer:
    """`analyze_faces` on files, with results cached per (config, models, file, padding)."""

    def __init__(self, cfg, cache_dir: Path | None):
        self.cfg = cfg
        self.models = load_models(cfg)
        # A re-converted model file (new size or time) starts a new cache.
        files = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in cfg.models.dir.iterdir()
                       if p.suffix in (".onnx", ".tflite"))
        key = json.dumps({"detector": cfg.detector.model_dump(mode="json"), "backend": cfg.models.backend,
                          "files": files}, sort_keys=True)
        self.key = hashlib.sha1(key.encode()).hexdigest()[:16]
        self.cache_file = cache_dir / f"faces-{cfg.detector.type}-{self.key}.pkl" if cache_dir else None
        self.cache: dict = {}
        if self.cache_file and self.cache_file.exists():
            with open(self.cache_file, "rb") as f:
                self.cache = pickle.load(f)
        self._dirty = 0

    def faces(self, path: Path, pad: float = 0.0) -> list[FaceRecord] | None:
        """Faces in a photo, left to right; None if the file cannot be read."""
        rows = self._cached((str(Path(path).resolve()), pad), path, lambda image: _rows(
            self.faces_in(pad_image(image, pad), offset=self._border(image, pad))))
        return _records(rows)

    def _cached(self, key, path: Path, compute):
        """compute(image) for a photo, once per cache; None (remembered too) if the file cannot be read."""
        if key not in self.cache:
            try:
                image = load_image(path)
            except ImageError as exc:
                tqdm.write(f"skipped: {exc}")
                self.cache[key] = None
            else:
                self.cache[key] = compute(image)
            self._dirty += 1
            if self._dirty >= 200:
                self.save()
        return self.cache[key]

    @staticmethod
    def _border(image, pad) -> int:
        return int(round(max(image.shape[:2]) * pad)) if pad > 0 else 0

    def faces_in(self, image_bgr: np.ndarray, offset: int = 0) -> list[FaceRecord]:
        _, faces = analyze_faces(self.models, image_bgr)
        records = [FaceRecord((f.box[0] - offset, f.box[1] - offset, f.box[2], f.box[3]), float(f.score),
                              float(f.age), float(f.female_probability), np.asarray(f.embedding, np.float32))
                   for f in faces]
        return sorted(records, key=lambda r: r.box[0])

    def detect_boxes(self, path: Path) -> list[tuple[int, int, int, int]] | None:
        """Detector output only (no landmarks/models), cached separately: detection metrics need nothing else."""
        return self._cached(("boxes", str(Path(path).resolve())), path, lambda image: [
            tuple(int(v) for v in f.box) for f in self.models.detector.detect(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))])

    def save(self) -> None:
        if self.cache_file and self._dirty:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                pickle.dump(self.cache, f)
            tmp.replace(self.cache_file)
            self._dirty = 0


def central_face(faces: list[FaceRecord] | None, width: int, height: int) -> FaceRecord | None:
    """The labelled face of a one-person photo: the detection nearest the centre (LFW, padded chips)."""
    if not faces:
        return None
    cx, cy = width / 2, height / 2
    return min(faces, key=lambda f: (f.box[0] + f.box[2] / 2 - cx) ** 2 + (f.box[1] + f.box[3] / 2 - cy) ** 2)


def largest_face(faces: list[FaceRecord] | None) -> FaceRecord | None:
    return max(faces, key=lambda f: f.box[2] * f.box[3]) if faces else None


def image_size(path: Path) -> tuple[int, int]:
    from PIL import Image
    with Image.open(path) as image:
        return image.size


# --- input layouts ---------------------------------------------------------------------------------
@dataclass
class LabelledImage:
    path: Path
    age: float | None = None
    gender: str | None = None      # "female" | "male"
    identity: str | None = None
    pad: float = 0.0


def read_labels_csv(path: Path, pad: float = 0.0) -> list[LabelledImage]:
    """file[,age][,gender][,identity|person]; files relative to the CSV's folder."""
    items = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            gender = (row.get("gender") or "").strip().lower() or None
            gender = {"f": "female", "m": "male", "1": "female", "0": "male"}.get(gender, gender)
            age = row.get("age")
            items.append(LabelledImage(path.parent / row["file"], float(age) if age not in (None, "") else None,
                                       gender, row.get("identity") or row.get("person") or None, pad))
    return items


def read_utkface_folder(folder: Path, pad: float = UTK_PAD) -> list[LabelledImage]:
    """UTKFace names: `age_gender_race_date.jpg[.chip.jpg]`, gender 0 = male, 1 = female."""
    items = []
    for path in sorted(folder.rglob("*")):
        parts = path.name.split("_")
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png") or len(parts) < 3:
            continue
        try:
            age, gender = int(parts[0]), int(parts[1])
        except ValueError:
            continue
        items.append(LabelledImage(path, float(age), "male" if gender == 0 else "female", None, pad))
    return items


def read_person_folders(folder: Path) -> list[LabelledImage]:
    """One sub-folder per person (names starting with '_' or '.' are skipped)."""
    items = []
    for person in sorted(p for p in folder.iterdir() if p.is_dir() and p.name[0] not in "_."):
        for path in sorted(person.iterdir()):
            if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
                items.append(LabelledImage(path, identity=person.name))
    return items


def read_pairs_csv(path: Path) -> list[tuple[Path, Path, bool, int]]:
    """file_a,file_b,same[,fold]; files relative to the CSV's folder."""
    with open(path, newline="") as f:
        return [(path.parent / r["file_a"], path.parent / r["file_b"], r["same"].strip() in ("1", "true", "True"),
                 int(r.get("fold") or 0)) for r in csv.DictReader(f)]


def read_boxes_csv(path: Path, image_root: Path | None = None) -> dict[Path, list[tuple[tuple, bool]]]:
    """file,x,y,w,h[,ignore|difficult] -> {image: [(box, ignore)]}."""
    root = image_root or path.parent
    boxes: dict[Path, list] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            ignore = (r.get("ignore") or r.get("difficult") or "0").strip() in ("1", "true", "True")
            box = tuple(int(float(r[k])) for k in ("x", "y", "w", "h"))
            boxes.setdefault(root / r["file"], []).append((box, ignore))
    return boxes


def subsample(items: list, limit: int | None) -> list:
    """Every k-th item, so a subset keeps the spread (ages, folds, people) of the whole list."""
    if not limit or len(items) <= limit:
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


@dataclass
class Suite:
    detection: dict[str, tuple[Path, Path | None, int | None]] = field(default_factory=dict)
    attributes: dict[str, list[LabelledImage]] = field(default_factory=dict)
    pairs: dict[str, list] = field(default_factory=dict)
    people: dict[str, list[LabelledImage]] = field(default_factory=dict)
    averaging_attributes: list[LabelledImage] = field(default_factory=list)
    averaging_pairs: list = field(default_factory=list)
    averaging_videos: list[tuple[Path, Path]] = field(default_factory=list)   # (video, gallery folder)
    subsets: list[tuple[str, str]] = field(default_factory=list)    # (section, what was left out), for the report


def shared_suite(root: Path, quick: bool) -> Suite:
    """The shared datasets, with subsets sized for a 2-core box (--quick: for the test suite)."""
    suite = Suite()
    if (root / "detection_dlib" / "boxes.csv").exists():
        suite.detection["detection_dlib"] = (root / "detection_dlib" / "boxes.csv", None, 3 if quick else None)
    if (root / "detection_masks" / "labels.csv").exists():
        suite.detection["detection_masks"] = (root / "detection_masks" / "labels.csv", None, 3 if quick else 200)
        suite.subsets.append(("detection", "detection_masks: 200 of its 853 photos (every k-th file), to bound "
                              "MTCNN's time"))
    if (root / "utkface" / "labels.csv").exists():
        utk = read_labels_csv(root / "utkface" / "labels.csv", pad=UTK_PAD)
        suite.attributes["utkface"] = subsample(utk, 12 if quick else None)
        suite.averaging_attributes = subsample([i for i in utk if i.age >= 10], 1 if quick else 150)
    if (root / "lfw" / "labels.csv").exists():
        lfw = read_labels_csv(root / "lfw" / "labels.csv")
        suite.attributes["lfw"] = subsample(lfw, 12 if quick else None)
    if (root / "lfw" / "pairs.csv").exists():
        pairs = read_pairs_csv(root / "lfw" / "pairs.csv")
        suite.pairs["lfw"] = subsample(pairs, 16 if quick else None)
        same = [p for p in pairs if p[3] == 0 and p[2]]
        diff = [p for p in pairs if p[3] == 0 and not p[2]]
        suite.averaging_pairs = subsample(same, 2 if quick else 100) + subsample(diff, 2 if quick else 100)
        suite.subsets.append(("averaging", "averaging: 150 UTKFace chips aged 10+ and 100 same + 100 different "
                              "LFW pairs of fold 0 (every k-th), 20 synthetic frames each"))
    if (root / "people").is_dir() and not quick:
        # Real footage: Lin-Manuel Miranda (enrolled from people/) and audience members who are not enrolled;
        # the street clip holds strangers only.
        for video in (root / "people" / "_video" / "short_hamilton_clip.mp4",
                      root / "video" / "covent_garden_walkers_facenet_pytorch.mp4"):
            if video.exists():
                suite.averaging_videos.append((video, root / "people"))
    if (root / "people").is_dir():
        suite.people["people"] = read_person_folders(root / "people")
    if not quick and (root / "lfw" / "labels.csv").exists():
        # A larger open-set check: LFW people with at least 2 photos.
        by_person: dict[str, list] = {}
        for item in read_labels_csv(root / "lfw" / "labels.csv"):
            by_person.setdefault(item.identity, []).append(item)
        suite.people["lfw_people"] = [i for v in by_person.values() if len(v) >= 2 for i in v]
    return suite


# --- sections ----------------------------------------------------------------------------------------
def evaluate_detection(analyzers: dict[str, Analyzer], suite: Suite, plots: Path) -> dict:
    result = {}
    for name, (csv_path, image_root, limit) in suite.detection.items():
        boxes = read_boxes_csv(csv_path, image_root)
        files = subsample(sorted(boxes), limit)
        result[name] = {"images": len(files), "faces": sum(1 for f in files for _, ig in boxes[f] if not ig),
                        "detectors": {}}
        for detector, analyzer in analyzers.items():
            totals = {0.5: [0, 0, 0], 0.3: [0, 0, 0]}
            for path in tqdm(files, desc=f"detection {name} {detector}", unit="img"):
                found = analyzer.detect_boxes(path) or []
                truth = [b for b, _ in boxes[path]]
                ignore = [ig for _, ig in boxes[path]]
                for min_iou, total in totals.items():
                    m = ev.match_detections(found, truth, ignore, min_iou)
                    total[0] += m["tp"]
                    total[1] += m["fp"]
                    total[2] += m["fn"]
            analyzer.save()
            result[name]["detectors"][detector] = {
                "iou_0.5": ev.precision_recall(*totals[0.5]), "iou_0.3": ev.precision_recall(*totals[0.3]),
                "min_face": analyzer.cfg.detector.min_face}
    return result


def one_face_recall(analyzer: Analyzer, items: list[LabelledImage], desc: str) -> dict:
    """One-face-per-image labels: found = a detection covers the image centre (LFW, padded chips)."""
    found = 0
    extra = 0
    for item in tqdm(items, desc=desc, unit="img"):
        faces = analyzer.faces(item.path, item.pad) or []
        w, h = image_size(item.path)
        hit = any(f.box[0] <= w / 2 <= f.box[0] + f.box[2] and f.box[1] <= h / 2 <= f.box[1] + f.box[3]
                  for f in faces)
        found += hit
        extra += max(0, len(faces) - int(hit))
    return {"images": len(items), "recall": found / len(items) if items else float("nan"),
            "other_detections": extra}


def attribute_predictions(analyzer: Analyzer, items: list[LabelledImage], desc: str):
    """(item, face or None) for every labelled photo."""
    out = []
    for item in tqdm(items, desc=desc, unit="img"):
        faces = analyzer.faces(item.path, item.pad)
        w, h = image_size(item.path)
        out.append((item, central_face(faces, w, h)))
    analyzer.save()
    return out


def age_gender_metrics(pairs) -> dict:
    detected = [(i, f) for i, f in pairs if f is not None]
    result = {"images": len(pairs), "faces_found": len(detected)}
    gendered = [(i, f) for i, f in detected if i.gender in ("female", "male")]
    if gendered:
        truth = [i.gender for i, _ in gendered]
        pred = ["female" if f.female >= 0.5 else "male" for _, f in gendered]
        result["gender"] = ev.classification_report(truth, pred, ["female", "male"])
        adults = [(i, f) for i, f in gendered if i.age is not None and i.age >= ADULT_AGE]
        if adults:
            result["gender_adults"] = ev.classification_report(
                [i.gender for i, _ in adults], ["female" if f.female >= 0.5 else "male" for _, f in adults],
                ["female", "male"])
    aged = [(i, f) for i, f in detected if i.age is not None]
    if aged:
        truth = np.array([i.age for i, _ in aged])
        pred = np.array([f.age for _, f in aged])
        result["age"] = ev.regression_errors(truth, pred)
        result["age_adults"] = ev.regression_errors(truth[truth >= ADULT_AGE], pred[truth >= ADULT_AGE])
        # UTKFace's sample is flat over ages up to 90, so "adults" leans on the old; 18-59 is a door camera's crowd.
        working = (truth >= ADULT_AGE) & (truth < 60)
        result["age_18_59"] = ev.regression_errors(truth[working], pred[working])
        result["age_bands"] = ev.errors_by_band(truth, pred, AGE_BANDS[:-1] + [np.inf])
    return result


def evaluate_attributes(analyzer: Analyzer, suite: Suite, plots: Path) -> dict:
    result = {}
    for name, items in suite.attributes.items():
        pairs = attribute_predictions(analyzer, items, f"attributes {name}")
        result[name] = age_gender_metrics(pairs)
        result[name]["one_face_recall"] = one_face_recall(analyzer, items, f"recall {name}")
        aged = [(i.age, f.age) for i, f in pairs if f is not None and i.age is not None]
        if aged and plots:
            plot_age(np.array(aged), _plot(plots, f"age_{name}.png"), name)
    return result


def pair_distances(analyzer: Analyzer, pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """L2 distance per pair of the central faces; inf when either photo has no face."""
    distances, same, folds = [], [], []
    missing = 0
    for a, b, is_same, fold in tqdm(pairs, desc="verification pairs", unit="pair"):
        fa = central_face(analyzer.faces(a), *image_size(a))
        fb = central_face(analyzer.faces(b), *image_size(b))
        if fa is None or fb is None:
            missing += 1
            distances.append(np.inf)
        else:
            distances.append(float(np.linalg.norm(fa.embedding - fb.embedding)))
        same.append(is_same)
        folds.append(fold)
    analyzer.save()
    return np.array(distances), np.array(same, bool), np.array(folds), missing


def evaluate_verification(analyzer: Analyzer, suite: Suite, plots: Path) -> dict:
    result = {}
    threshold = analyzer.cfg.identity.threshold
    for name, pairs in suite.pairs.items():
        d, same, folds, missing = pair_distances(analyzer, pairs)
        roc = ev.roc_curve(d, same)
        entry = {"pairs": len(pairs), "same": int(same.sum()), "different": int((~same).sum()),
                 "pairs_without_face": missing, "at_threshold": ev.verification_at(d, same, threshold),
                 "at_threshold_faces_found": ev.verification_at(d[np.isfinite(d)], same[np.isfinite(d)], threshold),
                 "auc_faces_found": ev.roc_curve(d[np.isfinite(d)], same[np.isfinite(d)]).auc,
                 "auc": roc.auc, "tar_at_far": [ev.tar_at_far(roc, far) for far in (0.001, 0.01)],
                 "f1_optimal": ev.f1_optimal_threshold(d, same),
                 "best_accuracy": ev.best_accuracy_threshold(d, same)}
        # Threshold chosen on the other folds, accuracy measured on the held-out one (LFW protocol).
        if len(set(folds.tolist())) > 1:
            held = []
            for fold in sorted(set(folds.tolist())):
                train = folds != fold
                t = ev.best_accuracy_threshold(d[train], same[train])["threshold"]
                held.append(ev.verification_at(d[~train], same[~train], t)["accuracy"])
            entry["cross_fold_accuracy"] = {"mean": float(np.mean(held)), "per_fold": held}
        result[name] = entry
        if plots:
            plot_roc(roc, _plot(plots, f"roc_{name}.png"), name)
            ev.plot_distance_histograms(d, same, threshold, _plot(plots, f"distances_{name}.png"), f"{name} pairs")
    return result


def openset_splits(items: list[LabelledImage], max_splits: int, seed: int = 0):
    """(gallery items, probe items) splits: half the people enrolled with one photo each, their
    other photos and every photo of the other half probed. People enrolled and enrolment photo rotate."""
    people = sorted({i.identity for i in items})
    photos = {p: [i for i in items if i.identity == p] for p in people}
    half = len(people) // 2
    rng = np.random.default_rng(seed)
    if len(people) <= 12:      # few people: every way of choosing the enrolled half, or a sample of them
        combos = list(itertools.combinations(people, half))
        if len(combos) > max_splits:
            combos = [combos[i] for i in rng.choice(len(combos), max_splits, replace=False)]
    else:                       # many people: random halves (enumerating them would never end)
        combos = [tuple(rng.choice(people, half, replace=False)) for _ in range(max_splits)]
    for k, enrolled in enumerate(combos):
        gallery = [photos[p][k % len(photos[p])] for p in enrolled]
        chosen = {id(g) for g in gallery}
        probes = [i for i in items if id(i) not in chosen]
        yield gallery, probes


def evaluate_openset(analyzer: Analyzer, suite: Suite, plots: Path) -> dict:
    result = {}
    threshold = analyzer.cfg.identity.threshold
    for name, items in suite.people.items():
        embedded = []
        for item in tqdm(items, desc=f"open set {name}", unit="img"):
            faces = analyzer.faces(item.path, item.pad)
            if faces is None:
                continue
            w, h = image_size(item.path)
            face = central_face(faces, w, h) if name.startswith("lfw") else largest_face(faces)
            embedded.append((item, face))
        analyzer.save()
        usable = [(i, f) for i, f in embedded if f is not None]
        splits, known_best, known_correct, stranger_best = [], [], [], []
        vec = {id(i): f.embedding for i, f in usable}
        for gallery, probes in openset_splits([i for i, _ in usable], 20 if name == "people" else 10):
            probe_vectors = np.stack([vec[id(p)] for p in probes])
            gallery_vectors = np.stack([vec[id(g)] for g in gallery])
            splits.append(ev.open_set_identification(probe_vectors, [p.identity for p in probes], gallery_vectors,
                                                     [g.identity for g in gallery], threshold))
            d = np.linalg.norm(probe_vectors[:, None] - gallery_vectors[None], axis=2)
            best, nearest = d.min(axis=1), d.argmin(axis=1)
            enrolled = {g.identity for g in gallery}
            known = np.array([p.identity in enrolled for p in probes])
            correct = np.array([gallery[j].identity == p.identity for j, p in zip(nearest, probes)])
            known_best.append(best[known])
            known_correct.append(correct[known])
            stranger_best.append(best[~known])
        # The threshold that would hold stranger false accepts to 1% with this gallery size.
        strangers = np.sort(np.concatenate(stranger_best))
        t1 = float(strangers[int(0.01 * len(strangers))]) if len(strangers) else float("nan")
        kb, kc = np.concatenate(known_best), np.concatenate(known_correct)
        keys = ("rank1", "rank1_closed_set", "false_reject", "stranger_false_accept")
        result[name] = {"people": len({i.identity for i in items}), "photos": len(items),
                        "photos_without_face": len(embedded) - len(usable) + len(items) - len(embedded),
                        "splits": len(splits), "gallery_size": len({i.identity for i in items}) // 2,
                        "threshold_for_1pct_stranger_fa": t1,
                        "rank1_at_that_threshold": float(np.mean(kc & (kb < t1))) if len(kb) else float("nan"),
                        "enrolled_probes": int(sum(s["enrolled_probes"] for s in splits)),
                        "stranger_probes": int(sum(s["stranger_probes"] for s in splits)),
                        **{k: float(np.average([s[k] for s in splits],
                                               weights=[s["enrolled_probes" if k != "stranger_false_accept"
                                                          else "stranger_probes"] for s in splits]))
                           for k in keys}}
    return result


# --- multi-frame averaging --------------------------------------------------------------------------
def synthetic_clip(image: np.ndarray, frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A person standing before a camera, from one still: small shifts and scale changes (head and
    detector jitter), blur (focus, motion), brightness/contrast (auto exposure) and sensor noise."""
    h, w = image.shape[:2]
    clip = []
    for _ in range(frames):
        scale = rng.uniform(0.9, 1.1)
        angle = rng.uniform(-4, 4)
        shift = rng.uniform(-0.03, 0.03, 2) * (w, h)
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        matrix[:, 2] += shift
        frame = cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
        sigma = rng.uniform(0.0, 1.5)
        if sigma > 0.3:
            frame = cv2.GaussianBlur(frame, (0, 0), sigma)
        frame = frame.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25)
        frame += rng.normal(0, rng.uniform(2, 8), frame.shape)
        clip.append(np.clip(frame, 0, 255).astype(np.uint8))
    return clip


def clip_faces(analyzer: Analyzer, image: np.ndarray, frames: int, seed: int, cache_key) -> list[FaceRecord]:
    """The central face of each frame of a synthetic clip (frames without one are dropped, like a tracker)."""
    key = ("clip", cache_key, frames, seed)
    if key not in analyzer.cache:
        rng = np.random.default_rng(seed)
        h, w = image.shape[:2]
        out = []
        for frame in synthetic_clip(image, frames, rng):
            face = central_face(analyzer.faces_in(frame), w, h)
            if face is not None:
                face.embedding = face.embedding.astype(np.float16)   # keeps the cache small
                out.append(face)
        analyzer.cache[key] = _rows(out)
        analyzer._dirty += 1
        if analyzer._dirty >= 10:
            analyzer.save()
    return _records(analyzer.cache[key])


def _seed(path: Path) -> int:
    """One clip per photo, the same on every run (and in every subset)."""
    return zlib.crc32(Path(path).name.encode())


def windows(faces: list, n: int) -> list[list]:
    """The clip's disjoint n-frame windows (at least one: a short clip gives all its frames)."""
    return [faces[i * n:(i + 1) * n] for i in range(max(1, len(faces) // n))]


def evaluate_averaging(analyzer: Analyzer, suite: Suite, plots: Path, frames=FRAMES_AVERAGED) -> dict:
    n_max = max(frames)
    result = {"frames": list(frames)}
    threshold = analyzer.cfg.identity.threshold
    min_agreement = analyzer.cfg.identity.min_agreement
    if suite.averaging_attributes:
        rows, incomplete = [], 0
        for item in tqdm(suite.averaging_attributes, desc="averaging age/gender", unit="clip"):
            image = pad_image(load_image(item.path), item.pad)
            faces = clip_faces(analyzer, image, n_max, _seed(item.path), (str(item.path), item.pad))
            # Only clips with a face in every frame: then every window count sees the same frames.
            if len(faces) == n_max:
                rows.append((item, faces))
            else:
                incomplete += 1
        analyzer.save()
        curve = []
        for n in frames if rows else ():
            # Every disjoint n-frame window of every clip is one sample: less luck than the first n frames only.
            samples = [(item, window) for item, faces in rows for window in windows(faces, n)]
            ages = np.array([np.mean([f.age for f in w]) for _, w in samples])
            female = np.array([np.mean([f.female for f in w]) for _, w in samples])
            truth_age = np.array([i.age for i, _ in samples])
            adult = truth_age >= ADULT_AGE
            gender_ok = np.array([(p >= 0.5) == (i.gender == "female") for p, (i, _) in zip(female, samples)])
            curve.append({"frames": n, "samples": len(samples),
                          "age_mae": ev.regression_errors(truth_age, ages)["mae"],
                          "age_mae_adults": ev.regression_errors(truth_age[adult], ages[adult])["mae"],
                          "gender_accuracy": float(gender_ok.mean())})
        single = np.array([[f.age for f in faces[:n_max]] + [np.nan] * (n_max - len(faces[:n_max]))
                           for _, faces in rows])
        result["attributes"] = {"clips": len(rows), "clips_with_missed_frames": incomplete, "curve": curve,
                                "per_frame_age_sd": float(np.nanmean(np.nanstd(single, axis=1))) if rows
                                else float("nan")}
    if suite.averaging_pairs:
        rows, incomplete = [], 0
        for a, b, same, _ in tqdm(suite.averaging_pairs, desc="averaging identity", unit="clip"):
            fa = central_face(analyzer.faces(a), *image_size(a))
            if fa is None:
                continue
            faces = clip_faces(analyzer, load_image(b), n_max, _seed(b), (str(b), 0.0))
            if len(faces) == n_max:
                rows.append((fa.embedding, faces, same))
            else:
                incomplete += 1
        analyzer.save()
        curve = []
        has_both = len({s for _, _, s in rows}) == 2       # a ROC needs same and different pairs
        for n in frames if has_both else ():
            samples = [(g, np.stack([f.embedding.astype(np.float32) for f in w]), s)
                       for g, faces, s in rows for w in windows(faces, n)]
            same = np.array([s for _, _, s in samples])
            d = np.array([np.linalg.norm(e.mean(axis=0) - g) for g, e, _ in samples])
            # pipeline._decide_identity: the averaged match decides only if identity.min_agreement of the
            # per-frame matches say the same; otherwise the track waits for more frames.
            per_frame = [np.linalg.norm(e - g, axis=1) < threshold for g, e, _ in samples]
            accepted = d < threshold
            agree = np.array([np.mean(pf == a) >= min_agreement for pf, a in zip(per_frame, accepted)])
            at = ev.verification_at(d, same, threshold)
            curve.append({"frames": n, "samples": len(samples), "accuracy": at["accuracy"], "tar": at["tar"],
                          "far": at["far"], "auc": ev.roc_curve(d, same).auc,
                          "same_distance_mean": float(d[same].mean()), "same_distance_max": float(d[same].max()),
                          "different_distance_min": float(d[~same].min()),
                          "decided": float(agree.mean()),
                          "decided_accuracy": float(np.mean(accepted[agree] == same[agree])) if agree.any()
                          else float("nan")})
        result["identity"] = {"pairs": len(rows), "clips_with_missed_frames": incomplete, "curve": curve}
    if suite.averaging_videos:
        result["video"] = {video.name: video_averaging(analyzer, video, gallery, frames)
                           for video, gallery in suite.averaging_videos}
    if plots:
        plot_averaging(result, _plot(plots, "averaging.png"))
    return result


def video_faces(analyzer: Analyzer, video: Path) -> list[list[FaceRecord]]:
    """Faces of every frame of a video (cached per video)."""
    key = ("video", str(video.resolve()))
    if key not in analyzer.cache:
        capture = cv2.VideoCapture(str(video))
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        frames = []
        with tqdm(total=total, desc=f"video {video.name}", unit="frame") as bar:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                faces = analyzer.faces_in(frame)
                for face in faces:
                    face.embedding = face.embedding.astype(np.float16)
                frames.append(_rows(faces))
                bar.update()
        capture.release()
        analyzer.cache[key] = frames
        analyzer._dirty += 1
        analyzer.save()
    return [_records(rows) for rows in analyzer.cache[key]]


def video_averaging(analyzer: Analyzer, video: Path, gallery_folder: Path, frames) -> dict:
    """Real footage, tracked as the daemon tracks it: does an N-frame average name a track as the whole
    track's average does? (Whole-track decisions checked by eye on the shared clips: the enrolled person
    is named, audience members and passers-by are unknown.)"""
    from edge.face import Face
    from edge.identify import match_many
    from edge.identify import Gallery
    from edge.track import Tracker

    names, vectors = [], []
    for item in read_person_folders(gallery_folder):
        face = largest_face(analyzer.faces(item.path))
        if face is not None:
            names.append(item.identity)
            vectors.append(face.embedding)
    gallery = Gallery(np.array(names, dtype=object), np.stack(vectors).astype(np.float32))
    threshold = analyzer.cfg.identity.threshold
    fps = cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FPS) or 25.0
    tracker = Tracker(analyzer.cfg.tracking.model_copy(update={"window": 10 ** 6}), analyzer.cfg.identity)
    tracks: dict[int, list[np.ndarray]] = {}
    for index, records in enumerate(video_faces(analyzer, video)):
        faces = [Face(r.box, r.score, embedding=r.embedding.astype(np.float32)) for r in records]
        tracked, _ = tracker.update(faces, index / fps)
        for face in tracked:
            tracks.setdefault(face.track_id, []).append(face.embedding)
    long = {tid: np.stack(e) for tid, e in tracks.items() if len(e) >= max(frames)}
    whole = {tid: match_many(e.mean(axis=0)[None], gallery, threshold)[0].name for tid, e in long.items()}
    curve = []
    for n in frames:
        same, false_accepts, wrong_names, count, rule_named = 0, 0, 0, 0, 0
        for tid, e in long.items():
            for w in windows(list(e), n):
                name = match_many(np.mean(w, axis=0)[None], gallery, threshold)[0].name
                count += 1
                same += name == whole[tid]
                false_accepts += whole[tid] is None and name is not None
                wrong_names += whole[tid] is not None and name is not None and name != whole[tid]
                # The daemon also wants identity.min_agreement of the per-frame matches to say that name.
                per_frame = [m.name for m in match_many(np.stack(w), gallery, threshold)]
                agreed = per_frame.count(name) / len(per_frame) >= analyzer.cfg.identity.min_agreement
                rule_named += agreed and name is not None and name != whole[tid]
        curve.append({"frames": n, "windows": count, "agrees_with_track": same / count if count else float("nan"),
                      "stranger_named": false_accepts, "wrong_name": wrong_names,
                      "wrongly_named_with_agreement_rule": rule_named})
    return {"tracks": len(long), "track_frames": [len(e) for e in long.values()],
            "whole_track_names": sorted(str(n) for n in whole.values()), "curve": curve}


# --- plots -------------------------------------------------------------------------------------------
def _plot(prefix: Path, suffix: str) -> Path:
    """Plot file beside the report: <out>/<name>_<suffix>."""
    return prefix.with_name(f"{prefix.name}_{suffix}")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_roc(roc: ev.Roc, path: Path, name: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    far = np.clip(roc.far, 1e-4, 1)
    ax.semilogx(far, roc.tar, drawstyle="steps-post")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"ROC, {name} (AUC {roc.auc:.4f})")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_age(pairs: np.ndarray, path: Path, name: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(pairs[:, 0], pairs[:, 1], s=4, alpha=0.4)
    ax.plot([0, 90], [0, 90], "k--", linewidth=1)
    ax.set_xlabel("true age")
    ax.set_ylabel("estimated age")
    ax.set_title(f"age, {name}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_averaging(result: dict, path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.5))
    if "attributes" in result:
        c = result["attributes"]["curve"]
        axes[0].plot([r["frames"] for r in c], [r["age_mae_adults"] for r in c], "o-", label="adults")
        axes[0].plot([r["frames"] for r in c], [r["age_mae"] for r in c], "o-", label="all")
        axes[0].set_title("age MAE (years)")
        axes[0].legend()
        axes[1].plot([r["frames"] for r in c], [r["gender_accuracy"] for r in c], "o-")
        axes[1].set_title("gender accuracy")
    if "identity" in result:
        c = result["identity"]["curve"]
        axes[2].plot([r["frames"] for r in c], [r["accuracy"] for r in c], "o-")
        axes[2].set_title("verification accuracy at threshold")
    for video, v in result.get("video", {}).items():
        c = v["curve"]
        axes[3].plot([r["frames"] for r in c], [r["agrees_with_track"] for r in c], "o-", label=video[:18])
        axes[3].set_title("real video: same name as whole track")
        axes[3].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("frames averaged")
        ax.set_xscale("log")
        ax.set_xticks(result["frames"], [str(n) for n in result["frames"]])
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- report ------------------------------------------------------------------------------------------
def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f}%"


def markdown(report: dict) -> str:
    lines = ["# Accuracy of the daemon's own pipeline", "",
             f"Produced by `training/evaluate.py` on {report['date']} ({report['elapsed_s']:.0f} s). Config in force: "
             f"detector `{report['config']['detector']}`, identity.threshold {report['config']['threshold']}, "
             f"backend {report['config']['backend']}. Data: `{report['data']}`"
             + (" (--quick: a few photos per set, for the tests)" if report.get("quick") else "")
             + ("; every photo of each set except " + "; ".join(report["subsets"]) if report.get("subsets") else "")
             + ". Per-photo results come from the cache when present, so the time above may be a re-run's.", ""]
    if "detection" in report:
        lines += ["## Face detection", "",
                  "| set | images | faces | detector | min_face | recall (IoU>=0.5) | precision (IoU>=0.5) | "
                  "recall (IoU>=0.3) | precision (IoU>=0.3) |", "|---|---|---|---|---|---|---|---|---|"]
        for name, r in report["detection"].items():
            for det, m in r["detectors"].items():
                a, b = m["iou_0.5"], m["iou_0.3"]
                lines.append(f"| {name} | {r['images']} | {r['faces']} | {det} | {m['min_face']} | "
                             f"{_pct(a['recall'])} | {_pct(a['precision'])} | {_pct(b['recall'])} | "
                             f"{_pct(b['precision'])} |")
        lines += ["", "IoU 0.3 is shown too because box conventions differ (Haar boxes include more forehead "
                  "than dlib's or the mask set's boxes); `detection_masks` lacks boxes for some background faces, "
                  "so its precision reads low.", ""]
    if "attributes" in report:
        lines += ["## Gender and age", "",
                  "| set | photos | face found | gender acc. | female recall | male recall | gender acc. adults | "
                  "age MAE | age RMSE | age MAE adults | age RMSE adults |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in report["attributes"].items():
            g, ga = r.get("gender", {}), r.get("gender_adults", {})
            age, adults = r.get("age"), r.get("age_adults")
            lines.append(
                f"| {name} | {r['images']} | {_pct(r['faces_found'] / max(1, r['images']))} | "
                f"{_pct(g.get('accuracy'))} | {_pct(g.get('recall', {}).get('female'))} | "
                f"{_pct(g.get('recall', {}).get('male'))} | {_pct(ga.get('accuracy'))} | "
                + (f"{age['mae']:.2f} | {age['rmse']:.2f} | {adults['mae']:.2f} | {adults['rmse']:.2f} |" if age
                   else "n/a | n/a | n/a | n/a |"))
        for name, r in report["attributes"].items():
            if "gender" in r:
                c = r["gender"]["confusion"]
                lines += ["", f"Gender confusion, {name} (rows true, columns predicted): female -> "
                          f"[{c[0][0]} female, {c[0][1]} male], male -> [{c[1][0]} female, {c[1][1]} male]."]
            if "age_bands" in r:
                lines += ["", f"Age error by band, {name}: 18-59 together MAE {r['age_18_59']['mae']:.2f} "
                          f"(n={r['age_18_59']['n']}); " + "; ".join(
                    f"{b['band']}: MAE {b['mae']:.1f}, bias {b['bias']:+.1f} (n={b['n']})"
                    for b in r["age_bands"] if b["n"])]
        lines.append("")
    if "verification" in report:
        lines += ["## Identity verification (pairs)", "",
                  "| set | pairs | no face | accuracy at threshold | TAR / FAR at threshold | AUC | TAR@FAR 0.1% | "
                  "TAR@FAR 1% | best threshold (acc.) | cross-fold acc. |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in report["verification"].items():
            at = r["at_threshold"]
            t01, t1 = r["tar_at_far"]
            note = lambda t: _pct(t["tar"]) + ("" if t["resolvable"] else " (too few pairs)")  # noqa: E731
            lines.append(f"| {name} | {r['pairs']} | {r['pairs_without_face']} | {_pct(at['accuracy'])} "
                         f"(t={at['threshold']}) | {_pct(at['tar'])} / {_pct(at['far'])} | {r['auc']:.4f} | "
                         f"{note(t01)} | {note(t1)} | {r['best_accuracy']['threshold']:.3f} "
                         f"({_pct(r['best_accuracy']['accuracy'])}) | "
                         f"{_pct(r.get('cross_fold_accuracy', {}).get('mean'))} |")
        for name, r in report["verification"].items():
            f = r["at_threshold_faces_found"]
            lines.append(f"\n{name}: a pair in which either photo has no detected face counts as \"different\". "
                         f"On the {f['n']} pairs with both faces found: accuracy {_pct(f['accuracy'])}, TAR "
                         f"{_pct(f['tar'])}, FAR {_pct(f['far'])}, AUC {r['auc_faces_found']:.4f}.")
        lines.append("")
    if "openset" in report:
        lines += ["## Open-set identification", "",
                  "Half the people enrolled with one photo each; probes = their other photos and every photo of "
                  "the other half (strangers); enrolled people and enrolment photo rotate over the splits.", "",
                  "| set | people (enrolled) | photos | splits | enrolled probes | stranger probes | "
                  "rank-1 (open set) | "
                  "rank-1 (closed set) | false reject | stranger false accept | threshold for 1% stranger FA | "
                  "rank-1 there |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in report["openset"].items():
            lines.append(f"| {name} | {r['people']} ({r['gallery_size']}) | {r['photos']} | {r['splits']} | "
                         f"{r['enrolled_probes']} | {r['stranger_probes']} | {_pct(r['rank1'])} | "
                         f"{_pct(r['rank1_closed_set'])} | {_pct(r['false_reject'])} | "
                         f"{_pct(r['stranger_false_accept'])} | {r['threshold_for_1pct_stranger_fa']:.3f} | "
                         f"{_pct(r['rank1_at_that_threshold'])} |")
        lines += ["", "A stranger is falsely accepted when *any* of the enrolled people is nearer than the threshold, "
                  "so the false-accept rate grows with the gallery: a pair-wise FAR of 0.3% becomes ~50% against "
                  "225 people."]
        lines.append("")
    if "averaging" in report:
        a = report["averaging"]
        lines += ["## Multi-frame averaging (synthetic clips, then real video)", "",
                  f"Each still becomes a {max(a['frames'])}-frame clip (rotation +-4 deg, scale 0.9-1.1, shift +-3%, "
                  "Gaussian blur "
                  "sigma 0-1.5, gain 0.7-1.3, offset +-25, noise sigma 2-8); each frame goes through detection, "
                  "landmarks, alignment and the models; outputs of N frames are averaged as track.py does, over "
                  "every disjoint N-frame window of every clip. `decided`: share of windows whose per-frame "
                  "matches agree with the "
                  "averaged one (identity.min_agreement), as the daemon requires before it names a track. "
                  "Identity: the gallery side is the still, the probe side the clip.", "",
                  "| frames | age MAE | age MAE adults | gender acc. | verification acc. | TAR | FAR | AUC | "
                  "same-person distance mean / max | different-person distance min | decided (agreement) | "
                  "acc. when decided |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        att = {r["frames"]: r for r in a.get("attributes", {}).get("curve", [])}
        ide = {r["frames"]: r for r in a.get("identity", {}).get("curve", [])}
        for n in a["frames"]:
            x, y = att.get(n, {}), ide.get(n, {})
            nan = float("nan")
            lines.append(f"| {n} | {x.get('age_mae', nan):.2f} | {x.get('age_mae_adults', nan):.2f} | "
                         f"{_pct(x.get('gender_accuracy'))} | {_pct(y.get('accuracy'))} | {_pct(y.get('tar'))} | "
                         f"{_pct(y.get('far'))} | {y.get('auc', float('nan')):.4f} | "
                         f"{y.get('same_distance_mean', nan):.3f} / {y.get('same_distance_max', nan):.3f} | "
                         f"{y.get('different_distance_min', float('nan')):.3f} | {_pct(y.get('decided'))} | "
                         f"{_pct(y.get('decided_accuracy'))} |")
        att_all, ide_all = a.get("attributes", {}), a.get("identity", {})
        lines += ["", f"Clips with a face found in all {max(a['frames'])} frames: {att_all.get('clips', 0)} "
                  f"(age/gender; {att_all.get('clips_with_missed_frames', 0)} more lost the face in some frame "
                  f"and are left out), {ide_all.get('pairs', 0)} pairs (identity; "
                  f"{ide_all.get('clips_with_missed_frames', 0)} left out). Per-frame age standard deviation "
                  f"within a clip: {a.get('attributes', {}).get('per_frame_age_sd', float('nan')):.2f} years.", ""]
        for video, v in a.get("video", {}).items():
            lines += [f"Real footage, `{video}`: {v['tracks']} tracks of >= {max(a['frames'])} frames "
                      f"({', '.join(map(str, v['track_frames']))} frames; whole-track decision: "
                      f"{', '.join('unknown' if n == 'None' else n for n in v['whole_track_names'])}), gallery "
                      "`people/`. Each track cut into disjoint N-frame windows, each window matched on its "
                      "averaged embedding:", "",
                      "| frames | windows | same decision as the whole track | stranger named | wrong name | "
                      "wrongly named, with the agreement rule |", "|---|---|---|---|---|---|"]
            lines += [f"| {r['frames']} | {r['windows']} | {_pct(r['agrees_with_track'])} | {r['stranger_named']} | "
                      f"{r['wrong_name']} | {r['wrongly_named_with_agreement_rule']} |" for r in v["curve"]]
            lines.append("")
    lines += ["Plots: " + ", ".join(f"`{p}`" for p in report.get("plots", [])), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--datasets", type=Path, default=SHARED, help="shared datasets folder (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="small subsets (seconds, for tests)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--detectors", default="haar,mtcnn", help="detectors compared in the detection section")
    parser.add_argument("--out", type=Path, default=REPORTS, help="report folder (default %(default)s)")
    parser.add_argument("--name", default="accuracy", help="report file stem (default %(default)s)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="per-photo result cache ('' = none)")
    parser.add_argument("--labels", type=Path, help="your CSV: file[,age][,gender] (replaces the shared sets)")
    parser.add_argument("--utkface", type=Path, help="your folder of UTKFace-named photos (age_gender_race_date.jpg)")
    parser.add_argument("--pad", type=float, default=UTK_PAD, help="border added to --utkface chips (share of size)")
    parser.add_argument("--pairs", type=Path, help="your pairs CSV: file_a,file_b,same[,fold]")
    parser.add_argument("--people", type=Path, help="your folder with one sub-folder per person (open set)")
    parser.add_argument("--boxes", type=Path, help="your boxes CSV: file,x,y,w,h[,ignore] (detection)")
    args = parser.parse_args(argv)

    started = time.time()
    cfg = load_config(args.config, args.overrides)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    custom = any(getattr(args, k) for k in ("labels", "utkface", "pairs", "people", "boxes"))
    if custom:
        suite = Suite()
        if args.boxes:
            suite.detection[args.boxes.stem] = (args.boxes, None, None)
        if args.labels:
            suite.attributes[args.labels.stem] = read_labels_csv(args.labels)
        if args.utkface:
            suite.attributes[args.utkface.name] = read_utkface_folder(args.utkface, args.pad)
            suite.averaging_attributes = subsample(suite.attributes[args.utkface.name], 100)
        if args.pairs:
            suite.pairs[args.pairs.stem] = read_pairs_csv(args.pairs)
            suite.averaging_pairs = subsample(suite.pairs[args.pairs.stem], 100)
        if args.people:
            suite.people[args.people.name] = read_person_folders(args.people)
    else:
        if not args.datasets.is_dir():
            print(f"no datasets at {args.datasets}: pass --datasets or your own --labels/--pairs/--people/--boxes",
                  file=sys.stderr)
            return 2
        suite = shared_suite(args.datasets, args.quick)

    cache = args.cache if str(args.cache) else None
    args.out.mkdir(parents=True, exist_ok=True)
    analyzer = Analyzer(cfg, cache)
    report: dict = {"date": time.strftime("%Y-%m-%d"), "data": str(args.datasets) if not custom else "user files",
                    "quick": args.quick,
                    "subsets": [] if args.quick else [text for part, text in suite.subsets if part in sections],
                    "config": {"detector": cfg.detector.type, "threshold": cfg.identity.threshold,
                               "backend": {d.model: d.backend for d in analyzer.models.decisions}.get("embedding"),
                               "min_face": cfg.detector.min_face}}
    plots = args.out / args.name
    try:
        if "detection" in sections and suite.detection:
            analyzers = {}
            for det in [d.strip() for d in args.detectors.split(",") if d.strip()]:
                if det == cfg.detector.type:
                    analyzers[det] = analyzer
                else:
                    data = cfg.model_dump()
                    data["detector"]["type"] = det
                    analyzers[det] = Analyzer(validate(data), cache)
            report["detection"] = evaluate_detection(analyzers, suite, plots)
        if "attributes" in sections and suite.attributes:
            report["attributes"] = evaluate_attributes(analyzer, suite, plots)
        if "verification" in sections and suite.pairs:
            report["verification"] = evaluate_verification(analyzer, suite, plots)
        if "openset" in sections and suite.people:
            report["openset"] = evaluate_openset(analyzer, suite, plots)
        if "averaging" in sections and (suite.averaging_attributes or suite.averaging_pairs
                                         or suite.averaging_videos):
            report["averaging"] = evaluate_averaging(analyzer, suite, plots, (1, 3) if args.quick else FRAMES_AVERAGED)
    finally:
        analyzer.save()
    report["elapsed_s"] = time.time() - started
    report["plots"] = sorted(p.name for p in args.out.glob(f"{args.name}_*.png"))
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
