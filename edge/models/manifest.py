"""models/manifest.yaml: what each shipped model file is, and checks that the file is intact."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..backends import ModelLoadError

MANIFEST_NAME = "manifest.yaml"


@dataclass(frozen=True)
class ModelFile:
    model: str
    format: str      # "onnx" | "tflite"
    path: Path
    sha256: str
    bytes: int


def load_manifest(models_dir: Path) -> dict:
    path = Path(models_dir) / MANIFEST_NAME
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ModelLoadError(f"model manifest not readable: {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"model manifest {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ModelLoadError(f"model manifest {path} has no 'models' mapping")
    return data


def model_files(models_dir: Path, manifest: dict, name: str) -> dict[str, ModelFile]:
    """Files of model `name` by format, e.g. {"onnx": ModelFile(...), "tflite": ...}."""
    entry = manifest["models"].get(name)
    if entry is None:
        raise ModelLoadError(f"model {name!r} is not in {Path(models_dir) / MANIFEST_NAME}")
    return {fmt: ModelFile(name, fmt, Path(models_dir) / f["path"], f["sha256"], int(f["bytes"]))
            for fmt, f in entry["files"].items()}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(file: ModelFile) -> None:
    """Raise ModelLoadError naming the file if it is missing or differs from the manifest."""
    if not file.path.is_file():
        raise ModelLoadError(f"model file missing: {file.path} (model {file.model}, {file.format})")
    size = file.path.stat().st_size
    if size != file.bytes or sha256_of(file.path) != file.sha256:
        raise ModelLoadError(f"model file corrupt: {file.path} does not match its sha256 in the manifest "
                             f"(model {file.model}, {size} bytes, expected {file.bytes})")


def verify_all(models_dir: Path) -> list[tuple[ModelFile, str | None]]:
    """Every file in the manifest with None when intact or the error message."""
    manifest = load_manifest(models_dir)
    results = []
    for name in manifest["models"]:
        for file in model_files(models_dir, manifest, name).values():
            try:
                verify_file(file)
                results.append((file, None))
            except ModelLoadError as exc:
                results.append((file, str(exc)))
    return results
