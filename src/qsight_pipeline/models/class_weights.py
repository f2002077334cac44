"""The class-balanced loss rule, used by the trainer and by the study's estimators alike."""

from __future__ import annotations

from typing import Any

import numpy as np


def balanced_class_weights(counts: Any) -> np.ndarray:
    """Inverse-frequency weight per class from its training count: ``total / (present * count)``
    (scikit-learn's ``class_weight="balanced"``), so an average training row weighs 1. A class
    absent from training keeps weight 1, so a batch of it never divides 0 by 0."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.ones(len(counts))
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights
