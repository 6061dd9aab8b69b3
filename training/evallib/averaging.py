"""Multi-frame averaging: synthetic clips (shift, scale, blur, exposure, noise) made from stills, and real
videos tracked as the daemon tracks them; metrics against the number of frames averaged."""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from edge import evaluation as ev
from edge.identify import pair_distances as embedding_distances
from edge.images import load_image

from .analyzer import (Analyzer, FaceRecord, central_face, image_size, largest_face, pad_image, to_records,
                       to_rows)
from .plots import plot_averaging, plot_path
from .datasets import Suite, read_person_folders
from .sections import ADULT_AGE

FRAMES_AVERAGED = (1, 3, 5, 10, 20)


def synthetic_clip(image: np.ndarray, frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A person standing before a camera, from one still: small shifts and scale changes (head and
    detector jitter), blur (focus, motion), brightness/contrast (auto exposure) and sensor noise."""
    h, w = image.shape[:2]
    clip = []
    for _ in range(frames):
        scale = rng.uniform(0.9, 1.1)
        angle = rng.uniform(-4, 4)
        shift = rng.uniform(-0.03, 0.03, 2) * (w, h)
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        matrix[:, 2] += shift
        frame = cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
        sigma = rng.uniform(0.0, 1.5)
        if sigma > 0.3:
            frame = cv2.GaussianBlur(frame, (0, 0), sigma)
        frame = frame.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25)
        frame += rng.normal(0, rng.uniform(2, 8), frame.shape)
        clip.append(np.clip(frame, 0, 255).astype(np.uint8))
    return clip


def clip_faces(analyzer: Analyzer, image: np.ndarray, frames: int, seed: int, cache_key) -> list[FaceRecord]:
    """The central face of each frame of a synthetic clip (frames without one are dropped, like a tracker)."""
    key = ("clip", cache_key, frames, seed)
    if key not in analyzer.cache:
        rng = np.random.default_rng(seed)
        h, w = image.shape[:2]
        out = []
        for frame in synthetic_clip(image, frames, rng):
            face = central_face(analyzer.faces_in(frame), w, h)
            if face is not None:
                face.embedding = face.embedding.astype(np.float16)   # keeps the cache small
                out.append(face)
        analyzer.remember(key, to_rows(out), save_every=10)
    return to_records(analyzer.cache[key])


def _seed(path: Path) -> int:
    """One clip per photo, the same on every run (and in every subset)."""
    return zlib.crc32(Path(path).name.encode())


def windows(faces: list, n: int) -> list[list]:
    """The clip's disjoint n-frame windows (at least one: a short clip gives all its frames)."""
    return [faces[i * n:(i + 1) * n] for i in range(max(1, len(faces) // n))]


def evaluate_averaging(analyzer: Analyzer, suite: Suite, plots: Path, frames=FRAMES_AVERAGED) -> dict:
    n_max = max(frames)
    result = {"frames": list(frames)}
    threshold, metric = analyzer.cfg.identity.threshold, analyzer.cfg.identity.metric
    min_agreement = analyzer.cfg.identity.min_agreement
    if suite.averaging_attributes:
        rows, incomplete = [], 0
        for item in tqdm(suite.averaging_attributes, desc="averaging age/gender", unit="clip"):
            image = pad_image(load_image(item.path), item.pad)
            faces = clip_faces(analyzer, image, n_max, _seed(item.path), (str(item.path), item.pad))
            # Only clips with a face in every frame: then every window count sees the same frames.
            if len(faces) == n_max:
                rows.append((item, faces))
            else:
                incomplete += 1
        analyzer.save()
        curve = []
        for n in frames if rows else ():
            # Every disjoint n-frame window of every clip is one sample: less luck than the first n frames only.
            samples = [(item, window) for item, faces in rows for window in windows(faces, n)]
            ages = np.array([np.mean([f.age for f in w]) for _, w in samples])
            female = np.array([np.mean([f.female for f in w]) for _, w in samples])
            truth_age = np.array([i.age for i, _ in samples])
            adult = truth_age >= ADULT_AGE
            gender_ok = np.array([(p >= 0.5) == (i.gender == "female") for p, (i, _) in zip(female, samples)])
            curve.append({"frames": n, "samples": len(samples),
                          "age_mae": ev.regression_errors(truth_age, ages)["mae"],
                          "age_mae_adults": ev.regression_errors(truth_age[adult], ages[adult])["mae"],
                          "gender_accuracy": float(gender_ok.mean())})
        single = np.array([[f.age for f in faces[:n_max]] + [np.nan] * (n_max - len(faces[:n_max]))
                           for _, faces in rows])
        result["attributes"] = {"clips": len(rows), "clips_with_missed_frames": incomplete, "curve": curve,
                                "per_frame_age_sd": float(np.nanmean(np.nanstd(single, axis=1))) if rows
                                else float("nan")}
    if suite.averaging_pairs:
        rows, incomplete = [], 0
        for a, b, same, _ in tqdm(suite.averaging_pairs, desc="averaging identity", unit="clip"):
            fa = central_face(analyzer.faces(a), *image_size(a))
            if fa is None:
                continue
            faces = clip_faces(analyzer, load_image(b), n_max, _seed(b), (str(b), 0.0))
            if len(faces) == n_max:
                rows.append((fa.embedding, faces, same))
            else:
                incomplete += 1
        analyzer.save()
        curve = []
        has_both = len({s for _, _, s in rows}) == 2       # a ROC needs same and different pairs
        for n in frames if has_both else ():
            samples = [(g, np.stack([f.embedding.astype(np.float32) for f in w]), s)
                       for g, faces, s in rows for w in windows(faces, n)]
            same = np.array([s for _, _, s in samples])
            d = np.array([embedding_distances(e.mean(axis=0)[None], g[None], metric)[0] for g, e, _ in samples])
            # pipeline._decide_identity: the averaged match decides only if identity.min_agreement of the
            # per-frame matches say the same; otherwise the track waits for more frames.
            per_frame = [embedding_distances(e, np.broadcast_to(g, e.shape), metric) < threshold for g, e, _ in samples]
            accepted = d < threshold
            agree = np.array([np.mean(pf == a) >= min_agreement for pf, a in zip(per_frame, accepted)])
            at = ev.verification_at(d, same, threshold)
            curve.append({"frames": n, "samples": len(samples), "accuracy": at["accuracy"], "tar": at["tar"],
                          "far": at["far"], "auc": ev.roc_curve(d, same).auc,
                          "same_distance_mean": float(d[same].mean()), "same_distance_max": float(d[same].max()),
                          "different_distance_min": float(d[~same].min()),
                          "decided": float(agree.mean()),
                          "decided_accuracy": float(np.mean(accepted[agree] == same[agree])) if agree.any()
                          else float("nan")})
        result["identity"] = {"pairs": len(rows), "clips_with_missed_frames": incomplete, "curve": curve}
    if suite.averaging_videos:
        result["video"] = {video.name: video_averaging(analyzer, video, gallery, frames)
                           for video, gallery in suite.averaging_videos}
    if plots:
        plot_averaging(result, plot_path(plots, "averaging.png"))
    return result


def video_faces(analyzer: Analyzer, video: Path) -> list[list[FaceRecord]]:
    """Faces of every frame of a video (cached per video)."""
    key = ("video", str(video.resolve()))
    if key not in analyzer.cache:
        capture = cv2.VideoCapture(str(video))
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        frames = []
        with tqdm(total=total, desc=f"video {video.name}", unit="frame") as bar:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                faces = analyzer.faces_in(frame)
                for face in faces:
                    face.embedding = face.embedding.astype(np.float16)
                frames.append(to_rows(faces))
                bar.update()
        capture.release()
        analyzer.remember(key, frames, save_every=1)
    return [to_records(rows) for rows in analyzer.cache[key]]


def video_averaging(analyzer: Analyzer, video: Path, gallery_folder: Path, frames) -> dict:
    """Real footage, tracked as the daemon tracks it: does an N-frame average name a track as the whole
    track's average does? (Whole-track decisions checked by eye on the shared clips: the enrolled person
    is named, audience members and passers-by are unknown.)"""
    from edge.face import Face
    from edge.identify import Gallery, match_many
    from edge.track import Tracker

    names, vectors = [], []
    for item in read_person_folders(gallery_folder):
        face = largest_face(analyzer.faces(item.path))
        if face is not None:
            names.append(item.identity)
            vectors.append(face.embedding)
    gallery = Gallery(np.array(names, dtype=object), np.stack(vectors).astype(np.float32))
    threshold, metric = analyzer.cfg.identity.threshold, analyzer.cfg.identity.metric
    fps = cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FPS) or 25.0
    tracker = Tracker(analyzer.cfg.tracking.model_copy(update={"window": 10 ** 6}), analyzer.cfg.identity)
    tracks: dict[int, list[np.ndarray]] = {}
    for index, records in enumerate(video_faces(analyzer, video)):
        faces = [Face(r.box, r.score, embedding=r.embedding.astype(np.float32)) for r in records]
        tracked, _ = tracker.update(faces, index / fps)
        for face in tracked:
            tracks.setdefault(face.track_id, []).append(face.embedding)
    long = {tid: np.stack(e) for tid, e in tracks.items() if len(e) >= max(frames)}
    whole = {tid: match_many(e.mean(axis=0)[None], gallery, threshold, metric)[0].name for tid, e in long.items()}
    curve = []
    for n in frames:
        same, false_accepts, wrong_names, count, rule_named = 0, 0, 0, 0, 0
        for tid, e in long.items():
            for w in windows(list(e), n):
                name = match_many(np.mean(w, axis=0)[None], gallery, threshold, metric)[0].name
                count += 1
                same += name == whole[tid]
                false_accepts += whole[tid] is None and name is not None
                wrong_names += whole[tid] is not None and name is not None and name != whole[tid]
                # The daemon also wants identity.min_agreement of the per-frame matches to say that name.
                per_frame = [m.name for m in match_many(np.stack(w), gallery, threshold, metric)]
                agreed = per_frame.count(name) / len(per_frame) >= analyzer.cfg.identity.min_agreement
                rule_named += agreed and name is not None and name != whole[tid]
        curve.append({"frames": n, "windows": count, "agrees_with_track": same / count if count else float("nan"),
                      "stranger_named": false_accepts, "wrong_name": wrong_names,
                      "wrongly_named_with_agreement_rule": rule_named})
    return {"tracks": len(long), "track_frames": [len(e) for e in long.values()],
            "whole_track_names": sorted(str(n) for n in whole.values()), "curve": curve}
