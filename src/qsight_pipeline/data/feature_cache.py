"""The feature cache, ``quantum_training_data.pkl``: its format, its checks and its readers.

This module owns the layout (docs/architecture.md, "Feature cache"); every other module reads the
cache through the accessors here, never through raw keys. The quantum and ensemble stages train
from these rows alone, with no images and no encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from qsight_pipeline.constants import HEAD_A, HEAD_B, NUM_GRADES, SPLITS
from qsight_pipeline.data.guards import check_finite_features
from qsight_pipeline.errors import ArtifactError

FEATURE_CACHE_FILE = "quantum_training_data.pkl"
SPLIT_FIELDS: tuple[str, ...] = (
    "features", "labels", f"logits_{HEAD_A}", f"logits_{HEAD_B}", "image_ids",
)
# Stored when the export ran the encoder (or read its embedding table): the encoder's pooled
# features, float32 (N, encoder.num_features), what the gate's out-of-distribution score measures
# (inference.ood). A cache written before they were stored lacks them and still loads.
OPTIONAL_SPLIT_FIELDS: tuple[str, ...] = ("encoder_features",)
REQUIRED_FEATURE_KEYS: tuple[str, ...] = tuple(
    f"{split}_{field}" for split in SPLITS for field in SPLIT_FIELDS
) + ("metadata", "post_compression_state")


def check_feature_cache(cache: Any, source: str = FEATURE_CACHE_FILE) -> None:
    """Fail early, naming the missing keys, on a feature cache written by something else."""
    if not isinstance(cache, dict):
        raise ArtifactError(f"{source} must hold a dict, found {type(cache).__name__}.")
    missing = [key for key in REQUIRED_FEATURE_KEYS if key not in cache]
    if missing:
        raise ArtifactError(
            f"{source} lacks {', '.join(missing)}. It was not written by this version of the "
            "`features` pipeline; re-create it with `kedro run --pipelines classical,features` "
            "(or `--pipelines features` if phase1_classical_model.pth is current)."
        )

    check_finite_features(cache, source)  # NaN features would train a NaN model


def build_feature_cache(
    splits: dict[str, dict[str, Any]],
    metadata: dict[str, Any],
    post_compression_state: dict[str, Any],
) -> dict[str, Any]:
    """The cache dict from per-split arrays (``{split: {field: array}}`` with ``SPLIT_FIELDS``,
    and ``OPTIONAL_SPLIT_FIELDS`` where given)."""
    cache: dict[str, Any] = {}
    for split in SPLITS:
        fields = splits[split]
        if len(fields["image_ids"]) != len(fields["labels"]):
            raise ValueError(
                f"{split}: {len(fields['image_ids'])} image ids for {len(fields['labels'])} images"
            )
        for field in SPLIT_FIELDS:
            cache[f"{split}_{field}"] = fields[field]
        for field in OPTIONAL_SPLIT_FIELDS:
            if fields.get(field) is not None:
                cache[f"{split}_{field}"] = np.asarray(fields[field], dtype=np.float32)
    cache["metadata"] = metadata
    cache["post_compression_state"] = post_compression_state
    return cache


def cache_metadata(cache: dict[str, Any]) -> dict[str, Any]:
    """What the classical model was: compressed_dim, encoder, image size, model_config, seed."""
    return cache["metadata"]


def post_compression_state(cache: dict[str, Any]) -> dict[str, Any]:
    """Weights of heads A/B and the ensemble as the classical stage left them."""
    return cache["post_compression_state"]


def split_labels(cache: dict[str, Any], split: str) -> np.ndarray:
    return np.asarray(cache[f"{split}_labels"])


def split_features(cache: Mapping[str, Any], split: str) -> np.ndarray:
    return np.asarray(cache[f"{split}_features"])


def split_encoder_features(cache: Mapping[str, Any], split: str) -> np.ndarray | None:
    """The encoder's pooled features of ``split``, or None in a cache written before they were
    stored (the gate then falls back to the compressed features)."""
    value = cache.get(f"{split}_encoder_features")
    return None if value is None else np.asarray(value, dtype=np.float32)


def split_image_ids(cache: dict[str, Any], split: str) -> list[str]:
    return [str(image_id) for image_id in cache[f"{split}_image_ids"]]


def feature_datasets(cache: dict[str, Any]) -> dict[str, FeatureCacheDataset]:
    """One :class:`FeatureCacheDataset` per split."""
    return {split: FeatureCacheDataset.from_cache(cache, split) for split in SPLITS}


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
