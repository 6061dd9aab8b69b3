"""The evaluation report as Markdown, from the JSON-ready dict the sections return."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_report(folder: Path, stem: str, report: dict, text: str) -> None:
    """A script's result as `<stem>.json` (numpy numbers as floats) and `<stem>.md`, and the Markdown on stdout."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    (folder / f"{stem}.md").write_text(text)
    print(text)


def pct(x, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.{digits}f}%"


def band_mae(bands: list[dict]) -> float:
    """MAE over the sample photos of several natural-mix bands (each band's MAE weighted by its photos)."""
    n = sum(b["sample"] for b in bands)
    return sum(b["mae"] * b["sample"] for b in bands if b["sample"]) / n if n else float("nan")


def natural_mix_lines(attributes: dict) -> list[str]:
    """Adult age MAE and gender accuracy of the UTKFace sets, flat and weighted to UTKFace's natural age mix."""
    mixed = {name: r for name, r in attributes.items() if r.get("natural_mix", {}).get("age_adults")}
    if not mixed:
        return []
    lines = ["", "Adults (18+), the flat sample against the same predictions weighted to UTKFace's natural age mix:",
             "", "| set | adults with a face found | age MAE flat | age MAE natural mix | age bias flat | "
             "age bias natural mix | gender acc. flat | gender acc. natural mix |", "|---|---|---|---|---|---|---|---|"]
    for name, r in mixed.items():
        flat, mix = r["age_adults"], r["natural_mix"]
        lines.append(f"| {name} | {flat['n']} | {flat['mae']:.2f} | {mix['age_adults']['mae']:.2f} | "
                     f"{flat['bias']:+.2f} | {mix['age_adults']['bias']:+.2f} | "
                     f"{pct(r.get('gender_adults', {}).get('accuracy'))} | "
                     f"{pct(mix.get('gender_adults', {}).get('accuracy'))} |")
    for name, r in mixed.items():
        mix = r["natural_mix"]
        bands = mix["bands"]
        missing = [b for b in bands if not b["sample"]]
        cut = mix["cut_band"]
        old = [b for b in bands if int(b["band"].split("-")[0]) > 60]
        young = [b for b in bands if 21 <= int(b["band"].split("-")[0]) <= 31]
        lines += ["", f"Weights, {name}: each adult photo counts (natural share of its band) / (sample share of its "
                  f"band), both among adults; natural shares from {mix['source']}. {cut[0].upper() + cut[1:]}"
                  + (f"; bands with no photo in the sample ({', '.join(b['band'] for b in missing)}: "
                     f"{pct(1 - mix['covered'])} of UTKFace's adults) are left out, not guessed" if missing else "")
                  + ". Band: natural share / sample share (n), MAE there: " + "; ".join(
                      f"{b['band']}: {pct(b['natural_share'])} / {pct(b['sample_share'])} ({b['sample']}), "
                      + (f"MAE {b['mae']:.1f}" if b["sample"] else "-") for b in bands) + ".",
                  "", f"Why they differ, {name}: the sample is flat over ages, so "
                  f"{pct(sum(b['sample_share'] for b in old), 0)} of its adults are over 60 against "
                  f"{pct(sum(b['natural_share'] for b in old), 0)} of UTKFace's, and the model's age MAE is "
                  f"{band_mae(old):.1f} years there against {band_mae(young):.1f} at 21-40; the natural mix "
                  "weighs each age band as UTKFace has it."]
    return lines


def markdown(report: dict) -> str:
    lines = ["# Accuracy of the daemon's own pipeline", "",
             f"Produced by `python -m training.evaluate` on {report['date']} ({report['elapsed_s']:.0f} s). "
             "Config in force: "
             f"detector `{report['config']['detector']}`, identity.threshold {report['config']['threshold']}, "
             f"backend {report['config']['backend']}. Data: `{report['data']}`"
             + (" (--quick: a few photos per set, for the tests)" if report.get("quick") else "")
             + ("; every photo of each set except " + "; ".join(report["subsets"]) if report.get("subsets") else "")
             + ". Per-photo results come from the cache when present, so the time above may be a re-run's.", ""]
    if "detection" in report:
        lines += ["## Face detection", "",
                  "| set | images | faces | detector | min_face | recall (IoU>=0.5) | precision (IoU>=0.5) | "
                  "recall (IoU>=0.3) | precision (IoU>=0.3) |", "|---|---|---|---|---|---|---|---|---|"]
        for name, r in report["detection"].items():
            for det, m in r["detectors"].items():
                a, b = m["iou_0.5"], m["iou_0.3"]
                lines.append(f"| {name} | {r['images']} | {r['faces']} | {det} | {m['min_face']} | "
                             f"{pct(a['recall'])} | {pct(a['precision'])} | {pct(b['recall'])} | "
                             f"{pct(b['precision'])} |")
        lines += ["", "IoU 0.3 is shown too because box conventions differ (Haar boxes include more forehead "
                  "than dlib's or the mask set's boxes); `detection_masks` lacks boxes for some background faces, "
                  "so its precision reads low.", ""]
    if "attributes" in report:
        lines += ["## Gender and age", "",
                  "| set | photos | face found | gender acc. | female recall | male recall | gender acc. adults | "
                  "age MAE | age RMSE | age MAE adults | age RMSE adults |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in report["attributes"].items():
            g, ga = r.get("gender", {}), r.get("gender_adults", {})
            age, adults = r.get("age"), r.get("age_adults")
            lines.append(
                f"| {name} | {r['images']} | {pct(r['faces_found'] / max(1, r['images']))} | "
                f"{pct(g.get('accuracy'))} | {pct(g.get('recall', {}).get('female'))} | "
                f"{pct(g.get('recall', {}).get('male'))} | {pct(ga.get('accuracy'))} | "
                + (f"{age['mae']:.2f} | {age['rmse']:.2f} | {adults['mae']:.2f} | {adults['rmse']:.2f} |" if age
                   else "n/a | n/a | n/a | n/a |"))
        for name, r in report["attributes"].items():
            if "gender" in r:
                c = r["gender"]["confusion"]
                lines += ["", f"Gender confusion, {name} (rows true, columns predicted): female -> "
                          f"[{c[0][0]} female, {c[0][1]} male], male -> [{c[1][0]} female, {c[1][1]} male]."]
            if "age_bands" in r:
                lines += ["", f"Age error by band, {name}: 18-59 together MAE {r['age_18_59']['mae']:.2f} "
                          f"(n={r['age_18_59']['n']}); " + "; ".join(
                    f"{b['band']}: MAE {b['mae']:.1f}, bias {b['bias']:+.1f} (n={b['n']})"
                    for b in r["age_bands"] if b["n"])]
        lines += natural_mix_lines(report["attributes"])
        lines.append("")
    if "verification" in report:
        lines += ["## Identity verification (pairs)", "",
                  "| set | pairs | no face | accuracy at threshold | TAR / FAR at threshold | AUC | TAR@FAR 0.1% | "
                  "TAR@FAR 1% | best threshold (acc.) | cross-fold acc. |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in report["verification"].items():
            at = r["at_threshold"]
            t01, t1 = r["tar_at_far"]
            note = lambda t: pct(t["tar"]) + ("" if t["resolvable"] else " (too few pairs)")  # noqa: E731
            lines.append(f"| {name} | {r['pairs']} | {r['pairs_without_face']} | {pct(at['accuracy'])} "
                         f"(t={at['threshold']}) | {pct(at['tar'])} / {pct(at['far'])} | {r['auc']:.4f} | "
                         f"{note(t01)} | {note(t1)} | {r['best_accuracy']['threshold']:.3f} "
                         f"({pct(r['best_accuracy']['accuracy'])}) | "
                         f"{pct(r.get('cross_fold_accuracy', {}).get('mean'))} |")
        for name, r in report["verification"].items():
            f = r["at_threshold_faces_found"]
            lines.append(f"\n{name}: a pair in which either photo has no detected face counts as \"different\". "
                         f"On the {f['n']} pairs with both faces found: accuracy {pct(f['accuracy'])}, TAR "
                         f"{pct(f['tar'])}, FAR {pct(f['far'])}, AUC {r['auc_faces_found']:.4f}.")
        lines.append("")
    if "openset" in report:
        lines += ["## Open-set identification", "",
                  "Half the people enrolled with one photo each; probes = their other photos and every photo of "
                  "the other half (strangers); enrolled people and enrolment photo rotate over the splits.", "",
                  "| set | people (enrolled) | photos | splits | enrolled probes | stranger probes | "
                  "rank-1 (open set) | "
                  "rank-1 (closed set) | false reject | stranger false accept | threshold for 1% stranger FA | "
                  "rank-1 there |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in report["openset"].items():
            lines.append(f"| {name} | {r['people']} ({r['gallery_size']}) | {r['photos']} | {r['splits']} | "
                         f"{r['enrolled_probes']} | {r['stranger_probes']} | {pct(r['rank1'])} | "
                         f"{pct(r['rank1_closed_set'])} | {pct(r['false_reject'])} | "
                         f"{pct(r['stranger_false_accept'])} | {r['threshold_for_1pct_stranger_fa']:.3f} | "
                         f"{pct(r['rank1_at_that_threshold'])} |")
        lines += ["", "A stranger is falsely accepted when *any* of the enrolled people is nearer than the threshold, "
                  "so the false-accept rate grows with the gallery: a pair-wise FAR of 0.3% becomes ~50% against "
                  "225 people."]
        lines.append("")
    if "averaging" in report:
        a = report["averaging"]
        lines += ["## Multi-frame averaging (synthetic clips, then real video)", "",
                  f"Each still becomes a {max(a['frames'])}-frame clip (rotation +-4 deg, scale 0.9-1.1, shift +-3%, "
                  "Gaussian blur "
                  "sigma 0-1.5, gain 0.7-1.3, offset +-25, noise sigma 2-8); each frame goes through detection, "
                  "landmarks, alignment and the models; outputs of N frames are averaged as track.py does, over "
                  "every disjoint N-frame window of every clip. `decided`: share of windows whose per-frame "
                  "matches agree with the "
                  "averaged one (identity.min_agreement), as the daemon requires before it names a track. "
                  "Identity: the gallery side is the still, the probe side the clip.", "",
                  "| frames | age MAE | age MAE adults | gender acc. | verification acc. | TAR | FAR | AUC | "
                  "same-person distance mean / max | different-person distance min | decided (agreement) | "
                  "acc. when decided |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        att = {r["frames"]: r for r in a.get("attributes", {}).get("curve", [])}
        ide = {r["frames"]: r for r in a.get("identity", {}).get("curve", [])}
        for n in a["frames"]:
            x, y = att.get(n, {}), ide.get(n, {})
            nan = float("nan")
            lines.append(f"| {n} | {x.get('age_mae', nan):.2f} | {x.get('age_mae_adults', nan):.2f} | "
                         f"{pct(x.get('gender_accuracy'))} | {pct(y.get('accuracy'))} | {pct(y.get('tar'))} | "
                         f"{pct(y.get('far'))} | {y.get('auc', float('nan')):.4f} | "
                         f"{y.get('same_distance_mean', nan):.3f} / {y.get('same_distance_max', nan):.3f} | "
                         f"{y.get('different_distance_min', float('nan')):.3f} | {pct(y.get('decided'))} | "
                         f"{pct(y.get('decided_accuracy'))} |")
        att_all, ide_all = a.get("attributes", {}), a.get("identity", {})
        lines += ["", f"Clips with a face found in all {max(a['frames'])} frames: {att_all.get('clips', 0)} "
                  f"(age/gender; {att_all.get('clips_with_missed_frames', 0)} more lost the face in some frame "
                  f"and are left out), {ide_all.get('pairs', 0)} pairs (identity; "
                  f"{ide_all.get('clips_with_missed_frames', 0)} left out). Per-frame age standard deviation "
                  f"within a clip: {a.get('attributes', {}).get('per_frame_age_sd', float('nan')):.2f} years.", ""]
        for video, v in a.get("video", {}).items():
            lines += [f"Real footage, `{video}`: {v['tracks']} tracks of >= {max(a['frames'])} frames "
                      f"({', '.join(map(str, v['track_frames']))} frames; whole-track decision: "
                      f"{', '.join('unknown' if n == 'None' else n for n in v['whole_track_names'])}), gallery "
                      "`people/`. Each track cut into disjoint N-frame windows, each window matched on its "
                      "averaged embedding:", "",
                      "| frames | windows | same decision as the whole track | stranger named | wrong name | "
                      "wrongly named, with the agreement rule |", "|---|---|---|---|---|---|"]
            lines += [f"| {r['frames']} | {r['windows']} | {pct(r['agrees_with_track'])} | {r['stranger_named']} | "
                      f"{r['wrong_name']} | {r['wrongly_named_with_agreement_rule']} |" for r in v["curve"]]
            lines.append("")
    lines += ["Plots: " + ", ".join(f"`{p}`" for p in report.get("plots", [])), ""]
    return "\n".join(lines)
