"""How well `edge unknowns` groups faces into people, per embedding model: cluster purity on the shared sets.

Embeds every photo with the project's own detection, alignment and models (`edge.pipeline.analyze_faces`, the
`edge analyze` path, cached like the other evaluations), groups the embeddings exactly as `edge unknowns list`
does (`edge.unknowns.group_labels`: the model's metric, `unknowns.linkage`, `unknowns.cluster_threshold`) and
reports, over a sweep of thresholds and for each linkage: groups found vs true people, purity (share of photos
in a group whose majority is their own person), inverse purity (share of photos in their person's largest
group), split people (people with 2+ photos spread over several groups) and merged people (people sharing a
group with someone else).

    python -m training.measure_unknown_clusters                          # the config's identity.model
    python -m training.measure_unknown_clusters --model dlib_resnet_v1 --set detector.type=haar
    python -m training.measure_unknown_clusters --lfw-people 40 --thresholds 0.4,0.5

Writes training/reports/unknown_clusters_<model>.{md,json} (`--name` for another stem).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge.config import load_config
from edge.images import ImageError, load_image
from edge.models.catalog import EMBEDDINGS
from edge.models.loader import load_models
from edge.pipeline import analyze_faces
from edge.unknowns import group_labels, purity

from .evallib.analyzer import Analyzer, central_face, image_size
from .evallib.report import write_report
from .paths import DATASETS, EVAL_CACHE, REPORTS, shown

# Swept around each metric's thresholds: L2 for dlib's raw vectors, 1 - cosine for unit vectors.
THRESHOLDS = {"l2": (0.4, 0.45, 0.5, 0.55, 0.6, 0.65),
              "cosine": (0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)}
# LFW scored on its first N identities too: a door camera sees tens of unknown people a month, not a thousand.
LFW_SCALES = (40, 200, None)
LINKAGES = ("average", "complete", "single")

__all__ = ["load_models", "embed", "people_set", "lfw_set", "measure", "first_people", "main"]


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


def _central_embedding(source, path: Path) -> np.ndarray | None:
    """The embedding of the face nearest the photo's centre (LFW faces are centred); None without a face.
    `source` is an evallib Analyzer (cached) or the loaded models themselves."""
    if isinstance(source, Analyzer):
        face = central_face(source.faces(path), *image_size(path))
        return None if face is None else face.embedding
    try:
        image = load_image(path)
    except ImageError:
        return None
    _, faces = analyze_faces(source, image)
    if not faces:
        return None
    centre = np.array(image.shape[1::-1]) / 2
    face = min(faces, key=lambda f: np.linalg.norm(np.array(f.box[:2]) + np.array(f.box[2:]) / 2 - centre))
    return face.embedding


def embed(source, photos: list[tuple[Path, str]], what: str) -> tuple[np.ndarray, list[str], int]:
    """One embedding per photo (`source`: loaded models, or an Analyzer with its cache). Returns the vectors,
    their people, and how many photos gave no face."""
    vectors, people, missed = [], [], 0
    for path, person in tqdm(photos, desc=what, unit="photo", disable=None, file=sys.stderr):
        vector = _central_embedding(source, path)
        if vector is None:
            missed += 1
            continue
        vectors.append(np.asarray(vector, np.float32))
        people.append(person)
    if isinstance(source, Analyzer):
        source.save()
    return np.stack(vectors), people, missed


def measure(vectors: np.ndarray, people: list[str], cfg, threshold: float | None = None,
            linkage: str | None = None) -> dict:
    """Group `vectors` as the daemon would under `cfg` (at `threshold` / `linkage` if given) and score the
    groups against the true `people`."""
    labels = group_labels(vectors, cfg, threshold, linkage)
    truth = np.asarray(people, dtype=object)
    groups_of = {p: set(labels[truth == p].tolist()) for p in set(people)}
    people_in = {g: set(truth[labels == g].tolist()) for g in np.unique(labels).tolist()}
    several_photos = [p for p in groups_of if (truth == p).sum() >= 2]
    split = sum(1 for p in several_photos if len(groups_of[p]) > 1)
    merged = sum(1 for p, groups in groups_of.items() if any(len(people_in[g]) > 1 for g in groups))
    clusters = len(people_in)
    return {"threshold": cfg.unknowns.cluster_threshold if threshold is None else threshold,
            "linkage": linkage or cfg.unknowns.linkage, "photos": len(people), "people": len(groups_of),
            "clusters": clusters, "groups_per_person": round(clusters / len(groups_of), 3),
            "purity": round(purity(labels, people), 4),
            "inverse_purity": round(purity(truth, list(labels)), 4),
            "people_with_2_photos": len(several_photos), "split_people": split, "merged_people": merged,
            "mixed_groups": sum(1 for names in people_in.values() if len(names) > 1)}


def first_people(vectors: np.ndarray, people: list[str], count: int | None) -> tuple[np.ndarray, list[str]]:
    if count is None:
        return vectors, people
    chosen = set(list(dict.fromkeys(people))[:count])
    keep = [i for i, person in enumerate(people) if person in chosen]
    return vectors[keep], [people[i] for i in keep]


SET_NAMES = {"people": "shared identity set (`people/`)", "lfw": "LFW folds 0-2, all"}


def set_title(name: str) -> str:
    return SET_NAMES.get(name) or f"LFW, first {name.rsplit('_', 1)[1]} people"


def markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [f"# Unknown-face groups with {report['model']} ({cfg['metric']})", "",
             f"Produced by `{' '.join(['python -m training.measure_unknown_clusters', *report['arguments']])}` "
             f"on {report['date']} ({report['elapsed_s']:.0f} s): detector `{cfg['detector']}`, embedding "
             f"`{report['model']}` ({cfg['metric']} distance), daemon grouping `edge.unknowns.group_labels` "
             f"(scipy hierarchical clustering, the model's metric), config default {cfg['linkage']} linkage at "
             f"{cfg['cluster_threshold']}. Data: `{report['data']}`; one embedding per photo (the face nearest "
             "the centre), where the daemon groups each unknown track's averaged embedding.", "",
             "Columns: groups found for the people present; purity = share of photos in a group whose majority "
             "is their own person (1.0: no group mixes people); split = people with 2+ photos whose photos "
             "land in more than one group (they would need naming twice); merged = people who share a group "
             "with someone else (naming that group would enrol a stranger's face under the name).", ""]
    default_linkage = cfg["linkage"]
    for name, entry in report["sets"].items():
        rows = [r for r in entry["results"] if r["linkage"] == default_linkage]
        first = rows[0]
        lines += [f"## {set_title(name)}: {first['photos']} photos with a face, {first['people']} people "
                  f"({first['people_with_2_photos']} with 2+ photos; {entry['no_face']} photos without a face)", "",
                  f"{default_linkage} linkage (the config's):", "",
                  "| threshold | groups | groups / person | purity | inverse purity | split people | "
                  "merged people | mixed groups |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            mark = " (default)" if r["threshold"] == cfg["cluster_threshold"] else ""
            lines.append(f"| {r['threshold']:g}{mark} | {r['clusters']} | {r['groups_per_person']:.3f} | "
                         f"{r['purity']:.3f} | {r['inverse_purity']:.3f} | {r['split_people']} | "
                         f"{r['merged_people']} | {r['mixed_groups']} |")
        lines += ["", "Other linkages (groups / purity / split / merged):", "",
                  "| threshold | " + " | ".join(m for m in LINKAGES if m != default_linkage) + " |",
                  "|---|" + "---|" * (len(LINKAGES) - 1)]
        for t in report["thresholds"]:
            cells = []
            for m in LINKAGES:
                if m == default_linkage:
                    continue
                r = next(x for x in entry["results"] if x["linkage"] == m and x["threshold"] == t)
                cells.append(f"{r['clusters']} / {r['purity']:.3f} / {r['split_people']} / {r['merged_people']}")
            lines.append(f"| {t:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(EMBEDDINGS),
                        help="identity.model to measure (default: the config's)")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--thresholds", help="comma list of cluster thresholds (default: a sweep for the "
                        "model's metric, with its default)")
    parser.add_argument("--lfw-people", type=int, help="only the first N LFW identities (default: all)")
    parser.add_argument("--datasets", type=Path, default=DATASETS, help="default ../shared/datasets")
    parser.add_argument("--cache", type=Path, default=EVAL_CACHE, help="per-photo result cache ('' = none)")
    parser.add_argument("--out", type=Path, default=REPORTS, help="report folder (default training/reports)")
    parser.add_argument("--name", help="report file stem (default unknown_clusters_<model>)")
    args = parser.parse_args(argv)
    if not (args.datasets / "lfw" / "labels.csv").exists():
        print(f"no LFW labels under {shown(args.datasets)}: pass --datasets", file=sys.stderr)
        return 2

    started = time.time()
    cfg = load_config(args.config, args.overrides + ([f"identity.model={args.model}"] if args.model else []))
    model, metric = cfg.identity.model, cfg.identity.metric
    thresholds = sorted({float(t) for t in args.thresholds.split(",") if t.strip()} if args.thresholds
                        else {*THRESHOLDS[metric], cfg.unknowns.cluster_threshold})
    analyzer = Analyzer(cfg, args.cache if str(args.cache) else None)
    lfw_vectors, lfw_people, lfw_missed = embed(analyzer, lfw_set(args.lfw_people, args.datasets), "lfw")
    sets = [("people", *embed(analyzer, people_set(args.datasets), "people"))]
    whole = "lfw" if args.lfw_people is None else f"lfw_first_{args.lfw_people}"
    sets += [(f"lfw_first_{n}" if n else whole, *first_people(lfw_vectors, lfw_people, n), None if n else lfw_missed)
             for n in LFW_SCALES if n is None or args.lfw_people is None or n < args.lfw_people]
    report = {"date": time.strftime("%Y-%m-%d"), "model": model, "arguments": argv if argv is not None else sys.argv[1:],
              "config": {"detector": cfg.detector.type, "metric": metric, "linkage": cfg.unknowns.linkage,
                         "cluster_threshold": cfg.unknowns.cluster_threshold,
                         "identity_threshold": cfg.identity.threshold},
              "data": shown(args.datasets), "thresholds": thresholds, "sets": {}}
    for name, vectors, people, missed in sets:
        rows = [measure(vectors, people, cfg, t, m) for m in LINKAGES for t in thresholds]
        # The LFW subsets are the full run's photos: their photos without a face are not counted apart.
        report["sets"][name] = {"no_face": "-" if missed is None else missed, "results": rows}
    report["elapsed_s"] = round(time.time() - started, 1)
    stem = args.name or f"unknown_clusters_{model}"
    write_report(args.out, stem, report, markdown(report))
    print(f"written to {shown(args.out / stem)}.{{md,json}}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
