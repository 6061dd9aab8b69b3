"""Identity threshold from labelled same/different pairs, with the daemon's own pipeline.

Distances come from a pairs CSV (file_a,file_b,same; default the shared LFW pairs) and/or a folder with
one sub-folder per person (every pair of its photos). The threshold maximises F1 of "same person", or
is the most permissive one with FAR <= --target-far. Writes the histograms with the threshold
(training/reports/accuracy_calibration.png), the figures (accuracy_calibration.json), and, with
--write, the YAML the daemon reads through `identity.calibration_file` (e.g. config/calibrated.yaml).
`edge calibrate FOLDER` does the same on an installed box, from its enrolled gallery plus a folder.

    python -m training.calibrate_threshold [--pairs PAIRS.csv] [--people DIR] [--target-far 0.001]
        [--write config/calibrated.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edge import evaluation as ev
from edge.config import load_config

from .evallib.analyzer import Analyzer, largest_face
from .evallib.datasets import read_pairs_csv, read_person_folders
from .evallib.sections import pair_distances
from .paths import DATASETS, EVAL_CACHE, REPORTS, ROOT, shown


def folder_distances(analyzer: Analyzer, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    names, vectors = [], []
    for item in read_person_folders(folder):
        face = largest_face(analyzer.faces(item.path))
        if face is not None:
            names.append(item.identity)
            vectors.append(face.embedding.astype(np.float32))
    analyzer.save()
    return ev.labelled_pair_distances(names, np.stack(vectors), analyzer.cfg.identity.metric)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--pairs", type=Path, help="pairs CSV (default: the shared LFW pairs if no --people)")
    parser.add_argument("--people", type=Path, help="folder with one sub-folder per person")
    parser.add_argument("--target-far", type=float, help="choose the threshold for this FAR instead of max F1")
    parser.add_argument("--write", type=Path, help="YAML for identity.calibration_file, e.g. config/calibrated.yaml")
    parser.add_argument("--cache", type=Path, default=EVAL_CACHE)
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args(argv)

    cfg = load_config(args.config, args.overrides)
    pairs = args.pairs or (None if args.people else DATASETS / "lfw" / "pairs.csv")
    analyzer = Analyzer(cfg, args.cache)
    distances, same, sources = [], [], []
    if pairs:
        d, s, _, _ = pair_distances(analyzer, read_pairs_csv(pairs))
        distances.append(d)
        same.append(s)
        sources.append(shown(pairs))
    if args.people:
        d, s = folder_distances(analyzer, args.people)
        distances.append(d)
        same.append(s)
        sources.append(shown(args.people))
    d, s = np.concatenate(distances), np.concatenate(same)
    result = ev.calibrate_threshold(d, s, args.target_far)
    result.update({"sources": sources, "threshold_in_force": cfg.identity.threshold,
                   "at_threshold_in_force": ev.verification_at(d, s, cfg.identity.threshold),
                   "f1_threshold": ev.f1_optimal_threshold(d, s)["threshold"],
                   "far_0.1%_threshold": ev.threshold_for_far(d, s, 0.001)["threshold"],
                   "far_1%_threshold": ev.threshold_for_far(d, s, 0.01)["threshold"]})
    args.out.mkdir(parents=True, exist_ok=True)
    ev.plot_distance_histograms(d, s, result["threshold"], args.out / "accuracy_calibration.png",
                                f"calibration on {', '.join(Path(x).parent.name + '/' + Path(x).name for x in sources)}")
    (args.out / "accuracy_calibration.json").write_text(json.dumps(result, indent=1) + "\n")
    at = result["at_threshold"]
    print(f"threshold {result['threshold']} ({result['method']}): TAR {at['tar']:.1%}, FAR {at['far']:.2%}, "
          f"accuracy {at['accuracy']:.1%} on {result['same_pairs']} same / {result['different_pairs']} different "
          f"pairs; threshold in force {cfg.identity.threshold}: accuracy "
          f"{result['at_threshold_in_force']['accuracy']:.1%}")
    if args.write:
        target = args.write if args.write.is_absolute() else ROOT / args.write
        target.write_text(ev.calibration_yaml(result, cfg.identity.model,
                                              f"training/calibrate_threshold.py from {', '.join(sources)}"))
        print(f"written to {target}: --set identity.calibration_file={args.write}")
    print(f"or: --set identity.threshold={result['threshold']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
