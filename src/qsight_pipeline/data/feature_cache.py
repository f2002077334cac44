"""A torch Dataset over the cached compressed features (``quantum_training_data.pkl``).

The quantum and ensemble stages train from these rows alone, with no images and no encoder.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from qsight_pipeline.constants import HEAD_A, HEAD_B, NUM_GRADES


class FeatureCacheDataset(Dataset):
    """Rows of ``{"compressed", "logits_head_a", "logits_head_b", "grade"}``.

    Args:
        features: float (N, compressed_dim) compressed features.
        labels: int (N,) grades 0..4.
        logits_head_a, logits_head_b: float (N, 5) logits of the frozen classical heads, or
            ``None`` (the rows then lack that key and the model recomputes the head).
    """

    def __init__(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        logits_head_a: np.ndarray | None = None,
        logits_head_b: np.ndarray | None = None,
    ) -> None:
        self.features = torch.as_tensor(np.asarray(features, dtype=np.float32))
        self.grades = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        if self.features.ndim != 2 or len(self.features) != len(self.grades):
            raise ValueError(
                f"features must be (N, compressed_dim) with one label per row, got features "
                f"{tuple(self.features.shape)} and labels {tuple(self.grades.shape)}"
            )
        self.logits: dict[str, torch.Tensor] = {}
        for head, logits in ((HEAD_A, logits_head_a), (HEAD_B, logits_head_b)):
            if logits is None:
                continue
            tensor = torch.as_tensor(np.asarray(logits, dtype=np.float32))
            if tensor.shape != (len(self.grades), NUM_GRADES):
                raise ValueError(
                    f"logits_{head} must be ({len(self.grades)}, {NUM_GRADES}), got {tuple(tensor.shape)}"
                )
            self.logits[head] = tensor

    @classmethod
    def from_cache(cls, cache: dict[str, Any], split: str) -> FeatureCacheDataset:
        """One split of the feature-cache dict (keys as in docs/architecture.md)."""
        return cls(
            cache[f"{split}_features"],
            cache[f"{split}_labels"],
            cache.get(f"{split}_logits_{HEAD_A}"),
            cache.get(f"{split}_logits_{HEAD_B}"),
        )

    @property
    def compressed_dim(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return len(self.grades)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = {"compressed": self.features[index], "grade": self.grades[index]}
        for head, logits in self.logits.items():
            row[f"logits_{head}"] = logits[index]
        return row
