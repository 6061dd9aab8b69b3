"""One small class per model (age, gender, embedding): preprocessing and decoding, any backend."""

from __future__ import annotations

import numpy as np

# The dlib-trained networks (age, gender, embedding) all normalise RGB bytes the same way.
DLIB_RGB_MEAN = np.array([122.782, 117.001, 104.298], np.float32)


def dlib_normalize(chips_rgb: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 RGB chips -> N x 3 x H x W float32, (x - mean) / 256."""
    x = (chips_rgb.astype(np.float32) - DLIB_RGB_MEAN) / 256.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
