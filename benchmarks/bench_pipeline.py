#!/usr/bin/env python3
"""Benchmark the real appliance pipeline (Daemon: capture thread, models, SQLite outbox, MQTT publisher to a
real local Mosquitto, a subscriber measuring latency) against the `face_recognition` loop and a naive run.

    python -m benchmarks.bench_pipeline [--video NAME|PATH] [--detector haar|mtcnn|yunet] [--json OUT]

Videos: the demo (edge/demo/demo.mp4), `crowd` (6 faces at once) and `empty` (nobody most of the time),
both generated into a cache folder from the demo's public-domain photos (benchmarks/videos.py), and any
../shared/datasets/video/*.mp4 present (`--shared-videos`; read in place, never copied). `--video` takes one of
these names (`demo`, `crowd`, `empty`, a shared video's file name without .mp4, or its unique beginning such as
`covent_garden`) or a video file; anything else stops at once with exit 2. Each run is its own process, so peak
RSS, start-up and CPU time belong to that run alone.

Variants (`--variants`): `fast` = config/default.yaml; `naive` = every model on every face of every frame
(no gating, throttling or overlap, detection at 640 px); `peer` = the face_recognition library's webcam
loop (dlib HOG + 5-point + compute_face_descriptor every frame); `ablate` adds one run per fast-path switch.
Extra `--set key=value` apply to every pipeline variant. `--duration S` loops each video for S seconds and
reports RSS at start and end (memory growth).
"""

from __future__ import annotations

import time

T_START = time.perf_counter()   # start-up is measured from here, before the heavy imports

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO_VIDEO = ROOT / "edge" / "demo" / "demo.mp4"
DEMO_TIMELINE = ROOT / "edge" / "demo" / "timeline.json"
GALLERY = ROOT / "edge" / "demo" / "gallery"
SHARED_VIDEOS = ROOT.parent / "shared" / "datasets" / "video"
# The daemon's StageTimer names; store and publish as filed by bench_timer (loop passes with events).
STAGES = ["capture", "motion", "detect", "track", "landmarks", "align", "age", "gender", "embed", "match",
          "store_events", "publish_events"]
NAIVE = ["fastpath.motion_gate=false", "fastpath.throttle=false", "fastpath.overlap=false",
         "fastpath.video_detect_width=0", "fastpath.video_scale_factor=0"]
# The fast-path changes one at a time, cumulatively, from the naive run up to the defaults; then the
# defaults with one switch changed.
_STEPS = [("+width320", "fastpath.video_detect_width=320"), ("+scale1.2", "fastpath.video_scale_factor=1.2"),
          ("+motion", "fastpath.motion_gate=true"), ("+roi", "fastpath.motion_roi=true"),
          ("+throttle", "fastpath.throttle=true"), ("+overlap", "fastpath.overlap=true")]
ABLATIONS: dict[str, list[str]] = {}
_sets, _name = NAIVE + ["fastpath.motion_roi=false"], "naive"
for _label, _set in _STEPS:
    _name, _sets = _name + _label, _sets + [_set]
    ABLATIONS[_name] = list(_sets)
ABLATIONS.update({
    "fast-no-overlap": ["fastpath.overlap=false"],
    "fast-no-throttle": ["fastpath.throttle=false"],
    "fast-no-roi": ["fastpath.motion_roi=false"],
    "fast-threads0": ["models.threads=0"],
    "fast-threads1": ["models.threads=1"],
    "fast-threads2": ["models.threads=2"],
})


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values, q):
    import numpy as np
    return float(np.percentile(values, q)) if len(values) else None


# ----------------------------------------------------------------------------------------- ground truth

def load_truth(video: Path):
    """{frame index: [(identity or "unknown", box)]} for the demo video, else None."""
    if video.resolve() != DEMO_VIDEO.resolve():
        return None
    timeline = json.loads(DEMO_TIMELINE.read_text())
    truth: dict[int, list] = {}
    for person in timeline["people"].values():
        for f in person["frames"]:
            truth.setdefault(f["frame"], []).append((person["identity"], f["box"]))
    return truth


def _same_face(a, b) -> bool:
    # Detectors frame a face differently (dlib HOG boxes are tighter than Haar's): each box's centre
    # inside the other is the fair test.
    def inside(p, box):
        return box[0] <= p[0] <= box[0] + box[2] and box[1] <= p[1] <= box[1] + box[3]
    return inside((a[0] + a[2] / 2, a[1] + a[3] / 2), b) and inside((b[0] + b[2] / 2, b[1] + b[3] / 2), a)


def identity_accuracy(truth, reported: dict[int, list]) -> dict:
    """Share of ground-truth face-frames reported with the right identity ("unknown" for a stranger);
    an undecided or missed face counts as not right, a wrong name is also counted on its own."""
    total = right = wrong_name = labelled = 0
    for frame, faces in truth.items():
        for identity, box in faces:
            total += 1
            said = next((name for b, name in reported.get(frame, []) if _same_face(b, box)), "missed")
            right += said == identity
            labelled += said not in ("missed", "undecided")
            wrong_name += said not in (identity, "missed", "undecided", "unknown")
    return {"identity_accuracy": round(right / total, 3), "wrong_name_rate": round(wrong_name / total, 3),
            "labelled_accuracy": round(right / labelled, 3) if labelled else None,   # right among labelled
            "unlabelled_rate": round(1 - labelled / total, 3), "face_frames": total}


# ----------------------------------------------------------------------------------------- child: pipeline

def bench_timer(keep: int, events_so_far):
    """The daemon's StageTimer, also filing the samples of the loop passes that had work to store and send.

    The daemon times "store" for every frame (most emit no event and cost nothing) and "publish" for every
    pump (most find nothing to send), so their medians say nothing about an event's cost. Its own samples of
    a frame that emitted events (counted by the benchmark's event callback, one of the sinks inside the
    stage) are filed again as "store_events", and the pump of that same loop pass, which sends them, as
    "publish_events". Nothing is timed here."""
    from edge.pipeline import StageTimer

    class BenchTimer(StageTimer):
        def __init__(self):
            super().__init__(keep)
            self._events_seen = 0
            self._sending = False

        def record(self, name: str, elapsed_ms: float) -> None:
            super().record(name, elapsed_ms)
            if name == "store":
                events = events_so_far()
                self._sending = events > self._events_seen
                self._events_seen = events
                if self._sending:
                    self.samples["store_events"].append(elapsed_ms)
            elif name == "publish" and self._sending:
                self._sending = False
                self.samples["publish_events"].append(elapsed_ms)
    return BenchTimer()


def child_pipeline(spec: dict) -> dict:
    import numpy as np
    import paho.mqtt.client as mqtt

    import edge.capture as capture_module
    from edge.config import load_config
    from edge.daemon import Daemon
    from edge.images import load_image
    from edge.models.loader import load_models
    from edge.pipeline import analyze_faces
    from edge.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    port = spec["port"]
    prefix = f"bench{os.getpid()}"
    sets = [f"source={spec['video']}", f"capture.pace={spec['pace']}", f"store.path={tmp / 'edge.db'}",
            *([f"detector.type={spec['detector']}"] if spec["detector"] else []),
            f"mqtt.enabled={'true' if port else 'false'}",
            f"mqtt.port={port or 1883}", "mqtt.host=127.0.0.1", f"mqtt.prefix={prefix}", "log_level=WARNING",
            f"capture.loop={'true' if spec['duration'] else 'false'}", *spec["sets"]]
    cfg = load_config(None, sets)
    models = load_models(cfg)
    store = Store(cfg.store.path)
    for photo in sorted(GALLERY.glob("*.jpg")):
        _, faces = analyze_faces(models, load_image(photo))
        store.enroll(photo.stem, np.stack([faces[0].embedding]), [photo.name], model=cfg.identity.model)

    received: list[tuple[float, dict]] = []
    subscriber = None
    if port:
        subscribed = threading.Event()
        subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-sub")
        subscriber.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{prefix}/events", qos=1)
        subscriber.on_subscribe = lambda *a: subscribed.set()
        subscriber.on_message = lambda c, u, m: received.append((time.time(), json.loads(m.payload)))
        subscriber.connect("127.0.0.1", port)
        subscriber.loop_start()
        subscribed.wait(10)

    read_wall: dict[float, float] = {}
    real_open = capture_module.open_source

    # The only wrap on the capture side: the latency is measured from the moment the track's first frame was
    # read, and no stage records when (the grabber's own "capture" stage times each read, and is the figure
    # reported). It stamps the wall clock and times nothing.
    def stamped_open_source(*args, **kwargs):
        source = real_open(*args, **kwargs)
        read = source.read

        def stamped_read():
            result = read()
            if result is not None:
                read_wall[result[1]] = time.time()
            return result
        source.read = stamped_read
        return source
    # instrumentation only: the source itself is real (the daemon opens it through capture.grabber_for)
    capture_module.open_source = stamped_open_source

    first_seen: dict[str, float] = {}      # track uid -> video timestamp of its first frame
    first_read: dict[str, float] = {}      # track uid -> wall clock when that frame was read
    emitted: list[tuple[float, dict]] = []

    def on_event(payload):
        emitted.append((time.time(), payload))
        if payload["type"] == "face_identified":
            for view in daemon.pipeline.tracker.views():
                if view.uid == payload["track_id"]:
                    first_seen[view.uid] = view.first_frame_ts
                    # Snapshot now: a looping soak run reads the same timestamps again later.
                    first_read[view.uid] = read_wall.get(view.first_frame_ts)

    daemon = Daemon(cfg, on_event=on_event, models=models, store=store)
    pipeline = daemon.pipeline
    # Every stage time is the daemon's own (edge/pipeline.py StageTimer): the grabber times each read
    # ("capture", decoding included), the pipeline its stages, the daemon each frame's events through every
    # sink ("store") and each publisher pump ("publish"). Only the length of its memory is the benchmark's.
    pipeline.timer = timer = bench_timer(1000 if spec["duration"] else 100000,   # a soak run must not grow
                                         lambda: len(emitted))
    reported: dict[int, list] = {}
    marks = {}
    rss_samples: list[tuple[float, float]] = []
    real_process = pipeline.process

    # A wrap with no stage behind it: the first processed frame starts the wall and CPU clocks (start-up
    # ends there), and each frame's decisions are read for the identity accuracy and RSS sampled in soak runs.
    def process(image, timestamp):
        if "first" not in marks:
            marks["first"] = time.perf_counter()
            marks["cpu0"] = time.process_time()
            marks["startup_s"] = marks["first"] - T_START
            marks["rss_start_mb"] = rss_mb()
        events = real_process(image, timestamp)
        frame = pipeline.frames - 1
        if spec["truth"] and not spec["duration"]:
            reported[frame] = [(v.face.box, (v.identity or "unknown") if v.decided else "undecided")
                               for v in pipeline.tracker.views() if v.in_view]
        if spec["duration"] and frame % 150 == 0:
            rss_samples.append((round(time.perf_counter() - marks["first"], 1), round(rss_mb(), 1)))
        return events
    pipeline.process = process
    if spec["duration"]:
        threading.Timer(spec["duration"], daemon.stop_requested.set).start()
    if spec["max_frames"]:
        daemon.max_frames = spec["max_frames"]
    daemon.run()
    wall = time.perf_counter() - marks["first"]
    cpu = time.process_time() - marks["cpu0"]
    rss_end = rss_mb()
    frames = pipeline.frames

    identified = {p["event_id"]: p for _, p in emitted if p["type"] == "face_identified"}
    deadline = time.monotonic() + 10
    while port and time.monotonic() < deadline and \
            not set(identified) <= {p["event_id"] for _, p in received}:
        time.sleep(0.05)
    source = received if port else emitted
    latencies, per_event = [], []
    seen_ids = set()
    for at, payload in source:
        if payload["type"] != "face_identified" or payload["event_id"] in seen_ids:
            continue
        seen_ids.add(payload["event_id"])
        start = first_read.get(payload["track_id"])
        if start is not None:
            latencies.append((at - start) * 1000)
            per_event.append({"track": payload["track_id"], "identity": (payload["identity"] or {}).get("name"),
                              "first_frame_s": first_seen.get(payload["track_id"]),
                              "latency_ms": round((at - start) * 1000)})
    if subscriber:
        subscriber.disconnect()
        subscriber.loop_stop()

    stages = timer.summary()
    result = {
        "frames": frames, "wall_s": round(wall, 2), "fps": round(frames / wall, 1),
        "cpu_ms_per_frame": round(cpu * 1000 / frames, 1),
        "latency_p50_ms": round(percentile(latencies, 50), 0) if latencies else None,
        "latency_p95_ms": round(percentile(latencies, 95), 0) if latencies else None,
        "latency_n": len(latencies), "latency_events": per_event, "latency_path": "mqtt subscriber" if port else "on_event (no broker)",
        "peak_rss_mb": round(peak_rss_mb(), 1), "rss_start_mb": round(marks["rss_start_mb"], 1),
        "rss_end_mb": round(rss_end, 1), "startup_s": round(marks["startup_s"], 2),
        "detections_run": pipeline.detections_run, "model_runs": pipeline.model_runs,
        # The work behind the speed: a clip where nothing was found measures only decoding and detection.
        "faces_detected": getattr(pipeline, "faces_seen", None),
        "tracks": sum(1 for _, p in emitted if p["type"] == "face_appeared"),
        "decisions": {"named": sum(1 for p in identified.values() if p["identity"]),
                      "unknown": sum(1 for p in identified.values() if not p["identity"])},
        "events": {k: sum(1 for _, p in emitted if p["type"] == k)
                   for k in ("face_appeared", "face_identified", "face_left")},
        "identified_as": sorted({(p["identity"] or {}).get("name", "unknown") for p in identified.values()}),
        "stages": {k: {"median_ms": round(v["median_ms"], 2), "p95_ms": round(v["p95_ms"], 2), "n": v["n"]}
                   for k, v in stages.items()},
        "backends": {d.model: f"{d.backend} ({d.device})" for d in models.decisions},
    }
    if rss_samples:
        result["rss_samples"] = rss_samples
    if spec["truth"] and not spec["duration"]:
        truth = {int(k): v for k, v in spec["truth"].items()}
        result.update(identity_accuracy(truth, reported))
    shutil.rmtree(tmp, ignore_errors=True)
    return result


# ----------------------------------------------------------------------------------------- child: peer

def child_peer(spec: dict) -> dict:
    """The face_recognition library's webcam loop, with dlib called directly (face_recognition's own
    functions are thin wrappers): HOG detection upsampled once, 5-point shape, 128-D descriptor, every
    frame, every face; compare to the known encodings at tolerance 0.6."""
    from importlib.util import find_spec

    import cv2
    if find_spec("dlib") is None or find_spec("face_recognition_models") is None:
        return {"error": "the face_recognition loop needs dlib-bin and face-recognition-models "
                         "(pip install -e '.[bench]')"}
    import dlib
    import numpy as np

    model_dir = Path(find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
    detector = dlib.get_frontal_face_detector()
    shape_predictor = dlib.shape_predictor(str(model_dir / "shape_predictor_5_face_landmarks.dat"))
    encoder = dlib.face_recognition_model_v1(str(model_dir / "dlib_face_recognition_resnet_model_v1.dat"))

    def encodings(rgb):
        boxes = detector(rgb, 1)
        return boxes, [np.array(encoder.compute_face_descriptor(rgb, shape_predictor(rgb, b), 1)) for b in boxes]

    known, names = [], []
    for photo in sorted(GALLERY.glob("*.jpg")):
        rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
        known.append(encodings(rgb)[1][0])
        names.append(photo.stem)
    known = np.stack(known)
    capture = cv2.VideoCapture(spec["video"])
    reported: dict[int, list] = {}
    frame_ms = []
    frames = faces_detected = named = 0
    first = cpu0 = None
    while not spec["max_frames"] or frames < spec["max_frames"]:
        ok, bgr = capture.read()
        if not ok:
            break
        if first is None:
            first, cpu0 = time.perf_counter(), time.process_time()
            startup = first - T_START
        started = time.perf_counter()
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        boxes, descriptors = encodings(rgb)
        said = []
        for box, d in zip(boxes, descriptors):
            distances = np.linalg.norm(known - d, axis=1)
            name = names[int(distances.argmin())] if distances.min() <= 0.6 else "unknown"
            said.append(((box.left(), box.top(), box.width(), box.height()), name))
        reported[frames] = said
        faces_detected += len(said)
        named += sum(1 for _, name in said if name != "unknown")
        frame_ms.append((time.perf_counter() - started) * 1000)
        frames += 1
    wall = time.perf_counter() - first
    result = {"frames": frames, "wall_s": round(wall, 2), "fps": round(frames / wall, 2),
              "cpu_ms_per_frame": round((time.process_time() - cpu0) * 1000 / frames, 1),
              "frame_ms_median": round(percentile(frame_ms, 50), 1), "frame_ms_p95": round(percentile(frame_ms, 95), 1),
              "peak_rss_mb": round(peak_rss_mb(), 1), "startup_s": round(startup, 2),
              "latency_p50_ms": None, "latency_p95_ms": None,
              # The loop names (or not) every face of every frame: each face-frame is a decision, no tracks.
              "faces_detected": faces_detected, "tracks": None,
              "decisions": {"named": named, "unknown": faces_detected - named}}
    if spec["truth"]:
        truth = {int(k): v for k, v in spec["truth"].items() if int(k) < frames}
        result.update(identity_accuracy(truth, reported))
    return result


# ----------------------------------------------------------------------------------------- parent

class Broker:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="edge-bench-broker-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = self.dir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        f"log_dest file {self.dir}/mosquitto.log\n")
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self):
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


GENERATED = ("crowd", "empty")


def missing_photo_packages() -> list[str]:
    """What `crowd` and `empty` need and is not installed: they are built from sample photos that ship inside
    matplotlib and scikit-image (the `bench` extra)."""
    from importlib.util import find_spec
    return [name for name, module in (("matplotlib", "matplotlib"), ("scikit-image", "skimage"))
            if find_spec(module) is None]


def generated_video(name: str) -> Path:
    from benchmarks.videos import crowd_video, empty_video
    return {"crowd": crowd_video, "empty": empty_video}[name]()


def clip_names(shared_videos: Path | None) -> list[str]:
    """The names `--video` takes: demo, crowd, empty, and the stem of every *.mp4 in the shared video folder."""
    shared = sorted(p.stem for p in shared_videos.glob("*.mp4")) if shared_videos and shared_videos.is_dir() else []
    return ["demo", *GENERATED, *shared]


class VideoError(ValueError):
    """A --video that names no clip and no readable file (one line, exit 2)."""


def clip_path(name: str, shared_videos: Path | None) -> Path:
    if name == "demo":
        return DEMO_VIDEO
    if name in GENERATED:
        missing = missing_photo_packages()
        if missing:
            raise VideoError(f"the {name} video is built from sample photos of {' and '.join(missing)}: "
                             "pip install -e '.[bench]' (or make bench)")
        return generated_video(name)
    return shared_videos / f"{name}.mp4"


def resolve_video(given: str, shared_videos: Path | None) -> tuple[str, Path]:
    """(result name, file) for a `--video` value: an existing file, or a clip name (case, spaces and dashes
    ignored; a unique beginning is enough: `covent garden`). Anything else is a VideoError, at once: the
    daemon would wait for a missing file as it waits for a camera to come back."""
    path = Path(given).expanduser()
    names = clip_names(shared_videos)
    if path.is_file():
        name = path.stem
    else:
        key = "_".join(given.strip().lower().replace("-", " ").split())
        matches = [n for n in names if n.lower() == key] or [n for n in names if n.lower().startswith(key)]
        if not key or len(matches) != 1:
            several = bool(key) and len(matches) > 1
            what = "names several clips" if several else "is no clip name and no such file"
            raise VideoError(f"--video {given!r} {what} (clips: {', '.join(matches if several else names)})")
        name, path = matches[0], clip_path(matches[0], shared_videos)
    import cv2
    capture = cv2.VideoCapture(str(path))
    readable = capture.isOpened() and capture.read()[0]
    capture.release()
    if not readable:
        raise VideoError(f"--video {given!r}: OpenCV reads no frame from {shown(path) if name != given else 'it'}")
    return name, path


def default_videos(shared_videos: Path | None) -> dict[str, Path]:
    """Every clip: the demo, `crowd` and `empty` (left out with one line without the packages they are built
    from: the other videos still run) and the shared videos unless `shared_videos` is None."""
    missing = missing_photo_packages()
    if missing:
        print(f"crowd and empty videos skipped: they are built from sample photos of {' and '.join(missing)} "
              "(pip install -e '.[bench]', or make bench)", file=sys.stderr)
    return {name: clip_path(name, shared_videos) for name in clip_names(shared_videos)
            if not (missing and name in GENERATED)}


def run_child(spec: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_pipeline", "--child", json.dumps(spec)],
                         capture_output=True, text=True,
                         cwd=ROOT, timeout=3600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]}
    return json.loads(lines[-1])


def shown(path: Path) -> str:
    """A video as the results name it: relative to the project (`../shared/...`), or just its name for the
    generated ones in the cache folder; never this machine's absolute path."""
    path = Path(path).resolve()
    for base, prefix in ((ROOT, ""), (ROOT.parent, "../")):
        if path.is_relative_to(base):
            return prefix + str(path.relative_to(base))
    return path.name


def machine() -> dict:
    load = os.getloadavg()
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_avg_1_5_15": [round(v, 2) for v in load], "date": time.strftime("%Y-%m-%d %H:%M")}


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def decisions(r: dict) -> str:
    d = r.get("decisions")
    return "-" if not d else f"{d['named']} / {d['unknown']}"


def speed(r: dict) -> str:
    """frames/s, unless the detector found nothing: then the figure measures no face work at all."""
    if r.get("faces_detected") == 0:
        return f"no face found ({fmt(r['fps'])} not comparable)"
    return fmt(r["fps"])


def markdown(results: dict) -> str:
    rows = ["| video | variant | frames | faces detected | tracks | decisions named / unknown | frames/s | "
            "CPU ms/frame | latency p50 / p95 ms | peak RSS MB | start-up s | identity: all / labelled / wrong name |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    stage_rows = ["| video | variant | " + " | ".join(s.replace("_events", "*") for s in STAGES) + " |",
                  "|---|---|" + "---|" * len(STAGES)]
    for video, entry in results.items():
        for variant, r in entry["variants"].items():
            if "error" in r:
                rows.append(f"| {video} | {variant} | error: {r['error']} |")
                continue
            acc = (f"{r['identity_accuracy']:.3f} / {r['labelled_accuracy']:.3f} / {r['wrong_name_rate']:.3f}"
                   if "identity_accuracy" in r else "-")
            work = f"{fmt(r.get('faces_detected'))} | {fmt(r.get('tracks'))} | {decisions(r)}"
            rows.append(f"| {video} | {variant} | {r['frames']} | {work} | {speed(r)} | {fmt(r['cpu_ms_per_frame'])} | "
                        f"{fmt(r.get('latency_p50_ms'), 0)} / {fmt(r.get('latency_p95_ms'), 0)} | "
                        f"{fmt(r['peak_rss_mb'], 0)} | {fmt(r['startup_s'], 2)} | {acc} |")
            if "stages" in r:
                cells = [f"{r['stages'][s]['median_ms']:.1f} / {r['stages'][s]['p95_ms']:.1f}" if s in r["stages"]
                         else "-" for s in STAGES]
                stage_rows.append(f"| {video} | {variant} | " + " | ".join(cells) + " |")
    ratio_lines = []
    for video, entry in results.items():
        v = entry["variants"]
        for other in ("peer", "naive"):
            if "fast" in v and other in v and "error" not in v["fast"] and "error" not in v[other] \
                    and v["fast"].get("faces_detected") != 0:
                ratio_lines.append(f"- {video}: fast / {other} = {v['fast']['fps'] / v[other]['fps']:.1f}x frames/s, "
                                   f"{v[other]['cpu_ms_per_frame'] / v['fast']['cpu_ms_per_frame']:.1f}x less CPU per frame")
    return "\n".join(rows) + "\n\nStage median / p95 ms, the daemon's own StageTimer (per call; capture = one frame read and " \
        "decoded; store* = one frame's events through every sink, frames that emitted events only; publish* = " \
        "the pump right after such a frame, which sends them):\n\n" \
        + "\n".join(stage_rows) + "\n\n" + "\n".join(ratio_lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", action="append", help="only this video (repeatable): a clip name (demo, crowd, "
                    "empty, a shared video's name such as covent_garden...) or a video file")
    ap.add_argument("--detector", help="detector.type for every pipeline run (default: the config's)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--variants", default="fast,naive,peer", help="comma list: fast, naive, peer, ablate, "
                    "or a name from the ablation list")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override for pipeline runs")
    ap.add_argument("--pace", choices=["every_frame", "realtime"], default="every_frame")
    ap.add_argument("--duration", type=float, default=0, help="loop each video for this many seconds")
    ap.add_argument("--max-frames", type=int, default=0)
    ap.add_argument("--peer-max-frames", type=int, default=100, help="peer frames on videos without ground truth")
    ap.add_argument("--shared-videos", type=Path, default=SHARED_VIDEOS,
                    help="folder whose *.mp4 are benchmarked too (default ../shared/datasets/video)")
    ap.add_argument("--no-shared", action="store_true", help="skip the shared videos")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child_peer(spec) if spec["kind"] == "peer" else child_pipeline(spec)))
        return 0

    if args.video:       # a shared clip can be named with --no-shared too: that only trims the default set
        try:
            videos = dict(resolve_video(given, args.shared_videos) for given in args.video)
        except VideoError as exc:
            print(f"bench_pipeline: {exc}", file=sys.stderr)
            return 2
    else:
        videos = default_videos(None if args.no_shared else args.shared_videos)
    variants: list[str] = []
    for name in args.variants.split(","):
        variants += list(ABLATIONS) if name == "ablate" else [name]
    have_broker = bool(shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())
    broker = Broker() if have_broker else None
    if not broker:
        print("mosquitto not found: latency is measured at the daemon's event callback, not over MQTT",
              file=sys.stderr)
    results = {}
    try:
        for name, path in videos.items():
            truth = load_truth(path)
            entry = results[name] = {"video": shown(path), "variants": {}}
            for variant in variants:
                spec = {"kind": "peer" if variant == "peer" else "pipeline", "video": str(path),
                        "detector": args.detector, "pace": args.pace, "duration": args.duration,
                        "port": broker.port if broker else 0, "max_frames": args.max_frames,
                        "truth": {str(k): v for k, v in truth.items()} if truth else None}
                if variant == "peer":
                    if args.duration:
                        continue
                    spec["max_frames"] = args.max_frames or (0 if truth else args.peer_max_frames)
                else:
                    spec["sets"] = {"fast": [], "naive": NAIVE}.get(variant, ABLATIONS.get(variant, [])) + args.sets
                print(f"{name} / {variant} ...", file=sys.stderr, flush=True)
                entry["variants"][variant] = r = run_child(spec)
                print(f"  {json.dumps({k: r.get(k) for k in ('fps', 'faces_detected', 'tracks', 'decisions', 'cpu_ms_per_frame', 'latency_p95_ms', 'peak_rss_mb', 'identity_accuracy', 'error') if k in r})}",
                      file=sys.stderr, flush=True)
            main_run = entry["variants"].get("fast") or next(iter(entry["variants"].values()))
            for key in ("fps", "cpu_ms_per_frame", "latency_p50_ms", "latency_p95_ms", "peak_rss_mb", "startup_s",
                        "rss_start_mb", "rss_end_mb", "identity_accuracy", "faces_detected", "tracks", "decisions"):
                if key in main_run:
                    entry[key] = main_run[key]
    finally:
        if broker:
            broker.stop()
    table = markdown(results)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({**results, "_meta": {"machine": machine(), "detector": args.detector,
                                                              "pace": args.pace, "sets": args.sets,
                                                              "duration_s": args.duration}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
