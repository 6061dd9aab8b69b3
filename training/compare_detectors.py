"""Face detectors side by side on the shared sets (issue 11, part 4): one table to choose the default from.

Per detector (`detector.type`, each with the rest of the config in force): recall and precision on dlib's
boxed set, recall on the masked-faces set, found-rate on LFW photos and on UTKFace chips (padded, as the
evaluation does), and milliseconds per frame at 640 x 480 (demo video) and 1920 x 1080 (the shared street
clip), detector alone, on stills (no fast path). Detector output only: no landmarks, no Haar-box check by O-Net.

    python -m training.compare_detectors [--detectors haar,mtcnn,yunet] [--limit 500]

Writes training/reports/detectors.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
from tqdm import tqdm

from edge.config import ConfigError, load_config

from .evallib.analyzer import Analyzer, image_size
from .evallib.datasets import UTK_PAD, Suite, read_labels_csv, subsample
from .evallib.report import pct, write_report
from .evallib.sections import evaluate_detection
from .paths import DATASETS, EVAL_CACHE, REPORTS, ROOT, shown

DEMO_VIDEO = ROOT / "edge" / "demo" / "demo.mp4"
STREET_VIDEO = "video/covent_garden_walkers_facenet_pytorch.mp4"


def found_rate(analyzer: Analyzer, items, desc: str) -> dict:
    """One face per photo, roughly centred: found = a detected box covers the centre."""
    found = others = 0
    for item in tqdm(items, desc=desc, unit="img"):
        boxes = analyzer.detect_boxes(item.path, item.pad) or []
        w, h = image_size(item.path)
        hit = any(x <= w / 2 <= x + bw and y <= h / 2 <= y + bh for x, y, bw, bh in boxes)
        found += hit
        others += len(boxes) - int(hit)
    analyzer.save()
    return {"images": len(items), "found": found / len(items) if items else float("nan"),
            "other_detections": others}


def video_frame(path: Path, index: int):
    capture = cv2.VideoCapture(str(path))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    capture.release()
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if ok else None


def ms_per_frame(detector, rgb, repeat: int) -> dict:
    detector.detect(rgb)    # warm-up (sessions, buffers)
    times, faces = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        faces = len(detector.detect(rgb))
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "faces": faces,
            "size": f"{rgb.shape[1]}x{rgb.shape[0]}"}


def markdown(report: dict) -> str:
    dets = report["detectors"]
    lines = ["# Face detectors compared", "",
             f"Produced by `python -m training.compare_detectors` on {report['date']}, data `{report['data']}`, "
             "each detector with the rest of `config/default.yaml`. Detector output only (no landmarks, no O-Net "
             "check of Haar boxes), on stills at full resolution (the daemon's video fast path is not applied). "
             "IoU >= 0.5 against the labelled boxes; found-rate: a box covers the photo's centre.", "",
             "| detector | min_face | dlib set recall | dlib set precision | masks recall (IoU 0.5 / 0.3) | "
             "LFW found | UTKFace chips found (padded) | ms / 640x480 frame | ms / 1080p frame |",
             "|---|---|---|---|---|---|---|---|---|"]
    for det in dets:
        det_d = report["detection"].get("detection_dlib", {}).get("detectors", {}).get(det, {})
        det_m = report["detection"].get("detection_masks", {}).get("detectors", {}).get(det, {})
        speed = report["speed"].get(det, {})
        lines.append(" | ".join([
            f"| {det}", str(det_d.get("min_face", "-")),
            pct(det_d.get("iou_0.5", {}).get("recall")), pct(det_d.get("iou_0.5", {}).get("precision")),
            f"{pct(det_m.get('iou_0.5', {}).get('recall'))} / {pct(det_m.get('iou_0.3', {}).get('recall'))}",
            pct(report["found"].get("lfw", {}).get(det, {}).get("found")),
            pct(report["found"].get("utkface", {}).get(det, {}).get("found")),
            *(f"{speed[k]['median_ms']:.1f} (min {speed[k]['min_ms']:.1f}; {speed[k]['faces']} faces)" if k in speed
              else "-"
              for k in ("640x480", "1080p"))]) + " |")
    sets = report["detection"]
    lines += ["", "Sets: " + "; ".join(f"{name}: {r['images']} photos, {r['faces']} faces" for name, r in sets.items())
              + "; " + "; ".join(f"{name}: {next(iter(r.values()))['images']} photos"
                                 for name, r in report["found"].items()) + ".",
              "`detection_masks` lacks boxes for some background faces, so its precision is not shown; box "
              "conventions differ between detectors (Haar's includes more forehead), hence recall at IoU 0.3 too.",
              f"Speed: median of {report['repeat']} calls on one frame, after a warm-up, on this machine "
              f"({report['machine']}); 640x480 = frame {report['frames']['640x480']} of the demo video, "
              f"1080p = frame {report['frames']['1080p']} of the shared street clip.", ""]
    if report.get("unavailable"):
        lines += ["Not measured: " + "; ".join(f"{k} ({v})" for k, v in report["unavailable"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--detectors", default="haar,mtcnn,yunet", help="detector.type values (default %(default)s)")
    parser.add_argument("--datasets", type=Path, default=DATASETS, help="default ../shared/datasets")
    parser.add_argument("--limit", type=int, help="at most N photos per set (every k-th), for quick runs")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per frame (default %(default)s)")
    parser.add_argument("--cache", type=Path, default=EVAL_CACHE, help="per-photo result cache ('' = none)")
    parser.add_argument("--out", type=Path, default=REPORTS, help="report folder (default training/reports)")
    parser.add_argument("--name", default="detectors", help="report file stem (default %(default)s)")
    args = parser.parse_args(argv)
    root = args.datasets
    if not root.is_dir():
        print(f"no datasets at {root}: pass --datasets", file=sys.stderr)
        return 2
    cache = args.cache if str(args.cache) else None

    analyzers, unavailable = {}, {}
    for det in [d.strip() for d in args.detectors.split(",") if d.strip()]:
        try:
            analyzers[det] = Analyzer(load_config(args.config, args.overrides + [f"detector.type={det}"]), cache)
        except ConfigError as exc:      # e.g. a detector type this checkout does not have yet
            unavailable[det] = str(exc)
            print(f"{det}: skipped ({exc})", file=sys.stderr)

    suite = Suite()
    if (root / "detection_dlib" / "boxes.csv").exists():
        suite.detection["detection_dlib"] = (root / "detection_dlib" / "boxes.csv", None, args.limit)
    if (root / "detection_masks" / "labels.csv").exists():
        suite.detection["detection_masks"] = (root / "detection_masks" / "labels.csv", None, args.limit or 200)
    one_face = {}
    if (root / "lfw" / "labels.csv").exists():
        one_face["lfw"] = subsample(read_labels_csv(root / "lfw" / "labels.csv"), args.limit)
    if (root / "utkface" / "labels.csv").exists():
        one_face["utkface"] = subsample(read_labels_csv(root / "utkface" / "labels.csv", pad=UTK_PAD), args.limit)

    frames = {"640x480": (DEMO_VIDEO, 190), "1080p": (root / STREET_VIDEO, 50)}   # both demo people in view
    report: dict = {"date": time.strftime("%Y-%m-%d"), "data": shown(root), "detectors": list(analyzers),
                    "unavailable": unavailable, "repeat": args.repeat,
                    "machine": f"{cv2.getNumberOfCPUs()} cores, OpenCV {cv2.__version__}, load average "
                               f"{os.getloadavg()[0]:.1f} at the start",
                    "frames": {k: i for k, (_, i) in frames.items()}}
    report["detection"] = evaluate_detection(analyzers, suite, None)
    report["found"] = {name: {det: found_rate(a, items, f"{name} {det}") for det, a in analyzers.items()}
                       for name, items in one_face.items()}
    report["speed"] = {}
    for det, analyzer in analyzers.items():
        report["speed"][det] = {}
        for label, (video, index) in frames.items():
            rgb = video_frame(video, index) if video.exists() else None
            if rgb is not None:
                report["speed"][det][label] = ms_per_frame(analyzer.models.detector, rgb, args.repeat)
    write_report(args.out, args.name, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
