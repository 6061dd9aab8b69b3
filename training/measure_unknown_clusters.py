"""How well `edge unknowns` groups faces into people: cluster purity on the shared identity sets.

Embeds every photo with the project's own models (edge.pipeline.analyze_faces, the `edge analyze` path),
clusters the embeddings as `edge unknowns list` does (edge.unknowns.cluster_labels) and reports, per
threshold and linkage: clusters found vs true people, purity (share of photos in a cluster whose majority
is their own person) and inverse purity (share of photos in their person's largest cluster).

    python -m training.measure_unknown_clusters [--lfw-people N] [--output training/reports/unknown_clusters.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge.config import load_config
from edge.images import ImageError, load_image
from edge.models.loader import load_models
from edge.pipeline import analyze_faces
from edge.unknowns import cluster_labels, purity

from .paths import DATASETS, REPORTS
THRESHOLDS = (0.45, 0.5, 0.55, 0.6)
# LFW scored on its first N identities too: a door camera sees tens of unknown people a month, not a thousand.
LFW_SCALES = (40, 200, None)
LINKAGES = ("average", "complete", "single")


def people_set(datasets: Path = DATASETS) -> list[tuple[Path, str]]:
    """The 18 single-face photos of the 6-person identity set."""
    with open(datasets / "people" / "labels.csv") as f:
        return [(datasets / "people" / r["file"], r["person"]) for r in csv.DictReader(f) if r["faces"] == "1"]


def lfw_set(people: int | None = None, datasets: Path = DATASETS) -> list[tuple[Path, str]]:
    """LFW photos (every one, or those of the first `people` identities, in file order)."""
    with open(datasets / "lfw" / "labels.csv") as f:
        rows = [(datasets / "lfw" / r["file"], r["identity"]) for r in csv.DictReader(f)]
    if people is not None:
        chosen = list(dict.fromkeys(person for _, person in rows))[:people]
        rows = [r for r in rows if r[1] in set(chosen)]
    return rows


def embed(models, photos: list[tuple[Path, str]], what: str) -> tuple[np.ndarray, list[str], int]:
    """One embedding per photo: the face nearest the centre (LFW faces are centred). Returns the
    vectors, their people, and how many photos gave no face."""
    vectors, people, missed = [], [], 0
    for path, person in tqdm(photos, desc=what, unit="photo", disable=None, file=sys.stderr):
        try:
            image = load_image(path)
        except ImageError:
            missed += 1
            continue
        _, faces = analyze_faces(models, image)
        if not faces:
            missed += 1
            continue
        centre = np.array(image.shape[1::-1]) / 2
        face = min(faces, key=lambda f: np.linalg.norm(np.array(f.box[:2]) + np.array(f.box[2:]) / 2 - centre))
        vectors.append(face.embedding)
        people.append(person)
    return np.stack(vectors), people, missed


def measure(vectors: np.ndarray, people: list[str], threshold: float, linkage: str) -> dict:
    labels = cluster_labels(vectors, threshold, linkage)
    return {"threshold": threshold, "linkage": linkage, "photos": len(people), "people": len(set(people)),
            "clusters": int(len(np.unique(labels))), "purity": round(purity(labels, people), 4),
            "inverse_purity": round(purity(np.asarray(people, dtype=object), list(labels)), 4)}


def first_people(vectors: np.ndarray, people: list[str], count: int | None) -> tuple[np.ndarray, list[str]]:
    if count is None:
        return vectors, people
    chosen = set(list(dict.fromkeys(people))[:count])
    keep = [i for i, person in enumerate(people) if person in chosen]
    return vectors[keep], [people[i] for i in keep]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw-people", type=int, help="only the first N LFW identities (default: all)")
    parser.add_argument("--output", type=Path, default=REPORTS / "unknown_clusters.json")
    args = parser.parse_args()
    models = load_models(load_config())
    report = {}
    lfw_vectors, lfw_people, lfw_missed = embed(models, lfw_set(args.lfw_people), "lfw")
    sets = [("people", *embed(models, people_set(), "people"))]
    sets += [(f"lfw_first_{n}" if n else "lfw", *first_people(lfw_vectors, lfw_people, n), None if n else lfw_missed)
             for n in LFW_SCALES if n is None or args.lfw_people is None or n < args.lfw_people]
    for name, vectors, people, missed in sets:
        rows = [measure(vectors, people, t, m) for m in LINKAGES for t in THRESHOLDS]
        report[name] = {"no_face": missed, "results": rows}
        print(f"{name}: {len(people)} photos of {len(set(people))} people"
              + ("" if missed is None else f" ({missed} photos without a face)"))
        for r in rows:
            print(f"  {r['linkage']:>8} {r['threshold']:.2f}: {r['clusters']:5d} clusters, purity {r['purity']:.3f}, "
                  f"inverse purity {r['inverse_purity']:.3f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
