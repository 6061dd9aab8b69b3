"""Identity embedding: dlib's ResNet (CC0) converted to ONNX/TFLite, 150 px chip -> 128-D.

Distances are plain L2 between raw descriptors, as dlib defines them (same person < 0.6).
"""

from __future__ import annotations

import numpy as np

from ..backends import Backend, run_batched
from . import DlibChips, dlib_normalize


class EmbeddingModel(DlibChips):
    name = "embedding"
    model_id = "dlib_resnet_v1"     # stored with every vector (edge/models/catalog.py)
    metric = "l2"
    chip_size = 150
    chip_padding = 0.25
    dimensions = 128

    def __init__(self, backend: Backend):
        self.backend = backend

    def predict_chips(self, chips_rgb: np.ndarray) -> np.ndarray:
        if len(chips_rgb) == 0:
            return np.zeros((0, self.dimensions), np.float32)
        return run_batched(self.backend, dlib_normalize(chips_rgb))[0].astype(np.float32)

