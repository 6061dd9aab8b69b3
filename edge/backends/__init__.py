"""Inference backends: each runs tensors through one model file and knows nothing of faces.

Every backend implements :class:`Backend`; models (``edge.models``) own pre/post-processing.
Adding a backend means adding one file here: a class registered by key (so config can name it,
``backend: onnxruntime``) that declares the model-file format it loads, how to probe its runtime,
and its rank when nothing board-specific decides (edge/backends/select.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np


class ModelLoadError(RuntimeError):
    """A model file is missing, corrupt or cannot be loaded by the chosen runtime."""


class Backend(Protocol):
    name: str          # e.g. "onnxruntime"
    device: str        # e.g. "CPUExecutionProvider" or "XNNPACK x2"
    max_batch: int     # 0 = any batch size, 1 = fixed batch of one

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run one NCHW float32 batch; return the model outputs in file order."""
        ...


BackendFactory = Callable[..., Backend]
REGISTRY: dict[str, BackendFactory] = {}


def register(key: str):
    """Class decorator; the class also carries `file_format` ("onnx", "tflite"), `probe()` (the runtime's
    version, None when it does not import), `generic_rank` and `generic_why` (preference on a board
    with no board-specific rule: lower first)."""
    def wrap(factory: BackendFactory) -> BackendFactory:
        factory.key = key
        REGISTRY[key] = factory
        return factory
    return wrap


def registered() -> dict[str, BackendFactory]:
    """Every backend, by key (imports the backend modules once; each imports its runtime lazily)."""
    _import_plugins()
    return REGISTRY


def file_format(key: str) -> str:
    """The model-file format backend `key` loads."""
    return registered()[key].file_format


def load_backend(key: str, path: Path, **options) -> Backend:
    """Instantiate backend `key` on model file `path`; errors always name the file."""
    _import_plugins()
    if key not in REGISTRY:
        raise ModelLoadError(f"unknown backend {key!r} (known: {', '.join(sorted(REGISTRY))})")
    if not Path(path).is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        return REGISTRY[key](Path(path), **options)
    except ModelLoadError:
        raise
    except Exception as exc:  # runtimes raise their own types; give one clear message
        raise ModelLoadError(f"cannot load model file {path} with {key}: {exc}") from exc


# A runtime keeps the memory of the largest batch it has run: 13 faces at once through the re-identification
# embedding left ONNX Runtime ~85 MB larger than one face did (1080p street clip, peak RSS 337 MB). Batches of
# at most 4 keep most of the batching gain (README Performance, "Batching") at a bounded size.
MAX_DYNAMIC_BATCH = 4


def run_batched(backend: Backend, batch: np.ndarray) -> list[np.ndarray]:
    """Run a batch on a backend in parts of its fixed batch size, or of MAX_DYNAMIC_BATCH when it takes any."""
    size = backend.max_batch or MAX_DYNAMIC_BATCH
    if len(batch) <= size:
        return backend.run(batch)
    parts = [backend.run(batch[i:i + size]) for i in range(0, len(batch), size)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def _import_plugins() -> None:
    # Importing registers; each module imports its runtime lazily so a missing runtime
    # only matters when that backend is chosen.
    # Every module, even when one was imported directly before (that one alone would be registered).
    import importlib
    import pkgutil
    for module in pkgutil.iter_modules(__path__):
        if module.name != "select":
            importlib.import_module(f"{__name__}.{module.name}")
