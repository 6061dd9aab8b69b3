"""Accuracy tooling: metric code on hand-checked cases, `edge compare` / `edge calibrate` on real photos,
bulk enrollment, and one run of `python -m training.evaluate` on a small real subset of the shared datasets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DEMO_GALLERY, ROOT, require_module, run_edge
from edge import evaluation as ev
from edge.config import load_config

COLLINS = DEMO_GALLERY / "eileen_collins.jpg"


def astronaut_photo(folder: Path) -> Path:
    skimage_data = require_module("skimage.data", "scikit-image", "its astronaut sample photo")
    path = folder / "astronaut.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


# --- metrics, checked by hand ----------------------------------------------------------------------
def test_confusion_matrix_and_recall():
    truth = ["female", "female", "female", "male", "male"]
    predicted = ["female", "male", "female", "male", "female"]
    report = ev.classification_report(truth, predicted, ["female", "male"])
    assert report["confusion"] == [[2, 1], [1, 1]]
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["recall"] == {"female": pytest.approx(2 / 3), "male": pytest.approx(1 / 2)}


def test_mae_rmse_and_bands():
    errors = ev.regression_errors([20, 30, 40, 50], [22, 27, 40, 54])     # errors +2 -3 0 +4
    assert errors["mae"] == pytest.approx(9 / 4)
    assert errors["rmse"] == pytest.approx(np.sqrt((4 + 9 + 0 + 16) / 4))
    assert errors["bias"] == pytest.approx(3 / 4)
    bands = ev.errors_by_band([10, 20, 30, 50], [12, 20, 36, 40], [0, 18, 45, np.inf])
    assert [b["n"] for b in bands] == [1, 2, 1]
    assert [b["mae"] for b in bands] == pytest.approx([2, 3, 10])
    assert bands[-1]["band"] == "45+"


def test_natural_age_mix_weighting_by_hand():
    """Adults re-weighted to UTKFace's age histogram: a photo counts (natural share of its band) / (sample share
    of its band). Adult natural counts: 18-20 = 3/10 of 11-20's 1530 = 459; 21-30 7344; 61-70 1316; all adult
    bands (18-116) 459 + 7344 + 4536 + 2244 + 2298 + 1316 + 699 + 504 + 137 + 32 = 19569."""
    from types import SimpleNamespace as Item

    from training.evallib.sections import natural_mix_metrics, natural_mix_weights, weighted_regression_errors
    ages = np.array([17, 19, 25, 25, 65])
    errors = np.array([30, 4, 2, -2, -10])          # the 17-year-old is no adult: it must weigh nothing
    weights, info = natural_mix_weights(ages)
    # Sample shares among the 4 adults: 18-20 1/4, 21-30 2/4, 61-70 1/4.
    assert weights == pytest.approx([0, 459 / 19569 * 4, 7344 / 19569 * 2, 7344 / 19569 * 2, 1316 / 19569 * 4])
    assert info["covered"] == pytest.approx((459 + 7344 + 1316) / 19569)
    mix = weighted_regression_errors(ages, ages + errors, weights)
    # = each band's mean error weighted by its natural count, over the bands the sample has.
    assert mix["mae"] == pytest.approx((459 * 4 + 7344 * 2 + 1316 * 10) / 9119)       # 3.26
    assert mix["bias"] == pytest.approx((459 * 4 + 7344 * 0 - 1316 * 10) / 9119)      # -1.24
    assert mix["n"] == 4
    flat = ev.regression_errors(ages[1:], ages[1:] + errors[1:])
    assert flat["mae"] == pytest.approx(4.5) and mix["mae"] < flat["mae"]
    # The same through the report's metrics, with gender: 19 right, 25 right, 25 wrong, 65 wrong; 17 ignored.
    pairs = [(Item(age=float(a), gender=g), Item(age=float(a + e), female=p))
             for a, e, g, p in zip(ages, errors, ["male", "female", "female", "male", "female"],
                                   [0.9, 0.8, 0.7, 0.6, 0.1])]
    pairs.append((Item(age=40.0, gender="male"), None))            # no face found: in neither figure
    result = natural_mix_metrics(pairs)
    assert result["age_adults"]["mae"] == pytest.approx(29684 / 9119)
    assert result["gender_adults"]["accuracy"] == pytest.approx((459 * 1 + 7344 * 0.5 + 1316 * 0) / 9119)
    assert [b["sample"] for b in result["bands"]][:2] == [1, 2] and result["bands"][0]["band"] == "18-20"
    assert "3/10" in result["cut_band"]

def test_roc_point_and_auc():
    # same-person distances 0.1 0.2 0.4, different 0.3 0.5
    d, same = [0.1, 0.2, 0.3, 0.4, 0.5], [1, 1, 0, 1, 0]
    roc = ev.roc_curve(d, same)
    at = ev.verification_at(d, same, 0.35)             # accepts 0.1 0.2 0.3
    assert (at["tar"], at["far"], at["accuracy"]) == pytest.approx((2 / 3, 1 / 2, 3 / 5))
    points = set(zip(np.round(roc.far, 6), np.round(roc.tar, 6)))
    assert (0.5, round(2 / 3, 6)) in points
    assert roc.auc == pytest.approx(5 / 6)             # P(same distance < different distance) = 5 of 6 pairs
    assert ev.tar_at_far(roc, 0.0)["tar"] == pytest.approx(2 / 3)
    assert ev.tar_at_far(roc, 0.0)["threshold"] == pytest.approx(0.25)
    assert ev.threshold_for_far(d, same, 0.5)["threshold"] == pytest.approx(0.45)


def test_pairs_without_a_face_are_never_accepted():
    roc = ev.roc_curve([0.1, np.inf, 0.9], [1, 1, 0])
    assert roc.tar.max() == pytest.approx(0.5)
    assert ev.verification_at([0.1, np.inf, 0.9], [1, 1, 0], 0.6)["accuracy"] == pytest.approx(2 / 3)


def test_f1_optimal_threshold():
    assert ev.f1_optimal_threshold([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0])["threshold"] == pytest.approx(0.25)
    # accepting <= 0.4 gives tp 3, fp 1, fn 0: F1 6/7, better than <= 0.2 (tp 2, fn 1: F1 4/5)
    best = ev.f1_optimal_threshold([0.1, 0.2, 0.3, 0.4, 0.5], [1, 1, 0, 1, 0])
    assert best["threshold"] == pytest.approx(0.45)
    assert best["f1"] == pytest.approx(6 / 7)
    assert ev.calibrate_threshold([0.1, 0.2, 0.3, 0.4, 0.5], [1, 1, 0, 1, 0])["threshold"] == pytest.approx(0.45)


def test_detection_matching():
    truth = [(0, 0, 10, 10), (100, 100, 10, 10), (200, 200, 10, 10)]
    found = [(1, 1, 10, 10), (300, 300, 10, 10), (201, 200, 10, 10)]
    m = ev.match_detections(found, truth, ignore=[False, False, True])
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 1)        # the ignored box neither helps nor hurts
    assert ev.box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_open_set_identification():
    gallery = np.array([[0.0, 0.0], [1.0, 0.0]])
    probes = np.array([[0.1, 0.0], [0.9, 0.3], [0.4, 0.0], [3.0, 3.0], [1.2, 0.0]])
    result = ev.open_set_identification(probes, ["a", "b", "b", "stranger", "stranger"], gallery, ["a", "b"], 0.5)
    assert result["rank1"] == pytest.approx(2 / 3)           # 0.4 is nearer a than b
    assert result["rank1_closed_set"] == pytest.approx(2 / 3)
    assert result["stranger_false_accept"] == pytest.approx(1 / 2)   # (1.2, 0) is 0.2 from b


def test_open_set_threshold_for_a_target_far_counts_strangers_exactly():
    from training.evallib.openset import Scores
    nearest = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.05])
    known = np.array([False] * 10 + [True])
    scores = Scores(nearest, nearest + 1.0, np.ones(11, bool), known)
    t = scores.threshold_for_far(0.2, 0.0)          # 2 of the 10 strangers may be accepted
    assert t == pytest.approx(0.3)
    rates = scores.rates(t)
    assert rates["stranger_false_accept"] == pytest.approx(0.2) and rates["correct_naming"] == 1.0


def test_open_set_splits_leave_every_enrolled_person_a_probe_and_margin_rejects_the_ambiguous():
    from training.evallib.openset import Embedded, Scores, score, splits
    people = np.array(["a"] * 4 + ["b"] * 2 + ["c"] * 3 + ["d"] * 2 + ["e"], dtype=object)   # e: one photo only
    for gallery, owners, probes in splits(people, 2, 3, count=20, seed=1):
        assert set(gallery).isdisjoint(probes) and "e" not in set(people[probes])
        for person in set(owners):
            assert 1 <= (owners == person).sum() <= min(3, (people == person).sum() - 1)
            assert (people[probes] == person).any()
    # Four people far apart, two photos each a little apart: every enrolled probe named, no stranger.
    centres = np.array([[0.0, 0], [3, 0], [0, 3], [3, 3]])
    vectors = np.repeat(centres, 2, axis=0) + np.tile([[0, 0], [0.1, 0]], (4, 1))
    embedded = Embedded(np.repeat(np.array(["a", "b", "c", "d"], dtype=object), 2), vectors, "l2")
    clean = score(embedded, 2, 1, "photo", count=10, seed=0).rates(0.6)
    assert (clean["correct_naming"], clean["stranger_false_accept"], clean["wrong_naming"]) == (1.0, 0.0, 0.0)
    assert clean["enrolled_probes"] == 10 * 2 and clean["stranger_probes"] == 10 * 4
    # A stranger about as near two enrolled people is named by the nearest rule, not with a margin.
    ambiguous = Scores(np.array([0.40, 0.30]), np.array([0.42, 0.90]), np.array([False, True]), np.array([False, True]))
    assert ambiguous.rates(0.6)["stranger_false_accept"] == 1.0
    assert ambiguous.rates(0.6, margin=0.1)["stranger_false_accept"] == 0.0
    assert ambiguous.rates(0.6, margin=0.1)["correct_naming"] == 1.0


def test_averaging_windows_are_disjoint_and_nested():
    from training.evallib.averaging import windows
    assert windows(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5]]
    assert windows(list(range(20)), 10) == [list(range(10)), list(range(10, 20))]
    assert windows([0, 1], 5) == [[0, 1]]          # a short clip still gives one sample


# --- the CLI on real photos --------------------------------------------------------------------------
def test_compare_same_person(tmp_path):
    result = run_edge("compare", str(COLLINS), str(astronaut_photo(tmp_path)), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["same_person"] is True
    assert report["distance"] < report["threshold"] == load_config().identity.threshold   # the model in force
    assert report["similarity"] == pytest.approx(1 - report["distance"], abs=1e-3)


def test_compare_different_people(hopper_photo):
    result = run_edge("compare", str(COLLINS), str(hopper_photo))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("different people: distance")


def test_compare_photo_without_face(tmp_path):
    blank = tmp_path / "blank.jpg"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 127, np.uint8))
    result = run_edge("compare", str(COLLINS), str(blank))
    assert result.returncode == 4
    assert "no face found" in result.stderr


def test_calibrate_writes_a_threshold_the_config_reads(tmp_path, hopper_photo):
    people = tmp_path / "people"
    (people / "eileen_collins").mkdir(parents=True)
    (people / "grace_hopper").mkdir()
    astronaut = astronaut_photo(tmp_path)
    cv2.imwrite(str(people / "eileen_collins" / "a.jpg"), cv2.imread(str(astronaut)))
    cv2.imwrite(str(people / "eileen_collins" / "b.jpg"), cv2.imread(str(COLLINS)))
    hopper = cv2.imread(str(hopper_photo))
    cv2.imwrite(str(people / "grace_hopper" / "a.jpg"), hopper)
    cv2.imwrite(str(people / "grace_hopper" / "b.jpg"), cv2.resize(hopper, None, fx=0.7, fy=0.7)[:, ::-1])
    output, plot = tmp_path / "calibrated.yaml", tmp_path / "calibration.png"
    result = run_edge("calibrate", str(people), "--output", str(output), "--plot", str(plot), "--json",
                      "--set", f"store.path={tmp_path / 'empty.db'}")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["same_pairs"], report["different_pairs"]) == (2, 4)
    assert report["at_threshold"]["accuracy"] == 1.0
    assert plot.stat().st_size > 0
    cfg = load_config(None, [f"identity.calibration_file={output}"])
    assert cfg.identity.threshold == pytest.approx(report["threshold"])


def test_enroll_folder_uses_the_enroll_path(tmp_path, hopper_photo):
    people = tmp_path / "people"
    (people / "eileen_collins").mkdir(parents=True)
    (people / "_group_photos").mkdir()
    cv2.imwrite(str(people / "eileen_collins" / "a.jpg"), cv2.imread(str(COLLINS)))
    cv2.imwrite(str(people / "_group_photos" / "x.jpg"), cv2.imread(str(hopper_photo)))
    db = tmp_path / "edge.db"
    result = subprocess.run([sys.executable, "-m", "training.enroll_folder", str(people), "--set", f"store.path={db}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    listed = run_edge("identities", "list", "--json", "--set", f"store.path={db}")
    assert [r["name"] for r in json.loads(listed.stdout)] == ["eileen_collins"]


# --- the whole harness on a small real subset ---------------------------------------------------------
@pytest.mark.slow
def test_evaluate_harness_on_shared_subset(tmp_path, shared_datasets):
    result = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--quick", "--datasets", str(shared_datasets),
         "--out", str(tmp_path),
         "--cache", str(tmp_path / "cache"), "--sections", "detection,attributes,verification,openset,averaging"],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "accuracy.json").read_text())
    for detector in ("haar", "mtcnn"):
        recall = report["detection"]["detection_dlib"]["detectors"][detector]["iou_0.5"]["recall"]
        assert 0.0 <= recall <= 1.0
    assert report["attributes"]["utkface"]["gender"]["accuracy"] >= 0.5
    assert report["attributes"]["utkface"]["age"]["mae"] < 20
    utk = report["attributes"]["utkface"]
    mix = utk["natural_mix"]["age_adults"]          # the same adults, weighted to UTKFace's own age mix
    assert mix["n"] == utk["age_adults"]["n"] and mix["mae"] < 20
    assert "lfw" not in report["attributes"] or "natural_mix" not in report["attributes"]["lfw"]
    assert report["verification"]["lfw"]["auc"] > 0.8
    assert 0.0 <= report["openset"]["people"]["rank1"] <= 1.0
    curve = report["averaging"]["identity"]["curve"]
    assert [r["frames"] for r in curve] == [1, 3]
    assert curve[0]["samples"] == 3 * curve[1]["samples"]     # every 3-frame clip gives 3 one-frame windows
    assert 0.0 <= curve[1]["decided"] <= 1.0
    assert (tmp_path / "accuracy.md").read_text().startswith("# Accuracy")
    assert (tmp_path / "accuracy_roc_lfw.png").stat().st_size > 0
