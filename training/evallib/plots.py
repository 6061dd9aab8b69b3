"""PNG plots of the evaluation (matplotlib, imported only when a plot is drawn)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge import evaluation as ev


def plot_path(prefix: Path, suffix: str) -> Path:
    """Plot file beside the report: <out>/<name>_<suffix>."""
    return prefix.with_name(f"{prefix.name}_{suffix}")


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_roc(roc: ev.Roc, path: Path, name: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    far = np.clip(roc.far, 1e-4, 1)
    ax.semilogx(far, roc.tar, drawstyle="steps-post")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"ROC, {name} (AUC {roc.auc:.4f})")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_age(pairs: np.ndarray, path: Path, name: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(pairs[:, 0], pairs[:, 1], s=4, alpha=0.4)
    ax.plot([0, 90], [0, 90], "k--", linewidth=1)
    ax.set_xlabel("true age")
    ax.set_ylabel("estimated age")
    ax.set_title(f"age, {name}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_averaging(result: dict, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.5))
    if "attributes" in result:
        c = result["attributes"]["curve"]
        axes[0].plot([r["frames"] for r in c], [r["age_mae_adults"] for r in c], "o-", label="adults")
        axes[0].plot([r["frames"] for r in c], [r["age_mae"] for r in c], "o-", label="all")
        axes[0].set_title("age MAE (years)")
        axes[0].legend()
        axes[1].plot([r["frames"] for r in c], [r["gender_accuracy"] for r in c], "o-")
        axes[1].set_title("gender accuracy")
    if "identity" in result:
        c = result["identity"]["curve"]
        axes[2].plot([r["frames"] for r in c], [r["accuracy"] for r in c], "o-")
        axes[2].set_title("verification accuracy at threshold")
    for video, v in result.get("video", {}).items():
        c = v["curve"]
        axes[3].plot([r["frames"] for r in c], [r["agrees_with_track"] for r in c], "o-", label=video[:18])
        axes[3].set_title("real video: same name as whole track")
        axes[3].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("frames averaged")
        ax.set_xscale("log")
        ax.set_xticks(result["frames"], [str(n) for n in result["frames"]])
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
