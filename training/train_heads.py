"""Transfer learning: gender and age heads on the daemon's 128-D face embedding (CPU, minutes).

The embedding network stays frozen; a small MLP learns gender (logistic) and age (L1 regression) from
UTKFace photos run through the daemon's own pipeline (`training/evaluate.py`'s cached Analyzer), with
augmentation (mirrored and re-lit copies of each training photo through the full pipeline, plus
Gaussian noise on embeddings while training). 25% of the photos, stratified by age band and gender,
are held out; LFW (never trained on) is a second held-out set for gender. The heads are compared with
the shipped age/gender models on exactly the same held-out faces and exported to ONNX. They ship
(copied to models/ with a manifest entry) only with --ship *and* if they beat the shipped models;
the report says which way it went: training/reports/heads.{md,json}, heads_curves.png.

    python training/train_heads.py [--epochs 400] [--augment 1] [--ship]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import (ADULT_AGE, DEFAULT_CACHE, REPORTS, ROOT, SHARED, UTK_PAD, Analyzer,  # noqa: E402
                      central_face, image_size, pad_image, read_labels_csv)
from edge import evaluation as ev  # noqa: E402
from edge.config import load_config  # noqa: E402
from edge.images import load_image  # noqa: E402

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
                found = central_face(analyzer.faces_in(augmented_copy(image, zlib.crc32(repr(key).encode())), border), w, h)
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


def build_heads(torch, hidden: int):
    class Heads(torch.nn.Module):
        """Embedding (N, 128) -> [female probability, age in years] (N, 2)."""

        def __init__(self):
            super().__init__()
            self.trunk = torch.nn.Sequential(torch.nn.Linear(128, hidden), torch.nn.ReLU(), torch.nn.Dropout(0.2))
            self.gender = torch.nn.Linear(hidden, 1)
            self.age = torch.nn.Linear(hidden, 1)

        def forward(self, x):
            z = self.trunk(x * 10.0)        # dlib embeddings have components of ~0.1
            return torch.cat([torch.sigmoid(self.gender(z)), 40.0 + 20.0 * self.age(z)], dim=1)
    return Heads()


def train(train_set, val_set, epochs: int, hidden: int, seed: int):
    import torch
    torch.manual_seed(seed)
    model = build_heads(torch, hidden)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    x, age, female = (torch.tensor(train_set[k]) for k in ("x", "age", "female"))
    vx, vage, vfemale = (torch.tensor(val_set[k]) for k in ("x", "age", "female"))
    bce = torch.nn.BCELoss()
    history = []
    for epoch in tqdm(range(epochs), desc="training heads", unit="epoch"):
        model.train()
        for batch in torch.randperm(len(x)).split(128):
            noisy = x[batch] + 0.01 * torch.randn_like(x[batch])      # embedding-space augmentation
            out = model(noisy)
            loss = bce(out[:, 0], female[batch]) + torch.nn.functional.smooth_l1_loss(out[:, 1], age[batch]) / 10
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            row = {"epoch": epoch + 1}
            for name, (bx, bage, bfemale) in (("train", (x, age, female)), ("val", (vx, vage, vfemale))):
                out = model(bx)
                row[f"{name}_loss"] = float(bce(out[:, 0], bfemale)
                                            + torch.nn.functional.smooth_l1_loss(out[:, 1], bage) / 10)
                row[f"{name}_gender_acc"] = float(((out[:, 0] >= 0.5).float() == bfemale).float().mean())
                row[f"{name}_age_mae"] = float((out[:, 1] - bage).abs().mean())
            history.append(row)
    return model, history


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


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, key, title in zip(axes, ("loss", "gender_acc", "age_mae"), ("loss", "gender accuracy", "age MAE")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], label="train (augmented)")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], label="held out")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--datasets", type=Path, default=SHARED)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=REPORTS)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--augment", type=int, default=1, help="augmented copies per training photo")
    parser.add_argument("--limit", type=int, help="use only N UTKFace photos (quick runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ship", action="store_true", help="copy the heads to models/ if they beat the shipped ones")
    args = parser.parse_args(argv)

    started = time.time()
    cfg = load_config(args.config, args.overrides)
    analyzer = Analyzer(cfg, args.cache)
    utk = read_labels_csv(args.datasets / "utkface" / "labels.csv", pad=UTK_PAD)
    if args.limit:
        utk = utk[:: max(1, len(utk) // args.limit)][: args.limit]
    held = stratified_split(utk, 0.25, args.seed)
    train_set = embed_items(analyzer, [u for u, h in zip(utk, held) if not h], args.augment, "UTKFace train")
    val_set = embed_items(analyzer, [u for u, h in zip(utk, held) if h], 0, "UTKFace held out")
    lfw = read_labels_csv(args.datasets / "lfw" / "labels.csv")
    lfw_set = embed_items(analyzer, lfw[:: max(1, len(lfw) // (100 if args.limit else 100_000))], 0, "LFW (gender)")

    model, history = train(train_set, val_set, args.epochs, args.hidden, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    plot_curves(history, args.out / "heads_curves.png")
    results = {
        "utkface_held_out": compare("utkface", val_set["age"], val_set["female"], predict(model, val_set["x"]),
                                    val_set["shipped_age"], val_set["shipped_female"]),
        "lfw": compare("lfw", np.full(len(lfw_set["female"]), np.nan), lfw_set["female"],
                       predict(model, lfw_set["x"]), lfw_set["shipped_age"], lfw_set["shipped_female"]),
    }
    u, lf = results["utkface_held_out"], results["lfw"]
    gender_better = (u["heads"]["gender"]["accuracy"] > u["shipped"]["gender"]["accuracy"]
                     and lf["heads"]["gender"]["accuracy"] > lf["shipped"]["gender"]["accuracy"])
    age_better = u["heads"]["age_adults"]["mae"] < u["shipped"]["age_adults"]["mae"]
    onnx_path = Path("/tmp") / "edge_heads_v1.onnx"
    export_onnx(model, onnx_path)
    import onnxruntime
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"embedding": val_set["x"]})[0]
    parity = float(np.abs(onnx_out - predict(model, val_set["x"])).max())
    shipped = bool(args.ship and gender_better and age_better)
    report = {"date": time.strftime("%Y-%m-%d"), "elapsed_s": time.time() - started,
              "train_faces": int(len(train_set["x"])), "train_photos": int(len(set(train_set["index"].tolist()))),
              "held_out_faces": int(len(val_set["x"])), "lfw_faces": int(len(lfw_set["x"])),
              "augment_copies": args.augment, "epochs": args.epochs, "hidden": args.hidden,
              "final": history[-1], "results": results, "gender_heads_better": gender_better,
              "age_heads_better": age_better, "onnx": str(onnx_path), "onnx_max_abs_diff": parity,
              "shipped": shipped}
    if shipped:
        raise SystemExit("shipping the heads needs an EmbeddingHeads model class and a manifest entry: "
                         "not wired yet; the ONNX file is at " + str(onnx_path))
    (args.out / "heads.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    (args.out / "heads.md").write_text(markdown(report))
    print(markdown(report))
    return 0


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
        f"blur), {r['epochs']} epochs, embedding noise. Held out: 25% of UTKFace (stratified by age band and "
        f"gender) and LFW (gender only, never trained on). Curves: `heads_curves.png`.", "",
        "| held-out set | model | faces | gender acc. | gender acc. adults | age MAE | age MAE adults | "
        "age RMSE adults |", "|---|---|---|---|---|---|---|---|",
        row("UTKFace 25%", "heads", u), row("UTKFace 25%", "shipped", u), row("LFW", "heads", lf),
        row("LFW", "shipped", lf), "",
        f"Gender heads better on both sets: {r['gender_heads_better']}; age heads better on adults: "
        f"{r['age_heads_better']}. ONNX export (`{r['onnx']}`) matches torch within {r['onnx_max_abs_diff']:.1e}. "
        f"Shipped: {'yes' if r['shipped'] else 'no'}.", ""])


if __name__ == "__main__":
    sys.exit(main())
