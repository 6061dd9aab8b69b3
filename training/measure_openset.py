"""Open-set identification as the gallery grows, per embedding model (issue 11, part 2).

For galleries of 10, 50 and 225 enrolled LFW people (one photo each, or up to three where LFW has them), the
share of strangers named as someone (false accepts) and of enrolled people's other photos named correctly,
at the model's default threshold and at thresholds chosen for a target false-accept rate (1% and 0.2%) on
other random splits than the ones measured. Decision rules: nearest person under the threshold (the daemon's),
plus a margin between the nearest and second-nearest person, several photos per person (nearest photo or
centroid). Faces come from the daemon's own detection, alignment and models (`training/evallib`).

    python -m training.measure_openset                          # every embedding model of edge/models/catalog.py
    python -m training.measure_openset --models dlib_resnet_v1 --sizes 10,50 --splits 5

Writes training/reports/openset.{md,json} and openset.png (false accepts vs gallery size per embedding).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge.config import load_config
from edge.models.catalog import EMBEDDINGS

from .evallib.analyzer import Analyzer, central_face, image_size
from .evallib.datasets import read_labels_csv
from .evallib.openset import MARGIN_SHARES, RULES, Embedded, evaluate_rule, score
from .evallib.plots import pyplot
from .evallib.report import pct, write_report
from .paths import DATASETS, EVAL_CACHE, REPORTS, shown

SIZES = (10, 50, 225)
FAR_TARGETS = (0.01, 0.002)


def embed_lfw(analyzer: Analyzer, datasets: Path, people_limit: int | None) -> tuple[Embedded, dict]:
    """The central face of every photo of LFW people with 2+ photos; photos without a face are left out."""
    by_person: dict[str, list] = {}
    for item in read_labels_csv(datasets / "lfw" / "labels.csv"):
        by_person.setdefault(item.identity, []).append(item)
    people = sorted(p for p, items in by_person.items() if len(items) >= 2)[:people_limit]
    names, vectors, missing = [], [], 0
    for person in tqdm(people, desc="open set: embedding LFW", unit="person"):
        for item in by_person[person]:
            face = central_face(analyzer.faces(item.path), *image_size(item.path))
            if face is None:
                missing += 1
                continue
            names.append(person)
            vectors.append(face.embedding.astype(np.float32))
    analyzer.save()
    return (Embedded(np.array(names, dtype=object), np.stack(vectors), analyzer.cfg.identity.metric),
            {"people": len(people), "photos": len(names) + missing, "photos_without_face": missing})


def markdown(report: dict) -> str:
    lines = ["# Open-set identification as the gallery grows", "",
             f"Produced by `python -m training.measure_openset` on {report['date']} ({report['elapsed_s']:.0f} s), "
             f"detector `{report['detector']}`, data `{report['data']}`: LFW people with 2+ photos; G enrolled, "
             "every photo of the others is a stranger probe, the enrolled people's remaining photos are enrolled "
             f"probes; {report['splits']} random splits per gallery size. Thresholds \"for FAR x\" are chosen on "
             f"{report['splits']} other random splits (different people and enrolment photos) and measured on the "
             "reported ones, so the measured rate can land on either side of the target. `naming`: enrolled "
             "probes named as themselves; `wrong`: named as someone else.", "",
             "Rules: `nearest` = nearest enrolled person under the threshold (the daemon's rule); `margin` = and "
             "the second-nearest person at least a margin further (margin chosen on the calibration splits "
             f"among {', '.join(f'{m:g}' for m in MARGIN_SHARES)} x the default threshold; "
             f"{MARGIN_SHARES[2]:g} x at the default threshold); `photos3_*` = up to 3 photos per enrolled "
             "person (one always left to probe), compared by the nearest photo, the centroid, or nearest photo "
             "plus margin.", ""]
    for model, entry in report["embeddings"].items():
        d = entry["data"]
        lines += [f"## {model}", "",
                  f"Metric {entry['metric']}, default threshold {entry['default_threshold']}; "
                  f"{d['people']} people, {d['photos']} photos, {d['photos_without_face']} without a detected face "
                  "(left out).", "",
                  "| G | rule | default: stranger FA | naming | wrong | FAR 1%: threshold (margin) | stranger FA | "
                  "naming | FAR 0.2%: threshold (margin) | stranger FA | naming |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for size, rules in entry["sizes"].items():
            for r in rules:
                a = r["at_default"]
                cells = [f"{size}", r["rule"], pct(a["stranger_false_accept"], 2), pct(a["correct_naming"]),
                         pct(a["wrong_naming"])]
                for f in r["at_far"]:
                    cells += [f"{f['threshold']:.3f} ({f['margin']:.3f})",
                              pct(f["stranger_false_accept"], 2) + ("" if f["resolvable"] else " (few)"),
                              pct(f["correct_naming"])]
                lines.append("| " + " | ".join(cells) + " |")
        one = entry.get("one_threshold")
        if one:
            lines += ["", f"One threshold for every gallery size: {one['threshold']:.3f} ({one['from']}), nearest "
                      "rule, one photo each, on the measured splits: " + "; ".join(
                          f"{size} enrolled: {pct(r['stranger_false_accept'], 2)} strangers named, "
                          f"{pct(r['correct_naming'])} named correctly, {pct(r['wrong_naming'], 2)} wrongly"
                          for size, r in one["sizes"].items()) + "."]
        lines.append("")
    lines += ["Issue 11 targets (default config, one photo each): 225 enrolled -> at most 1% of strangers accepted "
              "with at least 93% named correctly; 10 enrolled -> at most 0.2% of strangers accepted.", "",
              f"Plot: `{report['plot']}`", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for model, entry in report["embeddings"].items():
        sizes = [int(s) for s in entry["sizes"]]
        nearest = [next(r for r in rules if r["rule"] == "nearest") for rules in entry["sizes"].values()]
        axes[0].plot(sizes, [100 * r["at_default"]["stranger_false_accept"] for r in nearest], "o-",
                     label=f"{model}, default threshold {entry['default_threshold']}")
        axes[1].plot(sizes, [100 * r["at_far"][0]["correct_naming"] for r in nearest], "o-",
                     label=f"{model}, threshold for 1% stranger FA")
    axes[0].set_ylabel("strangers named as someone (%)")
    axes[1].set_ylabel("enrolled probes named correctly (%)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(list(SIZES), [str(s) for s in SIZES])
        ax.set_xlabel("people enrolled (one photo each)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Open set on LFW: false accepts and naming vs gallery size")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--models", default=",".join(EMBEDDINGS),
                        help="identity.model values to measure, each at its own default threshold "
                             "(default: all of edge/models/catalog.py, %(default)s)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="gallery sizes (default %(default)s)")
    parser.add_argument("--splits", type=int, default=10, help="random splits per size (default %(default)s)")
    parser.add_argument("--people", type=int, help="only the first N people with 2+ photos (quick runs)")
    parser.add_argument("--datasets", type=Path, default=DATASETS, help="default ../shared/datasets")
    parser.add_argument("--cache", type=Path, default=EVAL_CACHE, help="per-photo result cache ('' = none)")
    parser.add_argument("--out", type=Path, default=REPORTS, help="report folder (default training/reports)")
    parser.add_argument("--name", default="openset", help="report file stem (default %(default)s)")
    args = parser.parse_args(argv)
    if not (args.datasets / "lfw" / "labels.csv").exists():
        print(f"no LFW labels under {args.datasets}: pass --datasets", file=sys.stderr)
        return 2

    started = time.time()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    cache = args.cache if str(args.cache) else None
    report: dict = {"date": time.strftime("%Y-%m-%d"), "data": shown(args.datasets / "lfw"), "splits": args.splits,
                    "sizes": sizes, "far_targets": list(FAR_TARGETS), "embeddings": {}}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        selection = [f"identity.model={name}"]
        cfg = load_config(args.config, args.overrides + selection)
        analyzer = Analyzer(cfg, cache)
        report["detector"] = cfg.detector.type
        embedded, data = embed_lfw(analyzer, args.datasets, args.people)
        threshold = cfg.identity.threshold
        entry = report["embeddings"][name] = {"selected_by": selection, "metric": embedded.metric,
                                              "default_threshold": threshold, "data": data, "sizes": {}}
        for size in sizes:
            entry["sizes"][str(size)] = [evaluate_rule(embedded, size, rule, threshold, FAR_TARGETS, args.splits)
                                         for rule in tqdm(RULES, desc=f"{name}, {size} enrolled", unit="rule")]
        # A default must hold for every gallery: the largest gallery's threshold for 1% strangers, applied to all.
        largest = entry["sizes"][str(max(sizes))][0]["at_far"][0]["threshold"]
        entry["one_threshold"] = {"threshold": largest, "from": f"nearest rule, {max(sizes)} enrolled, 1% FAR",
                                  "sizes": {str(size): score(embedded, size, 1, "photo", args.splits, seed=size)
                                            .rates(largest) for size in sizes}}
    report["elapsed_s"] = time.time() - started
    args.out.mkdir(parents=True, exist_ok=True)
    report["plot"] = f"{args.name}.png"
    plot(report, args.out / report["plot"])
    write_report(args.out, args.name, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
