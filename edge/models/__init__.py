"""One small class per model (age, gender, embedding): preprocessing and decoding, any backend."""

from __future__ import annotations

import numpy as np

# The dlib-trained networks (age, gender, embedding) all normalise RGB bytes the same way.
DLIB_RGB_MEAN = np.array([122.782, 117.001, 104.298], np.float32)


def dlib_normalize(chips_rgb: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 RGB chips -> N x 3 x H x W float32, (x - mean) / 256."""
    x = (chips_rgb.astype(np.float32) - DLIB_RGB_MEAN) / 256.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class DlibChips:
    """Mixin of the dlib-trained models: they cut dlib face chips (`chip_size`, `chip_padding`) themselves."""
    chip_size: int
    chip_padding: float

    def chips(self, image_rgb: np.ndarray, landmarks_list) -> np.ndarray:
        """N x chip_size x chip_size x 3 uint8 RGB chips aligned on each face's 5 landmarks."""
        from ..align import extract_chips
        return extract_chips(image_rgb, landmarks_list, self.chip_size, self.chip_padding)

    def predict(self, image_rgb: np.ndarray, landmarks_list) -> np.ndarray:
        return self.predict_chips(self.chips(image_rgb, landmarks_list))
