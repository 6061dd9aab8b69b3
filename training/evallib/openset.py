"""Open-set identification as the gallery grows: stranger false accepts and correct naming for galleries of
G enrolled people, per embedding model and decision rule; thresholds either the model's default or chosen
for a target false-accept rate on other splits than the ones measured.

Protocol (as the `openset` section of the evaluation): people with at least two photos; G of them enrolled,
the others are strangers. Enrolled probes are the enrolled people's photos not used for enrolment, stranger
probes every photo of the others. Splits draw the G people and the enrolment photos at random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Decision rules compared: (name, photos enrolled per person, how a person's distance is taken, margin rule).
RULES = (
    ("nearest", 1, "photo", False),            # what the daemon does today
    ("margin", 1, "photo", True),              # ... and the nearest person must beat the second by a margin
    ("photos3_nearest", 3, "photo", False),    # up to 3 photos per person (one always left to probe)
    ("photos3_centroid", 3, "centroid", False),
    ("photos3_margin", 3, "photo", True),
)
# Margins tried, as shares of the model's default threshold (distances of different models differ in scale);
# the one kept is chosen on the calibration splits.
MARGIN_SHARES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


@dataclass(frozen=True)
class Embedded:
    """One embedding per usable photo, and how the model compares them."""
    people: np.ndarray        # (N,) person of each photo
    vectors: np.ndarray       # (N, D)
    metric: str               # "l2" | "cosine"


def distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """(len(a), len(b)) distances: L2, or cosine distance 1 - cos (the reid model's metric)."""
    if metric == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return 1.0 - a @ b.T
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def splits(people: np.ndarray, gallery_size: int, photos_per_person: int, count: int, seed: int):
    """(gallery indices, gallery person of each, probe indices) per split. Eligible: people with >= 2 photos;
    each enrolled person gives min(photos_per_person, photos - 1) photos, so at least one is left to probe."""
    rng = np.random.default_rng(seed)
    by_person: dict[str, np.ndarray] = {}
    for name in np.unique(people):
        by_person[name] = np.flatnonzero(people == name)
    eligible = sorted(p for p, idx in by_person.items() if len(idx) >= 2)
    if gallery_size >= len(eligible):
        raise ValueError(f"gallery of {gallery_size} needs more than {len(eligible)} people with 2+ photos")
    for _ in range(count):
        enrolled = rng.choice(eligible, gallery_size, replace=False)
        gallery, owners, probes = [], [], []
        for person in eligible:
            photos = by_person[person]
            if person in enrolled:
                chosen = rng.choice(photos, min(photos_per_person, len(photos) - 1), replace=False)
                gallery += chosen.tolist()
                owners += [person] * len(chosen)
                probes += [i for i in photos if i not in chosen]
            else:
                probes += photos.tolist()
        yield np.array(gallery), np.array(owners, dtype=object), np.array(probes)


@dataclass
class Scores:
    """Per probe, pooled over splits: nearest and second-nearest *person* distance, and the truth."""
    nearest: np.ndarray       # distance to the nearest enrolled person
    second: np.ndarray        # distance to the second-nearest enrolled person
    correct: np.ndarray       # the nearest person is the probe's own
    known: np.ndarray         # the probe's person is enrolled (False: a stranger)

    def decide(self, threshold: float, margin: float = 0.0) -> np.ndarray:
        return (self.nearest < threshold) & (self.second - self.nearest >= margin)

    def rates(self, threshold: float, margin: float = 0.0) -> dict:
        accept = self.decide(threshold, margin)
        known, strangers = self.known, ~self.known
        return {"threshold": float(threshold), "margin": float(margin),
                "stranger_false_accept": float(accept[strangers].mean()),
                "correct_naming": float((accept & self.correct)[known].mean()),
                "wrong_naming": float((accept & ~self.correct)[known].mean()),
                "enrolled_probes": int(known.sum()), "stranger_probes": int(strangers.sum())}

    def threshold_for_far(self, target: float, margin: float = 0.0) -> float:
        """Most permissive threshold whose stranger false-accept rate here is <= target."""
        passing = np.sort(self.nearest[~self.known & (self.second - self.nearest >= margin)])
        allowed = int(np.floor(target * int((~self.known).sum())))
        if allowed >= len(passing):
            return float("inf")
        return float(passing[allowed])       # strictly below it: exactly `allowed` strangers accepted


def score(embedded: Embedded, gallery_size: int, photos_per_person: int, person_distance: str, count: int,
          seed: int) -> Scores:
    rows = []
    for gallery, owners, probes in splits(embedded.people, gallery_size, photos_per_person, count, seed):
        d = distances(embedded.vectors[probes], embedded.vectors[gallery], embedded.metric)
        names = np.unique(owners)
        if person_distance == "centroid":
            centroids = np.stack([embedded.vectors[gallery[owners == n]].mean(axis=0) for n in names])
            per_person = distances(embedded.vectors[probes], centroids, embedded.metric)
        else:   # the person's nearest enrolled photo
            per_person = np.stack([d[:, owners == n].min(axis=1) for n in names], axis=1)
        order = np.argsort(per_person, axis=1)[:, :2]
        take = np.arange(len(probes))
        truth = embedded.people[probes]
        rows.append((per_person[take, order[:, 0]], per_person[take, order[:, 1]], names[order[:, 0]] == truth,
                     np.isin(truth, names)))
    return Scores(*(np.concatenate(parts) for parts in zip(*rows)))


def evaluate_rule(embedded: Embedded, gallery_size: int, rule: tuple, default_threshold: float,
                  far_targets: tuple[float, ...], splits_count: int) -> dict:
    """One rule at one gallery size: at the default threshold, and at thresholds (and margin) chosen for each
    target FAR on calibration splits (seeds apart from the measured ones)."""
    name, photos, person_distance, uses_margin = rule
    test = score(embedded, gallery_size, photos, person_distance, splits_count, seed=gallery_size)
    calibration = score(embedded, gallery_size, photos, person_distance, splits_count, seed=10_000 + gallery_size)
    margins = [share * default_threshold for share in MARGIN_SHARES] if uses_margin else [0.0]
    default_margin = margins[2] if uses_margin else 0.0
    result = {"rule": name, "photos_per_person": photos, "person_distance": person_distance,
              "splits": splits_count, "at_default": test.rates(default_threshold, default_margin), "at_far": []}
    for target in far_targets:
        # Per margin: the threshold meeting the target on calibration splits; keep the margin naming most there.
        options = []
        for margin in margins:
            t = calibration.threshold_for_far(target, margin)
            options.append((calibration.rates(t, margin)["correct_naming"], margin, t))
        _, margin, t = max(options, key=lambda o: (o[0], -o[1]))
        measured = test.rates(t, margin)
        result["at_far"].append({"far_target": target, **measured,
                                 "resolvable": measured["stranger_probes"] * target >= 10})
    return result
