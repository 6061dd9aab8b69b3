"""Accuracy metrics for the evaluation harness and threshold calibration; plain numpy, no I/O.

Verification convention (as in identify.py): a pair is called "same person" when its L2 distance
is strictly below the threshold. Thresholds returned here sit half-way between observed distances,
so a measured point never depends on which side of a tie a distance falls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .identify import distances as table_distances, pair_distances as row_distances
from .track import iou


# --- classification -----------------------------------------------------------------------------
def confusion_matrix(truth, predicted, labels) -> np.ndarray:
    """Rows = true label, columns = predicted label, in the order of `labels`."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), np.int64)
    for t, p in zip(truth, predicted):
        matrix[index[t], index[p]] += 1
    return matrix


def classification_report(truth, predicted, labels) -> dict:
    """Accuracy, per-class recall and the confusion matrix (as nested lists, JSON-ready)."""
    matrix = confusion_matrix(truth, predicted, labels)
    total = int(matrix.sum())
    rows = matrix.sum(axis=1)
    return {
        "n": total,
        "accuracy": float(np.trace(matrix) / total) if total else float("nan"),
        "recall": {str(label): (float(matrix[i, i] / rows[i]) if rows[i] else float("nan"))
                   for i, label in enumerate(labels)},
        "labels": [str(label) for label in labels],
        "confusion": matrix.tolist(),
    }


# --- regression ----------------------------------------------------------------------------------
def regression_errors(truth, predicted) -> dict:
    """MAE, RMSE and mean signed error (predicted - truth), in the units of the inputs."""
    t = np.asarray(truth, np.float64)
    p = np.asarray(predicted, np.float64)
    if t.size == 0:
        return {"n": 0, "mae": float("nan"), "rmse": float("nan"), "bias": float("nan")}
    error = p - t
    return {"n": int(t.size), "mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error ** 2))),
            "bias": float(np.mean(error))}


def errors_by_band(truth, predicted, edges) -> list[dict]:
    """`regression_errors` per band [edges[i], edges[i+1]) of the true value."""
    t = np.asarray(truth, np.float64)
    p = np.asarray(predicted, np.float64)
    bands = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (t >= low) & (t < high)
        bands.append({"band": f"{low:g}-{high - 1:g}" if np.isfinite(high) else f"{low:g}+",
                      **regression_errors(t[inside], p[inside])})
    return bands


# --- verification (distances, same/different) -----------------------------------------------------
@dataclass(frozen=True)
class Roc:
    """One point per distinct distance: accept every pair with distance < threshold[i]."""
    threshold: np.ndarray
    far: np.ndarray       # false accept rate: different-person pairs accepted / all different pairs
    tar: np.ndarray       # true accept rate: same-person pairs accepted / all same pairs
    positives: int
    negatives: int

    @property
    def auc(self) -> float:
        return float(np.trapezoid(self.tar, self.far))


def roc_curve(distances, same) -> Roc:
    """ROC of the rule `same iff distance < threshold`; an infinite distance (no face) is never accepted."""
    d = np.asarray(distances, np.float64)
    y = np.asarray(same, bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("a ROC needs both same-person and different-person pairs")
    order = np.argsort(d, kind="stable")
    d, y = d[order], y[order]
    finite = np.isfinite(d)
    values = np.unique(d[finite])
    # Pairs with distance <= value, per distinct value.
    upto = np.searchsorted(d, values, side="right")
    cum_same = np.concatenate([[0], np.cumsum(y)])
    tp = cum_same[upto]
    fp = upto - tp
    nxt = np.append(values[1:], values[-1] + 1e-3 if values.size else 0.0)
    thresholds = (values + nxt) / 2.0
    lowest = values[0] - 1e-3 if values.size else 0.0
    threshold = np.concatenate([[lowest], thresholds])
    far = np.concatenate([[0.0], fp / negatives])
    tar = np.concatenate([[0.0], tp / positives])
    if far[-1] < 1.0:      # pairs with no face are never accepted; close the curve at (1, tar_max)
        threshold = np.append(threshold, np.inf)
        far = np.append(far, 1.0)
        tar = np.append(tar, tar[-1])
    return Roc(threshold, far, tar, positives, negatives)


def tar_at_far(roc: Roc, far_target: float) -> dict:
    """Best TAR with FAR <= target, the threshold giving it, and whether the target is resolvable
    (fewer than 1/target different-person pairs cannot measure it)."""
    ok = roc.far <= far_target + 1e-12
    i = int(np.flatnonzero(ok)[np.argmax(roc.tar[ok])])
    return {"far_target": far_target, "tar": float(roc.tar[i]), "far": float(roc.far[i]),
            "threshold": float(roc.threshold[i]), "resolvable": roc.negatives * far_target >= 1.0}


def verification_at(distances, same, threshold: float) -> dict:
    """Accuracy, TAR and FAR of `same iff distance < threshold`."""
    d = np.asarray(distances, np.float64)
    y = np.asarray(same, bool)
    accepted = d < threshold
    return {"threshold": float(threshold), "n": int(d.size), "accuracy": float(np.mean(accepted == y)),
            "tar": float(np.mean(accepted[y])) if y.any() else float("nan"),
            "far": float(np.mean(accepted[~y])) if (~y).any() else float("nan")}


def f1_optimal_threshold(distances, same) -> dict:
    """Threshold maximising F1 of the "same person" class (ties: the smallest such threshold)."""
    roc = roc_curve(distances, same)
    tp = roc.tar * roc.positives
    fp = roc.far * roc.negatives
    fn = roc.positives - tp
    f1 = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12), 0.0)
    finite = np.isfinite(roc.threshold)
    i = int(np.flatnonzero(finite)[np.argmax(f1[finite])])
    return {"threshold": float(roc.threshold[i]), "f1": float(f1[i]), "tar": float(roc.tar[i]),
            "far": float(roc.far[i])}


def threshold_for_far(distances, same, far_target: float) -> dict:
    """Largest threshold whose FAR is <= target (the most permissive one meeting it)."""
    roc = roc_curve(distances, same)
    ok = np.flatnonzero((roc.far <= far_target + 1e-12) & np.isfinite(roc.threshold))
    i = int(ok[-1])
    return {"threshold": float(roc.threshold[i]), "tar": float(roc.tar[i]), "far": float(roc.far[i]),
            "far_target": far_target}


def best_accuracy_threshold(distances, same) -> dict:
    roc = roc_curve(distances, same)
    accuracy = (roc.tar * roc.positives + (1 - roc.far) * roc.negatives) / (roc.positives + roc.negatives)
    finite = np.isfinite(roc.threshold)
    i = int(np.flatnonzero(finite)[np.argmax(accuracy[finite])])
    return {"threshold": float(roc.threshold[i]), "accuracy": float(accuracy[i])}


# --- open-set identification ------------------------------------------------------------------------
def open_set_identification(probes: np.ndarray, probe_names, gallery_vectors: np.ndarray, gallery_names,
                            threshold: float, metric: str = "l2") -> dict:
    """Probes of enrolled people: rank-1 = nearest gallery row is theirs *and* below threshold
    (closed-set rank-1 ignores the threshold). Probes of strangers: false accept = nearest row below it."""
    gallery_names = np.asarray(gallery_names, dtype=object)
    enrolled = set(gallery_names.tolist())
    distances = table_distances(probes, np.asarray(gallery_vectors, np.float32), metric)
    nearest = distances.argmin(axis=1)
    best = distances[np.arange(len(probes)), nearest]
    names = gallery_names[nearest]
    known = np.array([n in enrolled for n in probe_names], bool)
    truth = np.asarray(probe_names, dtype=object)
    correct = names == truth
    return {
        "threshold": float(threshold),
        "enrolled_probes": int(known.sum()),
        "stranger_probes": int((~known).sum()),
        "rank1": float(np.mean(correct[known] & (best[known] < threshold))) if known.any() else float("nan"),
        "rank1_closed_set": float(np.mean(correct[known])) if known.any() else float("nan"),
        "false_reject": float(np.mean(best[known] >= threshold)) if known.any() else float("nan"),
        "stranger_false_accept": float(np.mean(best[~known] < threshold)) if (~known).any() else float("nan"),
    }


# --- detection -----------------------------------------------------------------------------------
box_iou = iou     # (x, y, w, h) boxes, the tracker's own


def match_detections(detected, truth, ignore=None, min_iou: float = 0.5) -> dict:
    """Greedy one-to-one matching by IoU (highest first). A detection matching an ignored truth box
    counts neither way; an ignored box left unmatched is not a miss."""
    ignore = list(ignore) if ignore is not None else [False] * len(truth)
    pairs = sorted(((box_iou(d, t), i, j) for i, d in enumerate(detected) for j, t in enumerate(truth)),
                   reverse=True)
    used_d, used_t = set(), set()
    tp = ignored = 0
    for value, i, j in pairs:
        if value < min_iou:
            break
        if i in used_d or j in used_t:
            continue
        used_d.add(i)
        used_t.add(j)
        if ignore[j]:
            ignored += 1
        else:
            tp += 1
    fp = len(detected) - tp - ignored
    fn = sum(1 for j in range(len(truth)) if not ignore[j] and j not in used_t)
    return {"tp": tp, "fp": fp, "fn": fn}


def precision_recall(tp: int, fp: int, fn: int) -> dict:
    return {"tp": tp, "fp": fp, "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan")}


# --- threshold calibration ----------------------------------------------------------------------------
def labelled_pair_distances(names, vectors: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Distance and same-person flag of every pair of labelled embeddings; pairs of one photo with itself
    (the same photo enrolled and in a folder) say nothing and are left out."""
    names = np.asarray(names, dtype=object)
    rows, cols = np.triu_indices(len(names), k=1)
    d = row_distances(vectors[rows], vectors[cols], metric)
    same = names[rows] == names[cols]
    keep = d > 1e-6
    return d[keep], same[keep].astype(bool)


def calibration_yaml(result: dict, model: str, written_by: str) -> str:
    """The file identity.calibration_file reads: the threshold and the embedding model it holds for."""
    import yaml
    at = result["at_threshold"]
    return (f"# Written by {written_by} ({result['method']}): {result['same_pairs']} same-person and "
            f"{result['different_pairs']} different-person pairs, TAR {at['tar']:.3f}, FAR {at['far']:.4f}.\n"
            + yaml.safe_dump({"identity": {"threshold": result["threshold"], "model": model}}))


def calibrate_threshold(distances, same, target_far: float | None = None) -> dict:
    """The identity threshold from same/different distance distributions: F1-maximising, or the most
    permissive one whose false accept rate is <= target_far."""
    d = np.asarray(distances, np.float64)
    y = np.asarray(same, bool)
    chosen = threshold_for_far(d, y, target_far) if target_far is not None else f1_optimal_threshold(d, y)
    roc = roc_curve(d, y)
    return {"method": f"far<={target_far:g}" if target_far is not None else "f1",
            "threshold": round(chosen["threshold"], 4), "same_pairs": roc.positives,
            "different_pairs": roc.negatives, "auc": roc.auc,
            "at_threshold": verification_at(d, y, chosen["threshold"]),
            "f1": f1_optimal_threshold(d, y)["f1"]}


def plot_distance_histograms(distances, same, threshold: float, path, title: str) -> None:
    """Both distance histograms and the threshold as a PNG (matplotlib, imported only here)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.asarray(distances, np.float64)
    y = np.asarray(same, bool)
    finite = np.isfinite(d)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, max(1.2, float(d[finite].max()) if finite.any() else 1.2), 50)
    ax.hist(d[finite & y], bins, alpha=0.6, label=f"same person ({int((finite & y).sum())})")
    ax.hist(d[finite & ~y], bins, alpha=0.6, label=f"different people ({int((finite & ~y).sum())})")
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("L2 distance between embeddings")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
