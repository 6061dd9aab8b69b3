"""Identity embedding: Intel Open Model Zoo's face-reidentification-retail-0095 (Apache-2.0), 128 px -> 256-D.

Converted from the OpenVINO IR by training/convert_reid_embedding.py. The network was trained on its own
alignment (not dlib's chips): the 5 landmarks go onto Open Model Zoo's template, the chip is BGR with raw 0-255
values (the scale and shift sit inside the first layers), and vectors are compared by cosine similarity.
"""

from __future__ import annotations

import numpy as np

from ..align import align_chips
from ..backends import Backend, run_batched

# Open Model Zoo's landmark template for this model, in the unit square (README of
# face-reidentification-retail-0095): image-left eye, image-right eye, nose tip, mouth left, mouth right.
REID_TEMPLATE_UNIT = np.array([
    [0.31556875, 0.4615741071428571],
    [0.68262291666666670, 0.4615741071428571],
    [0.50026249999999990, 0.6405053571428571],
    [0.34947187500000004, 0.8246919642857142],
    [0.65343645833333330, 0.8246919642857142],
], dtype=np.float64)


class ReidEmbeddingModel:
    name = "embedding"
    model_id = "reid_0095"
    metric = "cosine"
    dimensions = 256
    chip_size = 128
    template = REID_TEMPLATE_UNIT * chip_size

    def __init__(self, backend: Backend):
        self.backend = backend

    def chips(self, image_rgb: np.ndarray, landmarks_list) -> np.ndarray:
        """N x 128 x 128 x 3 uint8 RGB chips aligned to this model's template."""
        return align_chips(image_rgb, landmarks_list, self.template, self.chip_size)

    @staticmethod
    def to_tensor(chips_rgb: np.ndarray) -> np.ndarray:
        """N x H x W x 3 uint8 RGB chips -> N x 3 x H x W float32 BGR, values left at 0-255 (the network scales)."""
        return np.ascontiguousarray(chips_rgb[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)

    def predict_chips(self, chips_rgb: np.ndarray) -> np.ndarray:
        """RGB chips -> (N, 256) float32 unit vectors (cosine similarity = dot product)."""
        if len(chips_rgb) == 0:
            return np.zeros((0, self.dimensions), np.float32)
        batch = self.to_tensor(chips_rgb)
        vectors = run_batched(self.backend, batch)[0].reshape(len(batch), self.dimensions).astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, np.float32(1e-12))

    def predict(self, image_rgb: np.ndarray, landmarks_list) -> np.ndarray:
        return self.predict_chips(self.chips(image_rgb, landmarks_list))
