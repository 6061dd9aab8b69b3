"""Gender: Cydral's dlib gender classifier (CC0), softmax over [female, male]."""

from __future__ import annotations

import numpy as np

from ..backends import Backend, run_batched
from . import DlibChips, dlib_normalize


class GenderModel(DlibChips):
    name = "gender"
    chip_size = 32
    chip_padding = 0.2
    labels = ("female", "male")

    def __init__(self, backend: Backend):
        self.backend = backend

    def predict_chips(self, chips_rgb: np.ndarray) -> np.ndarray:
        """Aligned 32 x 32 RGB chips -> probability that the face is female, one per chip."""
        if len(chips_rgb) == 0:
            return np.zeros(0, np.float32)
        return run_batched(self.backend, dlib_normalize(chips_rgb))[0][:, 0]



def gender_label(female_probability: float) -> tuple[str, float]:
    """('female'|'male', confidence in that label)."""
    if female_probability >= 0.5:
        return "female", float(female_probability)
    return "male", float(1.0 - female_probability)
