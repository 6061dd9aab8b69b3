#!/usr/bin/env python3
"""Batching and thread counts of the face models, measured on the six faces of one `crowd` frame.

    python -m benchmarks.bench_batching [--repeat 20] [--set key=value ...]

For each model (age, gender, embedding, on the backend `config/default.yaml` picks) and each
`models.threads` value: median ms for the six aligned chips as one batch, in parts of at most
`edge.backends.MAX_DYNAMIC_BATCH` (what the daemon runs: a memory bound), and as six calls of one, with
process CPU ms for the same work (threads that spin show up there, not in wall time).
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np


def measure(fn, repeat: int) -> tuple[float, float]:
    fn()   # warm-up
    walls, cpu0 = [], time.process_time()
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        walls.append((time.perf_counter() - started) * 1000)
    return float(np.median(walls)), (time.process_time() - cpu0) * 1000 / repeat


def main(argv=None) -> int:
    from benchmarks.videos import crowd_video
    from edge import backends
    from edge.config import load_config
    from edge.models.loader import load_models
    from edge.pipeline import analyze_faces

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", default="0,1,2")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args(argv)
    capture = cv2.VideoCapture(str(crowd_video()))
    ok, frame = capture.read()
    cap = backends.MAX_DYNAMIC_BATCH
    print(f"| threads | model | one batch of N: ms (CPU ms) | parts of {cap}: ms (CPU ms) | N calls of 1: ms (CPU ms) "
          "| speed-up of one batch / of the parts |")
    print("|---|---|---|---|---|---|")
    for threads in (int(t) for t in args.threads.split(",")):
        models = load_models(load_config(None, [f"models.threads={threads}", *args.sets]))
        rgb, faces = analyze_faces(models, frame)
        landmarks = [f.landmarks for f in faces]
        for name, model in (("age", models.age), ("gender", models.gender), ("embedding", models.embedding)):
            chips = model.chips(rgb, landmarks)
            backends.MAX_DYNAMIC_BATCH = len(chips)       # this one measurement only: the whole batch at once
            whole = measure(lambda: model.predict_chips(chips), args.repeat)
            backends.MAX_DYNAMIC_BATCH = cap
            parts = measure(lambda: model.predict_chips(chips), args.repeat)
            single = measure(lambda: [model.predict_chips(chips[i:i + 1]) for i in range(len(chips))], args.repeat)
            print(f"| {threads} | {name} (N={len(chips)}) | {whole[0]:.1f} ({whole[1]:.1f}) | "
                  f"{parts[0]:.1f} ({parts[1]:.1f}) | {single[0]:.1f} ({single[1]:.1f}) | "
                  f"{single[0] / whole[0]:.2f}x / {single[0] / parts[0]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
