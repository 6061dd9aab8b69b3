"""Labelled inputs of the evaluation: readers for each layout (labels CSV, UTKFace names, person folders,
pairs, boxes) and the suite of the shared datasets, with subsets sized for a 2-core box."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

UTK_PAD = 0.5        # share of the chip size added on every side before detection


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
    # Attribute sets sampled from UTKFace: also reported weighted to UTKFace's natural age mix (sections.py).
    utkface_sets: list[str] = field(default_factory=list)


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
        suite.utkface_sets.append("utkface")
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


def user_suite(boxes: Path | None = None, labels: Path | None = None, utkface: Path | None = None,
               pad: float = UTK_PAD, pairs: Path | None = None, people: Path | None = None) -> Suite:
    """A suite of the user's own files instead of the shared sets."""
    suite = Suite()
    if boxes:
        suite.detection[boxes.stem] = (boxes, None, None)
    if labels:
        suite.attributes[labels.stem] = read_labels_csv(labels)
    if utkface:
        suite.attributes[utkface.name] = read_utkface_folder(utkface, pad)
        suite.utkface_sets.append(utkface.name)
        suite.averaging_attributes = subsample(suite.attributes[utkface.name], 100)
    if pairs:
        suite.pairs[pairs.stem] = read_pairs_csv(pairs)
        suite.averaging_pairs = subsample(suite.pairs[pairs.stem], 100)
    if people:
        suite.people[people.name] = read_person_folders(people)
    return suite
