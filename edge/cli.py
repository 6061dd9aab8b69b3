"""The `edge` command: parses arguments, loads config, hands over to the module that does the work."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import tempfile
from pathlib import Path

from . import __version__
from .backends import ModelLoadError
from .config import DEFAULT_CONFIG, DEMO_DIR, AppConfig, ConfigError, config_source, load_config, with_changes
from .enroll import BadName
from .images import ImageError
from .store import StoreError

EXIT_CONFIG = 2
EXIT_MODEL = 3
EXIT_INPUT = 4

log = logging.getLogger("edge")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, action="append",
                        help="YAML config (default: $EDGE_CONFIG, else /etc/edge/edge.yaml when present, else the "
                             "shipped config/default.yaml); repeatable: a later file changes the keys it names, "
                             "e.g. --config /etc/edge/edge.yaml --config /etc/edge/cameras/door.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a config key, e.g. --set mqtt.port=1884 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="Edge face appliance daemon and tools.")
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon on the configured camera")
    run.add_argument("--source", help="camera override: device index, file, rtsp:// URL or GStreamer pipeline")
    run.add_argument("--max-frames", type=int, help="stop after N processed frames")
    run.add_argument("--print-events", action="store_true", help="also print every event as a JSON line")
    run.add_argument("--display", action="store_true", help="kiosk window with boxes, names, age, gender "
                                                            "(same as --set display.enabled=true)")

    demo = sub.add_parser("demo", help="run on the bundled demo video with a bundled gallery; no camera, no broker")
    demo.add_argument("--max-frames", type=int)

    enroll = sub.add_parser("enroll", help="add a person from photos or folders of photos (one face per photo), "
                                           "or from the camera (--camera)")
    enroll.add_argument("name")
    enroll.add_argument("images", nargs="*", type=Path, metavar="PHOTO_OR_FOLDER")
    enroll.add_argument("--strict", action="store_true",
                        help="save nothing when any photo is unusable (default: report it and skip it)")
    enroll.add_argument("--camera", action="store_true",
                        help="take good frames of the one face in front of the configured camera: through the "
                             "running daemon (progress on its kiosk window), or by opening the camera when none runs")
    enroll.add_argument("--frames", type=int, metavar="N",
                        help="with --camera: good frames to collect (default camera_enrolment.frames)")
    enroll.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="with --camera: give up after this long (default camera_enrolment.timeout_s)")

    sub.add_parser("hash-password", help="print the scrypt hash of a password for web.password / web.token "
                                         "(read from stdin, or asked twice on a terminal)")

    backup = sub.add_parser("backup", help="consistent copy of the database (safe while the daemon runs)")
    backup.add_argument("path", type=Path, help="file to write (or a folder to write edge.db into)")

    identities = sub.add_parser("identities", help="list or forget enrolled people")
    id_sub = identities.add_subparsers(dest="action", required=True)
    id_list = id_sub.add_parser("list")
    id_list.add_argument("--json", action="store_true")
    forget = id_sub.add_parser("forget", help="erase a person's embeddings, sightings and queued events")
    forget.add_argument("name")
    for p in (id_list, forget):
        _common(p)

    unknowns = sub.add_parser("unknowns", help="unknown faces grouped by person: list, enrol a group, forget one")
    unknown_sub = unknowns.add_subparsers(dest="action", required=True)
    unknown_list = unknown_sub.add_parser("list", help="groups of unknown tracks, oldest first")
    unknown_list.add_argument("--json", action="store_true")
    unknown_name = unknown_sub.add_parser("name", help="enrol a group as a person (no photos needed)")
    unknown_name.add_argument("cluster", type=int)
    unknown_name.add_argument("name")
    unknown_forget = unknown_sub.add_parser("forget", help="erase a group's embeddings")
    unknown_forget.add_argument("cluster", type=int)
    for p in (unknown_list, unknown_name, unknown_forget):
        _common(p)

    analyze = sub.add_parser("analyze", help="detect, align, age, gender and identity on still images")
    analyze.add_argument("images", nargs="+", type=Path)
    analyze.add_argument("--json", action="store_true", help="one JSON object per image")

    compare = sub.add_parser("compare", help="are the faces in two photos the same person? (largest face of each)")
    compare.add_argument("image_a", type=Path)
    compare.add_argument("image_b", type=Path)
    compare.add_argument("--json", action="store_true", help="one JSON object")

    calibrate = sub.add_parser("calibrate", help="choose identity.threshold from the enrolled gallery plus a "
                                                 "folder of photos (one sub-folder per person)")
    calibrate.add_argument("folder", type=Path)
    calibrate.add_argument("--target-far", type=float,
                           help="most permissive threshold with at most this false accept rate (default: max F1)")
    calibrate.add_argument("--output", type=Path,
                           help="YAML to write (default: calibrated.yaml beside the database, store.path)")
    calibrate.add_argument("--plot", type=Path, help="PNG of both distance histograms and the threshold")
    calibrate.add_argument("--json", action="store_true")

    sub.add_parser("doctor", help="hardware, runtimes, chosen backends, camera and broker check")

    models = sub.add_parser("models", help="shipped model files")
    models_sub = models.add_subparsers(dest="action", required=True)
    for p in (models_sub.add_parser("list"), models_sub.add_parser("verify")):
        _common(p)

    for p in (run, demo, enroll, backup, analyze, compare, calibrate, sub.choices["doctor"],
              sub.choices["hash-password"]):
        _common(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "enroll" and not any(a.startswith("-") for a in extra):
        # `edge enroll NAME --strict PHOTO...`: argparse gives an optional positional list (PHOTO may be left
        # out for --camera) only the words before the first option.
        args.images += [Path(a) for a in extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.command_line = shlex.join(["edge", *argv])
    files = list(args.config or [])
    if args.command == "demo" and not files:
        # The demo is the shipped product on bundled data: never a service box's /etc/edge/edge.yaml.
        files = [os.environ.get("EDGE_CONFIG") or DEFAULT_CONFIG]
    if files:
        args.config_file = " + ".join(str(f) for f in files) + " (--config)"
    else:
        path, why = config_source(None)
        files, args.config_file = [path], f"{path} ({why})"
    try:
        cfg = load_config(files, args.overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(level=cfg.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = COMMANDS[args.command]
    try:
        return handler(cfg, args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    except ModelLoadError as exc:
        print(f"model error: {exc}", file=sys.stderr)
        return EXIT_MODEL
    except StoreError as exc:
        print(f"database error: {exc}", file=sys.stderr)
        return 1
    except ImageError as exc:
        print(f"image error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except BadName as exc:
        print(f"usage error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _store(cfg: AppConfig, args):
    """The configured database, refused with the command to run instead when it belongs to the service user."""
    from .service_box import check_store_owner
    from .store import Store
    check_store_owner(cfg.store.path, args.command_line)
    return Store(cfg.store.path)


def _existing_store(cfg: AppConfig, args):
    """The database when there is one (read-only commands do not create it), else None."""
    from .service_box import check_store_owner
    from .store import Store
    try:
        cfg.store.path.stat()
    except FileNotFoundError:
        return None
    except PermissionError:
        pass          # inside the service's 0700 state directory: check_store_owner says what to do
    check_store_owner(cfg.store.path, args.command_line)
    return Store(cfg.store.path)


def _missing_video_file(source: str) -> bool:
    """A file path that is not there: a typo, never retried. Devices (/dev/video0 too) and streams may
    come back and are retried by the grabber."""
    from .capture.opencv import classify
    return (classify(source) == "file" and source.strip().lower() not in ("picamera2", "picamera", "pi")
            and not source.strip().startswith("/dev/") and not Path(source.strip()).exists())


def cmd_run(cfg: AppConfig, args) -> int:
    from .daemon import Daemon, print_event

    if args.source:
        cfg = with_changes(cfg, {"source": args.source})
    if args.display:
        cfg = with_changes(cfg, {"display.enabled": True})
    if _missing_video_file(cfg.source):
        key = "--source" if args.source else "source"
        raise ConfigError(f"config error: {key}: no such video file: {cfg.source} "
                          "(a camera is a device index like 0, an rtsp:// URL, a GStreamer pipeline or picamera2)")
    from .service_box import check_store_owner
    check_store_owner(cfg.store.path, args.command_line)
    daemon = Daemon(cfg, max_frames=args.max_frames, on_event=print_event if args.print_events else None)
    daemon.install_signal_handlers()
    return daemon.run()


def cmd_demo(cfg: AppConfig, args) -> int:
    """The bundled video, a temporary database enrolled from the bundled gallery photos, events on stdout."""
    from .daemon import Daemon, print_event
    from .enroll import enroll
    from .models.loader import load_models
    from .store import Store

    explicit = {o.split("=", 1)[0].strip() for o in args.overrides}
    with tempfile.TemporaryDirectory(prefix="edge-demo-") as tmp:
        # Its own name on the broker (--set mqtt.enabled=true publishes): a real box's Home Assistant entities,
        # topics and shared gallery are never touched, whatever config the demo was started with.
        changes = {"source": str(DEMO_DIR / "demo.mp4"), "capture.pace": "every_frame",
                   "store.path": str(Path(tmp) / "demo.db"), "mqtt.enabled": False,
                   "device": DEMO_DEVICE, "mqtt.prefix": DEMO_DEVICE, "mqtt.client_id": None,
                   "homeassistant.node_id": None, "web.enabled": False, "display.enabled": False}
        cfg = with_changes(cfg, {**{k: v for k, v in changes.items() if not _set_by_user(k, explicit)},
                                 "fleet.enabled": False})
        models = load_models(cfg)
        store = Store(cfg.store.path)
        for photo in sorted((DEMO_DIR / "gallery").glob("*.jpg")):
            enroll(models, store, photo.stem, [photo])
            print(f"demo: enrolled {photo.stem} from {photo.name}", file=sys.stderr)
        daemon = Daemon(cfg, max_frames=args.max_frames, on_event=print_event, models=models, store=store)
        daemon.install_signal_handlers()
        code = daemon.run()
        elapsed = max(1e-6, __import__("time").monotonic() - daemon.started)
        print(f"demo: {daemon.pipeline.frames} frames in {elapsed:.1f} s ({daemon.pipeline.frames / elapsed:.1f} "
              f"frames/s including start-up), {daemon.events_produced} events", file=sys.stderr)
        store.close()
        return code


DEMO_DEVICE = "edge-demo"


def _set_by_user(key: str, explicit: set[str]) -> bool:
    """Whether a `--set` covers this dotted key (`--set display=true` also sets display.enabled)."""
    return any(e == key or key.startswith(e + ".") or e.startswith(key + ".") for e in explicit)


def _faces_in(models, path: Path):
    import cv2
    from .analysis import faces_in
    try:
        return faces_in(models, path)
    except cv2.error as exc:
        # One odd photo must not end a batch (`edge analyze *.jpg`): it becomes that photo's error.
        reason = next((line for line in str(exc).splitlines() if "error:" in line), str(exc)).strip()
        raise ImageError(f"{path}: OpenCV cannot process this image ({reason[:200]})", "damaged") from None


def _progress(items, what: str, unit: str):
    """A tqdm bar on stderr for long jobs; off when stderr is not a terminal (logs, pipes, tests)."""
    from tqdm import tqdm
    return tqdm(items, desc=what, unit=unit, disable=None, leave=False, file=sys.stderr)


def cmd_enroll(cfg: AppConfig, args) -> int:
    """Per-photo lines on stderr for what was not stored, one summary line; exit 4 when nothing usable."""
    from .enroll import FINE, checked_name, enroll, photos_in
    from .models.loader import load_models

    name = checked_name(args.name)          # a bad name is a usage error, found before any model loads
    if args.camera:
        return _enroll_from_camera(cfg, args, name)
    if args.frames is not None or args.timeout is not None:
        raise BadName("--frames and --timeout go with --camera")
    if not args.images:
        raise BadName("give photos or folders of photos to enrol from, or --camera")
    photos = photos_in(args.images)
    if not photos:
        raise ImageError(f"no photos in {', '.join(map(str, args.images))} (looked for "
                         ".jpg, .jpeg, .png, .bmp, .webp, .tif)", "missing")
    models = load_models(cfg)
    store = _store(cfg, args)
    result = enroll(models, store, name, photos, strict=args.strict,
                    progress=lambda items: _progress(items, f"enrolling {name}", "photo"))
    for photo in result.photos:
        if photo.status != "ok":
            print(("" if photo.status in FINE else "skipped: ") + photo.message, file=sys.stderr)
    if not result.stored:
        print(result.summary(), file=sys.stderr)
        # Every photo already stored is not a failure: the person is enrolled from them.
        return 0 if not result.bad else EXIT_INPUT
    print(result.summary())
    _share_with_fleet(cfg, store)
    return 0


def _enroll_from_camera(cfg: AppConfig, args, name: str) -> int:
    """A request row the camera's daemon serves (or this process, when no daemon holds the camera); progress
    lines on stdout, the outcome as the last line; exit 0 enrolled, 4 refused, 1 failed, 130 interrupted."""
    import threading
    from .enroll_camera import CameraLock, follow, run_here
    from .store import MAX_WAITING_PER_CAMERA

    if args.images:
        raise BadName("--camera takes no photos: the frames come from the camera")
    frames = cfg.camera_enrolment.frames if args.frames is None else args.frames
    timeout_s = cfg.camera_enrolment.timeout_s if args.timeout is None else args.timeout
    if not 1 <= frames <= 50 or not 0 < timeout_s <= 600:
        raise BadName("--frames must be 1-50 and --timeout 0-600 seconds")
    store = _store(cfg, args)
    lock = CameraLock(cfg)
    here = lock.acquire()            # held: no daemon reads this camera, so this process does
    if here:
        store.abandon_camera_enrolments(cfg.camera)
    request_id = store.request_camera_enrolment(name, cfg.camera, frames, timeout_s)
    if request_id is None:
        print(f"camera {cfg.camera} already has requests waiting; try again when they are done", file=sys.stderr)
        lock.release()
        return 1
    stop = threading.Event()
    worker = None
    if here:
        print(f"no daemon reads camera {cfg.camera}: opening {cfg.source} here", file=sys.stderr)
        from .models.loader import load_models
        models = load_models(cfg)
        request = store.take_camera_enrolment(cfg.camera, request_id)

        def serve():
            from .store import Store
            own = Store(cfg.store.path)        # one Store per thread
            try:
                run_here(cfg, own, request, models, lock, stop)
            finally:
                own.close()
                lock.release()
        worker = threading.Thread(target=serve, name="enroll-camera", daemon=True)
        worker.start()
    else:
        print(f"asked the daemon of camera {cfg.camera} to enrol {name} ({frames} good frames within "
              f"{timeout_s:.0f} s): one person, facing the camera", file=sys.stderr)

    def show(row: dict) -> None:
        if row["status"] in ("requested", "running"):
            print(f"{row['good']}/{row['frames']}  {row['message']}", flush=True)
    try:
        # A daemon that holds the camera gets to this request after those already waiting (each up to its timeout);
        # served here, the request is running before the first look.
        row = follow(store, request_id, show, stop, wait_for_daemon_s=(MAX_WAITING_PER_CAMERA + 1) * timeout_s + 30)
    except KeyboardInterrupt:
        stop.set()
        store.finish_camera_enrolment(request_id, "cancelled", "not enrolled: cancelled by the requester")
        print("cancelled", file=sys.stderr)
        return 130
    finally:
        stop.set()
        if worker is not None:
            worker.join(timeout=10)
    if row["status"] == "done":
        print(row["message"])
        _share_with_fleet(cfg, store)
        return 0
    print(row["message"], file=sys.stderr)
    return EXIT_INPUT if row["status"] == "refused" else 1


def cmd_hash_password(cfg: AppConfig, args) -> int:
    """The config then holds only the hash: web.password: "scrypt$..." (edge/web_auth.py)."""
    from .web_auth import hash_secret
    if sys.stdin.isatty():
        import getpass
        first, second = getpass.getpass("password: "), getpass.getpass("again: ")
        if first != second:
            print("usage error: the two passwords differ", file=sys.stderr)
            return EXIT_CONFIG
    else:
        first = sys.stdin.readline().rstrip("\n")
    if len(first) < 8:
        print("usage error: use at least 8 characters", file=sys.stderr)
        return EXIT_CONFIG
    print(hash_secret(first))
    return 0


def cmd_backup(cfg: AppConfig, args) -> int:
    from .backup import backup
    size = backup(cfg.store.path, args.path)
    print(f"backed up {cfg.store.path} to {args.path} ({size / 1024:.0f} KiB)")
    return 0


def _share_with_fleet(cfg: AppConfig, store) -> None:
    """Enrollments and forgets reach the other boxes (README "Fleet gallery")."""
    if cfg.fleet.enabled:
        from .fleet import share_now
        print(share_now(cfg, store))


def cmd_identities(cfg: AppConfig, args) -> int:
    if args.action == "forget":
        return _forget(cfg, args.name, args)
    store = _store(cfg, args)
    if args.action == "list":
        model = cfg.identity.model
        rows = store.identities(model)
        if args.json:
            print(json.dumps(rows))
        elif not rows:
            print("no one is enrolled")
        else:
            for row in rows:
                stale = f"; must be enrolled again: only {', '.join(row['other_models'])} embeddings, the " \
                        f"model in force is {model} (edge enroll {row['name']} PHOTO...)" if not row["embeddings"] else ""
                print(f"{row['name']}: {row['embeddings']} {model} embedding(s), {row['sightings']} sighting(s)"
                      + stale)
        return 0


def _forget(cfg: AppConfig, name: str, args) -> int:
    """Erase a person; resumable (Store.forget): running it again finishes an erasure that a crash or a
    full disk interrupted."""
    from .enroll import erase_person
    from .service_box import check_store_owner
    from .snapshots import erase_thumbnails
    from .store import Store

    check_store_owner(cfg.store.path, args.command_line)     # the service's database: run as its user
    # Files first: they need no database, and on a full disk the space they free lets SQLite open at all.
    early = erase_thumbnails(cfg, name)
    try:
        store = Store(cfg.store.path)
    except StoreError as exc:
        raise StoreError(f"{exc}; {early} thumbnail(s) erased, nothing else changed: run this again once "
                         "the problem is fixed") from None
    try:
        erasure = erase_person(cfg, store, name)
    except StoreError as exc:
        raise StoreError(f"{exc} ({early} thumbnail(s) erased)") from None
    files = early + erasure.files
    if not erasure:
        if files:
            print(f"no enrolled person named {name!r}; erased {files} thumbnail(s) left behind")
            return 0
        print(f"no enrolled person named {name!r}", file=sys.stderr)
        return 1
    done = "finished forgetting" if erasure.resumed else "forgot"
    print(f"{done} {name}: embeddings, sightings, queued events and {files} thumbnail(s) erased"
          + ("; free space not reclaimed (VACUUM failed, see above): run this again when there is room"
             if erasure.vacuum_error else ""))
    _share_with_fleet(cfg, store)
    return 0


def cmd_unknowns(cfg: AppConfig, args) -> int:
    from . import unknowns

    store = _store(cfg, args)
    if args.action == "list":
        groups = [c.as_dict() for c in unknowns.clusters(store, cfg)]
        if args.json:
            print(json.dumps(groups))
        elif not groups:
            print("no unknown faces kept" + ("" if cfg.unknowns.keep else " (unknowns.keep is off)"))
        else:
            for g in groups:
                age = "age ?" if g["age"] is None else f"age {g['age']:.0f}"
                print(f"cluster {g['cluster']}: {g['count']} track(s), {g['frames']} frames, {age}, "
                      f"{g['gender'] or 'gender ?'}, first seen {g['first_seen']}, last seen {g['last_seen']}"
                      + (f", thumbnail {g['thumbnail']}" if g["thumbnail"] else ""))
        return 0
    from .enroll import checked_name, forget_unknown_group, name_unknown_group
    name = checked_name(args.name) if args.action == "name" else None
    group = unknowns.find(store, cfg, args.cluster)
    if group is None:
        print(f"no unknown cluster {args.cluster} (see edge unknowns list)", file=sys.stderr)
        return 1
    # Thumbnails are handled whether or not they are kept now: files left from when they were.
    if args.action == "name":
        count = name_unknown_group(cfg, store, group, name)
        print(f"enrolled {name} from {count} unknown track(s) of cluster {args.cluster}")
    else:
        count = forget_unknown_group(cfg, store, group)
        print(f"forgot cluster {args.cluster}: {count} unknown track(s) erased")
    return 0


def cmd_analyze(cfg: AppConfig, args) -> int:
    from .analysis import face_results
    from .models.loader import load_models

    models = load_models(cfg)
    store = _existing_store(cfg, args)
    gallery = store.gallery(cfg.identity.model) if store else None
    status = 0
    for path in args.images:
        try:
            faces = _faces_in(models, path)
        except ImageError as exc:
            print(f"image error: {exc}", file=sys.stderr)
            status = EXIT_INPUT
            continue
        results = face_results(faces, gallery, cfg.identity.threshold, cfg.identity.metric,
                               cfg.identity.margin)
        if args.json:
            print(json.dumps({"image": str(path), "faces": results}))
            continue
        if not results:
            print(f"{path}: no face found")
        for i, r in enumerate(results, 1):
            who = f"{r['identity']['name']} (similarity {r['identity']['similarity']:.2f})" if r["identity"] \
                else "unknown"
            print(f"{path} face {i}: box {r['box']}, age {r['age']:.0f}, {r['gender']['label']} "
                  f"({r['gender']['confidence']:.0%}), {who}")
    return status


def _largest_face(models, path: Path):
    faces = _faces_in(models, path)
    if not faces:
        raise ImageError(f"{path}: no face found")
    return max(faces, key=lambda f: f.box[2] * f.box[3]), len(faces)


def cmd_compare(cfg: AppConfig, args) -> int:
    """Distance between the largest face of each photo, decided at the threshold in force."""
    from .identify import Match, distances
    from .models.loader import load_models

    models = load_models(cfg)
    (a, count_a), (b, count_b) = _largest_face(models, args.image_a), _largest_face(models, args.image_b)
    distance = float(distances(a.embedding[None], b.embedding[None], cfg.identity.metric)[0, 0])
    threshold = cfg.identity.threshold
    same = distance < threshold
    result = {"image_a": str(args.image_a), "image_b": str(args.image_b), "distance": round(distance, 4),
              "similarity": round(Match(None, distance, None).similarity, 4), "threshold": threshold,
              "same_person": same, "faces": [count_a, count_b], "box_a": list(a.box), "box_b": list(b.box)}
    if args.json:
        print(json.dumps(result))
        return 0
    for path, count in ((args.image_a, count_a), (args.image_b, count_b)):
        if count > 1:
            print(f"{path}: {count} faces, comparing the largest", file=sys.stderr)
    verdict = "same person" if same else "different people"
    print(f"{verdict}: distance {distance:.3f} {'<' if same else '>='} threshold {threshold:g} "
          f"(similarity {result['similarity']:.2f})")
    return 0


def cmd_calibrate(cfg: AppConfig, args) -> int:
    """Same/different distances between the folder's photos and the enrolled gallery -> threshold YAML."""
    import numpy as np
    from .evaluation import calibrate_threshold, calibration_yaml, labelled_pair_distances, plot_distance_histograms
    from .models.loader import load_models

    if not args.folder.is_dir():
        raise ImageError(f"{args.folder}: not a folder (expected one sub-folder of photos per person)")
    store = _existing_store(cfg, args)
    gallery = store.gallery(cfg.identity.model) if store else None
    models = load_models(cfg)
    names, vectors = [], []
    # Folders starting with "_" or "." hold no single person (group photos, videos).
    photos = [(person, photo) for person in sorted(p for p in args.folder.iterdir()
                                                   if p.is_dir() and p.name[0] not in "._")
              for photo in sorted(p for p in person.iterdir() if p.is_file())]
    for person, photo in _progress(photos, "embedding", "photo"):
        try:
            face, count = _largest_face(models, photo)
        except ImageError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            continue
        if count > 1:
            print(f"{photo}: {count} faces, using the largest", file=sys.stderr)
        names.append(person.name)
        vectors.append(face.embedding)
    if gallery is not None and len(gallery.vectors):
        names += [str(n) for n in gallery.names]
        vectors += list(gallery.vectors)
    matrix = np.stack(vectors) if vectors else np.zeros((0, 128), np.float32)
    distances, same = labelled_pair_distances(names, matrix, cfg.identity.metric)
    if not same.any() or same.all():
        raise ImageError("calibration needs at least two photos of one person and photos of two people "
                         f"(got {int(same.sum())} same-person and {int((~same).sum())} different-person pairs)")
    result = calibrate_threshold(distances, same, args.target_far)
    result["previous_threshold"] = cfg.identity.threshold
    # Beside the database by default: the state directory is the box's writable place (never site-packages).
    output = (args.output or cfg.store.path.parent / "calibrated.yaml").absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(calibration_yaml(result, cfg.identity.model, f"`edge calibrate {args.folder}`"))
    result["output"] = str(output)
    if args.plot:
        plot_distance_histograms(distances, same, result["threshold"], args.plot,
                                 f"calibration ({result['method']})")
        result["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(result))
        return 0
    at = result["at_threshold"]
    print(f"threshold {result['threshold']} ({result['method']}; was {cfg.identity.threshold}): "
          f"TAR {at['tar']:.1%}, FAR {at['far']:.2%}, accuracy {at['accuracy']:.1%} on "
          f"{result['same_pairs']} same / {result['different_pairs']} different pairs")
    print(f"written to {output}; use it with:")
    print(f"  --set identity.calibration_file={output}   (or --set identity.threshold={result['threshold']})")
    return 0


def cmd_doctor(cfg: AppConfig, args) -> int:
    from .doctor import report
    text, failed = report(cfg, args.config_file)
    print(text)
    return 1 if failed else 0


def cmd_models(cfg: AppConfig, args) -> int:
    from .models.manifest import load_manifest, verify_all

    if args.action == "list":
        manifest = load_manifest(cfg.models.dir)
        for name, entry in manifest["models"].items():
            formats = ", ".join(f"{fmt}: {f['path']}" for fmt, f in entry["files"].items())
            print(f"{name}: {entry['task']}; input {entry['input']['shape']}; {formats}; "
                  f"source {entry['source'].get('package') or entry['source'].get('repository')} "
                  f"{entry['source']['version']}; licence {entry['licence']}")
        return 0
    bad = 0
    for file, error in verify_all(cfg.models.dir):
        print(f"{'OK  ' if error is None else 'FAIL'} {file.path}" + (f": {error}" if error else ""))
        bad += error is not None
    return EXIT_MODEL if bad else 0


COMMANDS = {"run": cmd_run, "demo": cmd_demo, "enroll": cmd_enroll, "identities": cmd_identities,
            "analyze": cmd_analyze, "compare": cmd_compare, "calibrate": cmd_calibrate, "doctor": cmd_doctor,
            "models": cmd_models, "unknowns": cmd_unknowns, "backup": cmd_backup,
            "hash-password": cmd_hash_password}
