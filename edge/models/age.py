"""Age: Cydral's dlib age predictor (CC0), 81-way softmax over 0..80 years, expected value = age."""

from __future__ import annotations

import numpy as np

from ..backends import Backend, run_batched
from . import DlibChips, dlib_normalize


class AgeModel(DlibChips):
    name = "age"
    chip_size = 64
    chip_padding = 0.2
    # Class 0 stands for babies under one year; the model's own weights say 0.25.
    ages = np.concatenate([[0.25], np.arange(1, 81)]).astype(np.float32)

    def __init__(self, backend: Backend):
        self.backend = backend

    def predict_chips(self, chips_rgb: np.ndarray) -> np.ndarray:
        """Aligned 64 x 64 RGB chips -> expected age in years, one per chip."""
        if len(chips_rgb) == 0:
            return np.zeros(0, np.float32)
        probabilities = run_batched(self.backend, dlib_normalize(chips_rgb))[0]
        return probabilities @ self.ages

