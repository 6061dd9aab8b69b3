"""Transfer learning: gender and age heads on the daemon's 128-D face embedding (CPU, minutes).

The embedding network stays frozen; a small MLP learns gender (logistic) and age (L1 regression) from
UTKFace photos run through the daemon's own pipeline (the cached Analyzer of `training/evallib`), with
augmentation (mirrored and re-lit copies of each training photo through the full pipeline, plus
Gaussian noise on embeddings while training); the epoch kept is the one with the lowest loss on 15% of
the training photos. 25% of the photos, stratified by age band and gender, are held out; LFW (never
trained on, or with --lfw-train a quarter of its people) is a second held-out set for gender. The heads
are compared with the shipped age/gender models on exactly the same held-out faces and exported to ONNX
and TFLite (litert-torch, in its own venv: --tflite-python; both checked against torch). They ship
(copied to models/ with a manifest entry) only with --ship *and* if they beat the shipped models; the
report says which way it went: training/reports/heads.{md,json}, heads_curves.png (--name).

    python -m training.train_heads [--epochs 300] [--augment 1] [--lfw-train --name heads_lfw_train] [--ship]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from edge import evaluation as ev
from edge.config import load_config
from edge.images import load_image

from .evallib.analyzer import Analyzer, central_face, image_size, pad_image
from .evallib.datasets import UTK_PAD, read_labels_csv
from .evallib.report import write_report
from .evallib.sections import ADULT_AGE
from .heads_model import build_heads
from .paths import DATASETS, EVAL_CACHE, REPORTS, ROOT, TFLITE_PYTHON

BANDS = [0, 13, 18, 30, 45, 60, 200]


def augmented_copy(image: np.ndarray, seed: int) -> np.ndarray:
    """Mirror plus a random gain/offset/blur: what a different camera and light would give."""
    rng = np.random.default_rng(seed)
    out = cv2.flip(image, 1).astype(np.float32) * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20)
    out = np.clip(out, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.2)) if rng.random() < 0.5 else out


def embed_items(analyzer: Analyzer, items, augment: int, desc: str):
    """Rows (embedding, age, female label, shipped age, shipped female prob, index) per face found;
    `augment` extra copies per photo (shipped predictions kept from the original photo)."""
    rows = []
    for index, item in enumerate(tqdm(items, desc=desc, unit="img")):
        w, h = image_size(item.path)
        face = central_face(analyzer.faces(item.path, item.pad), w, h)
        if face is None:
            continue
        label = 1.0 if item.gender == "female" else 0.0
        rows.append((face.embedding, item.age if item.age is not None else np.nan, label, face.age, face.female,
                     index))
        for copy in range(augment):
            key = ("augmented", str(item.path), item.pad, copy)
            if key not in analyzer.cache:
                image = pad_image(load_image(item.path), item.pad)
                border = int(round(max(h, w) * item.pad))
                copy_image = augmented_copy(image, zlib.crc32(repr(key).encode()))
                found = central_face(analyzer.faces_in(copy_image, border), w, h)
                analyzer.cache[key] = None if found is None else found.embedding
                analyzer._dirty += 1
                if analyzer._dirty >= 100:
                    analyzer.save()
            if analyzer.cache[key] is not None:
                rows.append((analyzer.cache[key], rows[-1][1], label, np.nan, np.nan, index))
    analyzer.save()
    if not rows:
        return {k: np.zeros(0) for k in ("x", "age", "female", "shipped_age", "shipped_female", "index")}
    x, age, female, s_age, s_female, idx = zip(*rows)
    return {"x": np.stack(x).astype(np.float32), "age": np.array(age, np.float32),
            "female": np.array(female, np.float32), "shipped_age": np.array(s_age, np.float32),
            "shipped_female": np.array(s_female, np.float32), "index": np.array(idx)}


def stratified_split(items, share: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out items: `share` of every (age band, gender) cell."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(items), bool)
    cells: dict = {}
    for i, item in enumerate(items):
        cells.setdefault((np.searchsorted(BANDS, item.age, side="right"), item.gender), []).append(i)
    for members in cells.values():
        members = rng.permutation(members)
        held[members[:int(round(len(members) * share))]] = True
    return held


def age_loss(torch, predicted, age):
    """Smooth L1 in decades, over the rows that have an age (LFW rows carry gender only)."""
    aged = torch.isfinite(age)
    if not aged.any():
        return predicted.sum() * 0.0
    return torch.nn.functional.smooth_l1_loss(predicted[aged], age[aged]) / 10


def lfw_held_out(item) -> bool:
    """A quarter of LFW's people, by name: nobody is on both sides of the split."""
    return zlib.crc32(item.identity.encode()) % 4 == 0


def merge(a: dict, b: dict) -> dict:
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def train(train_set, select_set, test_set, epochs: int, hidden: int, seed: int):
    """AdamW on the training rows; the weights kept are those of the epoch with the lowest loss on
    `select_set` (carved from the training photos). `test_set` is only recorded, never used to choose."""
    import copy

    import torch
    torch.manual_seed(seed)
    model = build_heads(torch, hidden)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    x, age, female = (torch.tensor(train_set[k]) for k in ("x", "age", "female"))
    sets = {name: tuple(torch.tensor(data[k]) for k in ("x", "age", "female"))
            for name, data in (("train", train_set), ("select", select_set), ("val", test_set))}
    bce = torch.nn.BCELoss()
    history, best = [], (np.inf, 0, None)
    for epoch in tqdm(range(epochs), desc="training heads", unit="epoch"):
        model.train()
        for batch in torch.randperm(len(x)).split(128):
            noisy = x[batch] + 0.01 * torch.randn_like(x[batch])      # embedding-space augmentation
            out = model(noisy)
            loss = bce(out[:, 0], female[batch]) + age_loss(torch, out[:, 1], age[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            row = {"epoch": epoch + 1}
            for name, (bx, bage, bfemale) in sets.items():
                out = model(bx)
                row[f"{name}_loss"] = float(bce(out[:, 0], bfemale) + age_loss(torch, out[:, 1], bage))
                row[f"{name}_gender_acc"] = float(((out[:, 0] >= 0.5).float() == bfemale).float().mean())
                aged = torch.isfinite(bage)
                row[f"{name}_age_mae"] = float((out[aged, 1] - bage[aged]).abs().mean())
            history.append(row)
        if row["select_loss"] < best[0]:
            best = (row["select_loss"], epoch + 1, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    return model, history, best[1]


def predict(model, x: np.ndarray) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model(torch.tensor(x)).numpy()


def compare(name: str, truth_age, truth_female, heads_out, shipped_age, shipped_female) -> dict:
    result = {"faces": int(len(truth_female))}
    labels = np.where(truth_female >= 0.5, "female", "male")
    for who, female, age in (("heads", heads_out[:, 0], heads_out[:, 1]), ("shipped", shipped_female, shipped_age)):
        entry = {"gender": ev.classification_report(labels, np.where(female >= 0.5, "female", "male"),
                                                    ["female", "male"])}
        if np.isfinite(truth_age).all():
            adult = truth_age >= ADULT_AGE
            entry["age"] = ev.regression_errors(truth_age, age)
            entry["age_adults"] = ev.regression_errors(truth_age[adult], age[adult])
            entry["gender_adults"] = ev.classification_report(
                labels[adult], np.where(female[adult] >= 0.5, "female", "male"), ["female", "male"])
        result[who] = entry
    return result


def paired_difference(heads, shipped, seed: int, rounds: int = 2000) -> dict:
    """Mean of heads - shipped per face (absolute errors, or 1/0 correct), with a bootstrap 95% interval."""
    diff = np.asarray(heads, np.float64) - np.asarray(shipped, np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (rounds, len(diff)))].mean(axis=1)
    return {"mean": float(diff.mean()), "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
            "faces": int(len(diff))}


def plot_curves(history: list[dict], best_epoch: int, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, key, title in zip(axes, ("loss", "gender_acc", "age_mae"), ("loss", "gender accuracy", "age MAE")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], label="train (augmented)")
        ax.plot(epochs, [h[f"select_{key}"] for h in history], label="selection (early stopping)")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], label="held out")
        ax.axvline(best_epoch, color="k", linestyle="--", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def export_onnx(model, path: Path) -> None:
    import torch
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 128),), str(path), input_names=["embedding"],
                      output_names=["female_age"], dynamic_axes={"embedding": {0: "N"}, "female_age": {0: "N"}},
                      opset_version=17, dynamo=False)


def export_tflite(model, hidden: int, path: Path, python: Path) -> str | None:
    """TFLite through litert-torch, which lives in its own venv (it pins other torch/numpy builds)."""
    import torch
    if not python.exists():
        return f"not exported: no litert-torch venv at {python} (see training/requirements.txt)"
    state = path.with_suffix(".pt")
    torch.save({"hidden": hidden, "state": model.state_dict()}, state)
    done = subprocess.run([str(python), "-m", "training.heads_model", str(state), str(path)],
                          cwd=ROOT, capture_output=True, text=True)
    return None if done.returncode == 0 else "not exported: " + done.stderr.strip().splitlines()[-1]


def tflite_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for row in x:     # exported with a fixed batch of 1
        interpreter.set_tensor(inp["index"], row[None].astype(np.float32))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0])
    return np.array(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--datasets", type=Path, default=DATASETS, help="default ../shared/datasets")
    parser.add_argument("--cache", type=Path, default=EVAL_CACHE)
    parser.add_argument("--out", type=Path, default=REPORTS)
    parser.add_argument("--name", default="heads", help="report file stem (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--augment", type=int, default=1, help="augmented copies per training photo")
    parser.add_argument("--limit", type=int, help="use only N UTKFace photos (quick runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lfw-train", action="store_true",
                        help="also train gender on 3/4 of LFW's people (held out: the other quarter)")
    parser.add_argument("--tflite-python", type=Path, default=TFLITE_PYTHON,
                        help="python of a venv with litert-torch, for the TFLite export (default ../venv-tflite)")
    parser.add_argument("--ship", action="store_true", help="copy the heads to models/ if they beat the shipped ones")
    args = parser.parse_args(argv)

    started = time.time()
    cfg = load_config(args.config, args.overrides)
    analyzer = Analyzer(cfg, args.cache)
    utk = read_labels_csv(args.datasets / "utkface" / "labels.csv", pad=UTK_PAD)
    if args.limit:
        utk = utk[:: max(1, len(utk) // args.limit)][: args.limit]
    held = stratified_split(utk, 0.25, args.seed)
    train_items = [u for u, h in zip(utk, held) if not h]
    select = stratified_split(train_items, 0.15, args.seed + 1)     # early stopping, from the training photos
    select_set = embed_items(analyzer, [u for u, s in zip(train_items, select) if s], 0, "UTKFace selection")
    train_set = embed_items(analyzer, [u for u, s in zip(train_items, select) if not s], args.augment,
                            "UTKFace train")
    val_set = embed_items(analyzer, [u for u, h in zip(utk, held) if h], 0, "UTKFace held out")
    utk_train_photos = int(len(set(train_set["index"].tolist())))
    lfw = read_labels_csv(args.datasets / "lfw" / "labels.csv")
    lfw = lfw[:: max(1, len(lfw) // (100 if args.limit else 100_000))]
    if args.lfw_train:
        # Gender only; the LFW comparison below is then on the held-out quarter of LFW's people.
        train_set = merge(train_set, embed_items(analyzer, [i for i in lfw if not lfw_held_out(i)], 0,
                                                 "LFW train (gender)"))
        lfw = [i for i in lfw if lfw_held_out(i)]
    lfw_set = embed_items(analyzer, lfw, 0, "LFW (gender)")

    model, history, best_epoch = train(train_set, select_set, val_set, args.epochs, args.hidden, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    plot_curves(history, best_epoch, args.out / f"{args.name}_curves.png")
    results = {
        "utkface_held_out": compare("utkface", val_set["age"], val_set["female"], predict(model, val_set["x"]),
                                    val_set["shipped_age"], val_set["shipped_female"]),
        "lfw": compare("lfw", np.full(len(lfw_set["female"]), np.nan), lfw_set["female"],
                       predict(model, lfw_set["x"]), lfw_set["shipped_age"], lfw_set["shipped_female"]),
    }
    u, lf = results["utkface_held_out"], results["lfw"]
    # Gender: better on both held-out sets, and on both pooled beyond chance (95% interval above zero).
    pooled = merge(val_set, lfw_set)
    gender_gain = paired_difference((predict(model, pooled["x"])[:, 0] >= 0.5) == (pooled["female"] >= 0.5),
                                    (pooled["shipped_female"] >= 0.5) == (pooled["female"] >= 0.5), args.seed)
    gender_better = (u["heads"]["gender"]["accuracy"] > u["shipped"]["gender"]["accuracy"]
                     and lf["heads"]["gender"]["accuracy"] > lf["shipped"]["gender"]["accuracy"]
                     and gender_gain["ci95"][0] > 0)
    # Better on adults by more than chance: the whole 95% interval of the paired MAE difference below zero.
    adult = val_set["age"] >= ADULT_AGE
    truth = val_set["age"][adult]
    age_gain = paired_difference(np.abs(predict(model, val_set["x"])[adult, 1] - truth),
                                 np.abs(val_set["shipped_age"][adult] - truth), args.seed)
    age_better = age_gain["ci95"][1] < 0
    onnx_path = Path("/tmp") / "edge_heads_v1.onnx"
    export_onnx(model, onnx_path)
    import onnxruntime
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"embedding": val_set["x"]})[0]
    parity = float(np.abs(onnx_out - predict(model, val_set["x"])).max())
    tflite_path = onnx_path.with_suffix(".tflite")
    tflite_error = export_tflite(model, args.hidden, tflite_path, args.tflite_python)
    tflite_parity = (float(np.abs(tflite_outputs(tflite_path, val_set["x"]) - predict(model, val_set["x"])).max())
                     if tflite_error is None else None)
    shipped = bool(args.ship and gender_better and age_better)
    report = {"date": time.strftime("%Y-%m-%d"), "elapsed_s": time.time() - started,
              "train_faces": int(len(train_set["x"])), "train_photos": utk_train_photos,
              "held_out_faces": int(len(val_set["x"])), "lfw_faces": int(len(lfw_set["x"])),
              "augment_copies": args.augment, "lfw_train": args.lfw_train, "name": args.name,
              "epochs": args.epochs, "best_epoch": best_epoch, "selection_faces": int(len(select_set["x"])),
              "hidden": args.hidden,
              "final": history[-1], "results": results, "gender_heads_better": gender_better,
              "age_adults_mae_difference": age_gain, "gender_accuracy_difference": gender_gain,
              "age_heads_better": age_better, "onnx": str(onnx_path), "onnx_max_abs_diff": parity,
              "tflite": tflite_error or str(tflite_path), "tflite_max_abs_diff": tflite_parity,
              "shipped": shipped}
    write_report(args.out, args.name, report, markdown(report))
    if shipped:
        # Never happened on the shared data (see heads.md), so the daemon has no model class for the heads.
        raise SystemExit("the heads beat the shipped models: add an EmbeddingHeads model class, copy "
                         f"{onnx_path} to models/, add it to training/build_manifest.py SPECS and rerun it")
    return 0


LFW_TRAIN_NOTE = ", plus gender on the photos of 3/4 of LFW's people"


def markdown(r: dict) -> str:
    def row(set_name, who, res):
        e = res[who]
        age = e.get("age_adults")
        return (f"| {set_name} | {who} | {res['faces']} | {100 * e['gender']['accuracy']:.1f}% | "
                + (f"{100 * e['gender_adults']['accuracy']:.1f}% | {e['age']['mae']:.2f} | {age['mae']:.2f} | "
                   f"{age['rmse']:.2f} |" if age else "n/a | n/a | n/a | n/a |"))
    u, lf = r["results"]["utkface_held_out"], r["results"]["lfw"]
    return "\n".join([
        "# Gender/age heads on the face embedding vs the shipped models", "",
        f"`training/train_heads.py`, {r['date']}: MLP 128 -> {r['hidden']} -> (gender, age) on frozen dlib-ResNet "
        f"embeddings from the daemon's own pipeline; {r['train_photos']} UTKFace training photos "
        f"({r['train_faces']} faces with {r['augment_copies']} augmented copy per photo: mirror, gain, offset, "
        f"blur){LFW_TRAIN_NOTE if r.get('lfw_train') else ''}, "
        f"up to {r['epochs']} epochs with embedding noise, keeping epoch {r['best_epoch']} (lowest loss on "
        f"{r['selection_faces']} selection faces: 15% of the training photos). Held out: 25% of UTKFace "
        "(stratified by age band and gender) and "
        + ("the other quarter of LFW's people (gender only)" if r.get("lfw_train") else
           "LFW (gender only, never trained on)") + f". Curves: `{r['name']}_curves.png`.", "",
        "| held-out set | model | faces | gender acc. | gender acc. adults | age MAE | age MAE adults | "
        "age RMSE adults |", "|---|---|---|---|---|---|---|---|",
        row("UTKFace 25%", "heads", u), row("UTKFace 25%", "shipped", u), row("LFW", "heads", lf),
        row("LFW", "shipped", lf), "",
        f"Gender heads better on both sets and beyond chance: {r['gender_heads_better']} (pooled accuracy "
        f"difference heads - shipped {100 * r['gender_accuracy_difference']['mean']:+.2f} points, bootstrap 95% "
        f"interval {100 * r['gender_accuracy_difference']['ci95'][0]:+.2f} to "
        f"{100 * r['gender_accuracy_difference']['ci95'][1]:+.2f}); age heads better on adults beyond "
        "chance: "
        f"{r['age_heads_better']} (adult MAE difference heads - shipped {r['age_adults_mae_difference']['mean']:+.2f} "
        f"years, bootstrap 95% interval {r['age_adults_mae_difference']['ci95'][0]:+.2f} to "
        f"{r['age_adults_mae_difference']['ci95'][1]:+.2f}). ONNX export (`{r['onnx']}`) matches torch within "
        f"{r['onnx_max_abs_diff']:.1e}; "
        + (f"TFLite (`{r['tflite']}`) within {r['tflite_max_abs_diff']:.1e}. " if r.get("tflite_max_abs_diff")
           is not None else f"TFLite {r.get('tflite')}. ")
        + f"Shipped: {'yes' if r['shipped'] else 'no'}.", ""])


if __name__ == "__main__":
    sys.exit(main())
