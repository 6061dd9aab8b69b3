"""Accuracy of the daemon's own detection, alignment and models on labelled photos.

Every photo goes through `edge.pipeline.analyze_faces` with the config in force (`--config`,
`--set key=value`), exactly as `edge analyze` runs it. Writes a Markdown + JSON report and PNG plots
(default training/reports/accuracy.{md,json}, accuracy_*.png). Per-photo results are cached under
--cache (keyed by the detector config and the model files), so re-runs are cheap. The work is done by
`training/evallib/`; this script only reads the arguments and writes the report.

Sections and the data each one reads (default: the shared datasets, ../shared/datasets):
  detection     boxes CSV (file,x,y,w,h[,ignore|difficult]) per detector (--detectors haar,mtcnn); IoU >= 0.5
  attributes    age / gender labels: a labels CSV (file[,age][,gender]) or a UTKFace-named folder
                (age_gender_race_date.jpg, gender 0 = male, 1 = female); tight chips are padded (--pad)
  verification  a pairs CSV (file_a,file_b,same[,fold]): accuracy at identity.threshold, ROC, AUC, TAR@FAR
  open set      a folder with one sub-folder per person: half the people enrolled with one photo each,
                rank-1 on the others' photos, false accepts on the strangers' photos
  averaging     synthetic clips (shift, scale, blur, brightness, noise) from stills; metrics vs frames averaged;
                and on the shared real videos, tracked: N-frame identity decisions vs the whole track's

    python -m training.evaluate                       # everything on the shared datasets
    python -m training.evaluate --quick               # small subsets (the test suite runs this)
    python -m training.evaluate --pairs my/pairs.csv --people my/people --utkface my/utk --sections verification
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edge.config import load_config

from .evallib.analyzer import Analyzer
from .evallib.averaging import FRAMES_AVERAGED, evaluate_averaging
from .evallib.datasets import UTK_PAD, shared_suite, user_suite
from .evallib.report import markdown, write_report
from .evallib.sections import evaluate_attributes, evaluate_detection, evaluate_openset, evaluate_verification
from .paths import DATASETS, EVAL_CACHE, REPORTS, shown

SECTIONS = ("detection", "attributes", "verification", "openset", "averaging")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--datasets", type=Path, default=DATASETS,
                        help="shared datasets folder (default ../shared/datasets)")
    parser.add_argument("--quick", action="store_true", help="small subsets (seconds, for tests)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--detectors", default="haar,mtcnn", help="detectors compared in the detection section")
    parser.add_argument("--out", type=Path, default=REPORTS, help="report folder (default training/reports)")
    parser.add_argument("--name", default="accuracy", help="report file stem (default %(default)s)")
    parser.add_argument("--cache", type=Path, default=EVAL_CACHE, help="per-photo result cache ('' = none)")
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
        suite = user_suite(args.boxes, args.labels, args.utkface, args.pad, args.pairs, args.people)
    elif args.datasets.is_dir():
        suite = shared_suite(args.datasets, args.quick)
    else:
        print(f"no datasets at {args.datasets}: pass --datasets or your own --labels/--pairs/--people/--boxes",
              file=sys.stderr)
        return 2

    cache = args.cache if str(args.cache) else None
    args.out.mkdir(parents=True, exist_ok=True)
    analyzer = Analyzer(cfg, cache)
    report: dict = {"date": time.strftime("%Y-%m-%d"), "data": shown(args.datasets) if not custom else "user files",
                    "quick": args.quick,
                    "subsets": [] if args.quick else [text for part, text in suite.subsets if part in sections],
                    "config": {"detector": cfg.detector.type, "threshold": cfg.identity.threshold,
                               "backend": {d.model: d.backend for d in analyzer.models.decisions}.get("embedding"),
                               "min_face": cfg.detector.min_face}}
    plots = args.out / args.name
    try:
        if "detection" in sections and suite.detection:
            analyzers = {det: analyzer.with_detector(det) for det in args.detectors.split(",") if det.strip()}
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
    write_report(args.out, args.name, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
