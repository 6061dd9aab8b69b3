"""Default locations of the training scripts, all relative to the project: the repository itself, the
shared datasets and model originals beside it (`../shared`), and the litert-torch venv for TFLite exports."""

from __future__ import annotations

import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
REPORTS = ROOT / "training" / "reports"
SHARED = ROOT.parent / "shared"
DATASETS = SHARED / "datasets"
SHARED_MODELS = SHARED / "models"
EVAL_CACHE = Path(tempfile.gettempdir()) / "edge-eval-cache"
# litert-torch pins its own torch/numpy builds, so TFLite exports run in a separate venv (training/requirements.txt).
TFLITE_PYTHON = ROOT.parent / "venv-tflite" / "bin" / "python"


def shown(path: Path | str) -> str:
    """A path as reports print it: relative to the project (`../shared/...` for the shared data), never this
    machine's absolute path."""
    path = Path(path).resolve()
    for base, prefix in ((ROOT, ""), (ROOT.parent, "../")):
        if path.is_relative_to(base):
            return prefix + str(path.relative_to(base))
    return str(path)
