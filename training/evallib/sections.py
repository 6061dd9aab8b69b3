"""The evaluation sections on still photos: detection, age/gender, verification pairs, open-set identification.
Each takes an `Analyzer` and a `Suite` and returns a JSON-ready dict (plots beside the report)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge import evaluation as ev
from edge.identify import distances as embedding_table
from edge.identify import pair_distances as embedding_distances

from .analyzer import Analyzer, central_face, image_size, largest_face
from .datasets import LabelledImage, Suite, read_boxes_csv, subsample
from .plots import plot_age, plot_path, plot_roc

AGE_BANDS = [0, 13, 18, 30, 45, 60, 200]
ADULT_AGE = 18

# UTKFace's own age histogram: its 23,702 labelled images by band (ages inclusive), from "Age and Gender
# Prediction using Deep CNNs and Transfer Learning", Table 2, total column. The shared sample is flat over ages
# up to 90 (stratified), so its plain means weigh the over-60s far more than UTKFace, or a door camera, sees them;
# `natural_mix_weights` re-weights a sample to this mix.
UTKFACE_AGE_COUNTS: tuple[tuple[int, int, int], ...] = (
    (0, 10, 3062), (11, 20, 1530), (21, 30, 7344), (31, 40, 4536), (41, 50, 2244), (51, 60, 2298),
    (61, 70, 1316), (71, 80, 699), (81, 90, 504), (91, 100, 137), (101, 116, 32))
UTKFACE_AGE_SOURCE = ("UTKFace's 23,702 labelled images by age band (\"Age and Gender Prediction using Deep CNNs "
                      "and Transfer Learning\", Table 2)")


def natural_mix_bands(min_age: float = ADULT_AGE,
                      counts: tuple[tuple[int, int, int], ...] = UTKFACE_AGE_COUNTS) -> list[tuple[int, int, float]]:
    """(first age, last age, natural count) of the bands from `min_age` on. The band that `min_age` cuts keeps
    the share of its count that its ages from `min_age` on would have if ages were spread evenly over the band:
    for adults (18+), 18-20 is 3/10 of 11-20's 1,530 images (459)."""
    bands = []
    for low, high, n in counts:
        if high < min_age:
            continue
        first = max(low, int(np.ceil(min_age)))
        bands.append((first, high, n * (high - first + 1) / (high - low + 1)))
    return bands


def cut_band_note(min_age: float = ADULT_AGE,
                  counts: tuple[tuple[int, int, int], ...] = UTKFACE_AGE_COUNTS) -> str:
    """How the band that `min_age` cuts is counted, for the report."""
    for low, high, n in counts:
        first = int(np.ceil(min_age))
        if low < first <= high:
            kept, width = high - first + 1, high - low + 1
            return (f"{first}-{high} counts {kept}/{width} of UTKFace's {low}-{high} band ({n * kept / width:.0f} "
                    f"of {n:,} images), taking ages as spread evenly within the band")
    return f"no band is cut at age {min_age:g}"


def natural_mix_band_index(ages, bands: list[tuple[int, int, float]]) -> np.ndarray:
    """Index into `bands` per age, -1 outside them. Ages are whole years in UTKFace; a fractional age belongs to
    the band whose first age it has reached."""
    ages = np.floor(np.asarray(ages, np.float64))
    starts = np.array([low for low, _, _ in bands], np.float64)
    index = np.searchsorted(starts, ages, side="right") - 1
    index[(ages < bands[0][0]) | (ages > bands[-1][1])] = -1
    return index


def natural_mix_weights(ages, min_age: float = ADULT_AGE,
                        counts: tuple[tuple[int, int, int], ...] = UTKFACE_AGE_COUNTS) -> tuple[np.ndarray, dict]:
    """Weight per photo (0 below `min_age`) so that weighted means follow UTKFace's natural age mix:
    (natural share of its band) / (sample share of its band), both among the photos from `min_age` on.
    Bands with no photo in the sample cannot be represented; `covered` says which share of the natural mix the
    weighted figures stand for (the rest, e.g. 91+ for a sample that stops at 90, is left out, not guessed)."""
    ages = np.asarray(ages, np.float64)
    bands = natural_mix_bands(min_age, counts)
    natural_total = sum(n for _, _, n in bands)
    index = natural_mix_band_index(ages, bands)
    inside = (ages >= min_age) & (index >= 0)
    sample_total = int(inside.sum())
    weights = np.zeros(len(ages))
    table = []
    for b, (low, high, n) in enumerate(bands):
        members = inside & (index == b)
        k = int(members.sum())
        natural_share = n / natural_total
        sample_share = k / sample_total if sample_total else 0.0
        weight = natural_share / sample_share if k else 0.0
        weights[members] = weight
        table.append({"band": f"{low}-{high}", "natural": n, "natural_share": natural_share, "sample": k,
                      "sample_share": sample_share, "weight": weight})
    covered = sum(row["natural_share"] for row in table if row["sample"])
    return weights, {"bands": table, "covered": covered, "index": index}


def weighted_regression_errors(truth, predicted, weights) -> dict:
    """`ev.regression_errors` with a weight per sample (zero-weight samples left out of n)."""
    t, p, w = (np.asarray(x, np.float64) for x in (truth, predicted, weights))
    if w.sum() <= 0:
        return {"n": 0, "mae": float("nan"), "rmse": float("nan"), "bias": float("nan")}
    error = p - t
    return {"n": int((w > 0).sum()), "mae": float(np.average(np.abs(error), weights=w)),
            "rmse": float(np.sqrt(np.average(error ** 2, weights=w))), "bias": float(np.average(error, weights=w))}


def natural_mix_metrics(pairs, min_age: float = ADULT_AGE) -> dict:
    """Adult age errors and gender accuracy weighted to UTKFace's natural age mix, each over the same photos as
    its flat figure (face found; age, resp. gender, labelled). Weights are computed per figure, among its photos."""
    detected = [(i, f) for i, f in pairs if f is not None and i.age is not None and i.age >= min_age]
    result: dict = {"source": UTKFACE_AGE_SOURCE, "min_age": min_age, "cut_band": cut_band_note(min_age)}
    if detected:
        truth = np.array([i.age for i, _ in detected])
        pred = np.array([f.age for _, f in detected])
        weights, info = natural_mix_weights(truth, min_age)
        result["age_adults"] = weighted_regression_errors(truth, pred, weights)
        result["bands"], result["covered"] = info["bands"], info["covered"]
        for b, row in enumerate(result["bands"]):
            members = info["index"] == b
            row["mae"] = float(np.mean(np.abs(pred[members] - truth[members]))) if members.any() else float("nan")
    gendered = [(i, f) for i, f in detected if i.gender in ("female", "male")]
    if gendered:
        weights, info = natural_mix_weights([i.age for i, _ in gendered], min_age)
        correct = np.array([(f.female >= 0.5) == (i.gender == "female") for i, f in gendered], np.float64)
        result["gender_adults"] = {"n": int((weights > 0).sum()), "covered": info["covered"],
                                   "accuracy": float(np.average(correct, weights=weights))}
    return result


def evaluate_detection(analyzers: dict[str, Analyzer], suite: Suite, plots: Path) -> dict:
    result = {}
    for name, (csv_path, image_root, limit) in suite.detection.items():
        boxes = read_boxes_csv(csv_path, image_root)
        files = subsample(sorted(boxes), limit)
        result[name] = {"images": len(files), "faces": sum(1 for f in files for _, ig in boxes[f] if not ig),
                        "detectors": {}}
        for detector, analyzer in analyzers.items():
            totals = {0.5: [0, 0, 0], 0.3: [0, 0, 0]}
            for path in tqdm(files, desc=f"detection {name} {detector}", unit="img"):
                found = analyzer.detect_boxes(path) or []
                truth = [b for b, _ in boxes[path]]
                ignore = [ig for _, ig in boxes[path]]
                for min_iou, total in totals.items():
                    m = ev.match_detections(found, truth, ignore, min_iou)
                    total[0] += m["tp"]
                    total[1] += m["fp"]
                    total[2] += m["fn"]
            analyzer.save()
            result[name]["detectors"][detector] = {
                "iou_0.5": ev.precision_recall(*totals[0.5]), "iou_0.3": ev.precision_recall(*totals[0.3]),
                "min_face": analyzer.cfg.detector.min_face}
    return result


def one_face_recall(analyzer: Analyzer, items: list[LabelledImage], desc: str) -> dict:
    """One-face-per-image labels: found = a detection covers the image centre (LFW, padded chips)."""
    found = 0
    extra = 0
    for item in tqdm(items, desc=desc, unit="img"):
        faces = analyzer.faces(item.path, item.pad) or []
        w, h = image_size(item.path)
        hit = any(f.box[0] <= w / 2 <= f.box[0] + f.box[2] and f.box[1] <= h / 2 <= f.box[1] + f.box[3]
                  for f in faces)
        found += hit
        extra += max(0, len(faces) - int(hit))
    return {"images": len(items), "recall": found / len(items) if items else float("nan"),
            "other_detections": extra}


def attribute_predictions(analyzer: Analyzer, items: list[LabelledImage], desc: str):
    """(item, face or None) for every labelled photo."""
    out = []
    for item in tqdm(items, desc=desc, unit="img"):
        faces = analyzer.faces(item.path, item.pad)
        w, h = image_size(item.path)
        out.append((item, central_face(faces, w, h)))
    analyzer.save()
    return out


def age_gender_metrics(pairs) -> dict:
    detected = [(i, f) for i, f in pairs if f is not None]
    result = {"images": len(pairs), "faces_found": len(detected)}
    gendered = [(i, f) for i, f in detected if i.gender in ("female", "male")]
    if gendered:
        truth = [i.gender for i, _ in gendered]
        pred = ["female" if f.female >= 0.5 else "male" for _, f in gendered]
        result["gender"] = ev.classification_report(truth, pred, ["female", "male"])
        adults = [(i, f) for i, f in gendered if i.age is not None and i.age >= ADULT_AGE]
        if adults:
            result["gender_adults"] = ev.classification_report(
                [i.gender for i, _ in adults], ["female" if f.female >= 0.5 else "male" for _, f in adults],
                ["female", "male"])
    aged = [(i, f) for i, f in detected if i.age is not None]
    if aged:
        truth = np.array([i.age for i, _ in aged])
        pred = np.array([f.age for _, f in aged])
        result["age"] = ev.regression_errors(truth, pred)
        result["age_adults"] = ev.regression_errors(truth[truth >= ADULT_AGE], pred[truth >= ADULT_AGE])
        # UTKFace's sample is flat over ages up to 90, so "adults" leans on the old; 18-59 is a door camera's crowd.
        working = (truth >= ADULT_AGE) & (truth < 60)
        result["age_18_59"] = ev.regression_errors(truth[working], pred[working])
        result["age_bands"] = ev.errors_by_band(truth, pred, AGE_BANDS[:-1] + [np.inf])
    return result


def evaluate_attributes(analyzer: Analyzer, suite: Suite, plots: Path) -> dict:
    result = {}
    for name, items in suite.attributes.items():
        pairs = attribute_predictions(analyzer, items, f"attributes {name}")
        result[name] = age_gender_metrics(pairs)
        if name in suite.utkface_sets:
            result[name]["natural_mix"] = natural_mix_metrics(pairs)
        result[name]["one_face_recall"] = one_face_recall(analyzer, items, f"recall {name}")
        aged = [(i.age, f.age) for i, f in pairs if f is not None and i.age is not None]
        if aged and plots:
            plot_age(np.array(aged), plot_path(plots, f"age_{name}.png"), name)
    return result


def pair_distances(analyzer: Analyzer, pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Distance (the embedding model's metric) per pair of the central faces; inf when either photo has no face."""
    distances, same, folds = [], [], []
    missing = 0
    metric = analyzer.cfg.identity.metric
    for a, b, is_same, fold in tqdm(pairs, desc="verification pairs", unit="pair"):
        fa = central_face(analyzer.faces(a), *image_size(a))
        fb = central_face(analyzer.faces(b), *image_size(b))
        if fa is None or fb is None:
            missing += 1
            distances.append(np.inf)
        else:
            distances.append(float(embedding_distances(fa.embedding[None], fb.embedding[None], metric)[0]))
        same.append(is_same)
        folds.append(fold)
    analyzer.save()
    return np.array(distances), np.array(same, bool), np.array(folds), missing


def evaluate_verification(analyzer: Analyzer, suite: Suite, plots: Path) -> dict:
    result = {}
    threshold = analyzer.cfg.identity.threshold
    for name, pairs in suite.pairs.items():
        d, same, folds, missing = pair_distances(analyzer, pairs)
        roc = ev.roc_curve(d, same)
        entry = {"pairs": len(pairs), "same": int(same.sum()), "different": int((~same).sum()),
                 "pairs_without_face": missing, "at_threshold": ev.verification_at(d, same, threshold),
                 "at_threshold_faces_found": ev.verification_at(d[np.isfinite(d)], same[np.isfinite(d)], threshold),
                 "auc_faces_found": ev.roc_curve(d[np.isfinite(d)], same[np.isfinite(d)]).auc,
                 "auc": roc.auc, "tar_at_far": [ev.tar_at_far(roc, far) for far in (0.001, 0.01)],
                 "f1_optimal": ev.f1_optimal_threshold(d, same),
                 "best_accuracy": ev.best_accuracy_threshold(d, same)}
        # Threshold chosen on the other folds, accuracy measured on the held-out one (LFW protocol).
        if len(set(folds.tolist())) > 1:
            held = []
            for fold in sorted(set(folds.tolist())):
                train = folds != fold
                t = ev.best_accuracy_threshold(d[train], same[train])["threshold"]
                held.append(ev.verification_at(d[~train], same[~train], t)["accuracy"])
            entry["cross_fold_accuracy"] = {"mean": float(np.mean(held)), "per_fold": held}
        result[name] = entry
        if plots:
            plot_roc(roc, plot_path(plots, f"roc_{name}.png"), name)
            ev.plot_distance_histograms(d, same, threshold, plot_path(plots, f"distances_{name}.png"), f"{name} pairs")
    return result


def openset_splits(items: list[LabelledImage], max_splits: int, seed: int = 0):
    """(gallery items, probe items) splits: half the people enrolled with one photo each, their
    other photos and every photo of the other half probed. People enrolled and enrolment photo rotate."""
    people = sorted({i.identity for i in items})
    photos = {p: [i for i in items if i.identity == p] for p in people}
    half = len(people) // 2
    rng = np.random.default_rng(seed)
    if len(people) <= 12:      # few people: every way of choosing the enrolled half, or a sample of them
        combos = list(itertools.combinations(people, half))
        if len(combos) > max_splits:
            combos = [combos[i] for i in rng.choice(len(combos), max_splits, replace=False)]
    else:                       # many people: random halves (enumerating them would never end)
        combos = [tuple(rng.choice(people, half, replace=False)) for _ in range(max_splits)]
    for k, enrolled in enumerate(combos):
        gallery = [photos[p][k % len(photos[p])] for p in enrolled]
        chosen = {id(g) for g in gallery}
        probes = [i for i in items if id(i) not in chosen]
        yield gallery, probes


def evaluate_openset(analyzer: Analyzer, suite: Suite, plots: Path) -> dict:
    result = {}
    threshold, metric = analyzer.cfg.identity.threshold, analyzer.cfg.identity.metric
    for name, items in suite.people.items():
        embedded = []
        for item in tqdm(items, desc=f"open set {name}", unit="img"):
            faces = analyzer.faces(item.path, item.pad)
            if faces is None:
                continue
            w, h = image_size(item.path)
            face = central_face(faces, w, h) if name.startswith("lfw") else largest_face(faces)
            embedded.append((item, face))
        analyzer.save()
        usable = [(i, f) for i, f in embedded if f is not None]
        splits, known_best, known_correct, stranger_best = [], [], [], []
        vec = {id(i): f.embedding for i, f in usable}
        for gallery, probes in openset_splits([i for i, _ in usable], 20 if name == "people" else 10):
            probe_vectors = np.stack([vec[id(p)] for p in probes])
            gallery_vectors = np.stack([vec[id(g)] for g in gallery])
            splits.append(ev.open_set_identification(probe_vectors, [p.identity for p in probes], gallery_vectors,
                                                     [g.identity for g in gallery], threshold, metric))
            d = embedding_table(probe_vectors, gallery_vectors, metric)
            best, nearest = d.min(axis=1), d.argmin(axis=1)
            enrolled = {g.identity for g in gallery}
            known = np.array([p.identity in enrolled for p in probes])
            correct = np.array([gallery[j].identity == p.identity for j, p in zip(nearest, probes)])
            known_best.append(best[known])
            known_correct.append(correct[known])
            stranger_best.append(best[~known])
        # The threshold that would hold stranger false accepts to 1% with this gallery size.
        strangers = np.sort(np.concatenate(stranger_best))
        t1 = float(strangers[int(0.01 * len(strangers))]) if len(strangers) else float("nan")
        kb, kc = np.concatenate(known_best), np.concatenate(known_correct)
        keys = ("rank1", "rank1_closed_set", "false_reject", "stranger_false_accept")
        result[name] = {"people": len({i.identity for i in items}), "photos": len(items),
                        "photos_without_face": len(embedded) - len(usable) + len(items) - len(embedded),
                        "splits": len(splits), "gallery_size": len({i.identity for i in items}) // 2,
                        "threshold_for_1pct_stranger_fa": t1,
                        "rank1_at_that_threshold": float(np.mean(kc & (kb < t1))) if len(kb) else float("nan"),
                        "enrolled_probes": int(sum(s["enrolled_probes"] for s in splits)),
                        "stranger_probes": int(sum(s["stranger_probes"] for s in splits)),
                        **{k: float(np.average([s[k] for s in splits],
                                               weights=[s["enrolled_probes" if k != "stranger_false_accept"
                                                          else "stranger_probes"] for s in splits]))
                           for k in keys}}
    return result
