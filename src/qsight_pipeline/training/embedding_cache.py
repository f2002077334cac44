"""The embedding table: a frozen encoder's output for every cached picture, computed once.

When no stage of the schedule trains the encoder (``model.freeze_encoder: true``, or image stages
that never list ``encoder`` in ``trainable``), running it again in every epoch only repeats the
same arithmetic. The ``classical`` pipeline then embeds each picture of the image cache once, into
``data/05_model_input/embedding_cache_<split>.npy`` (float32 ``(N, num_features)``, rows in the
image cache's order), and the compression module and the heads train from those rows.

Each table carries its lineage beside it (``embedding_cache_<split>.lineage.json``, as the image
cache does): the ingestion it was computed from and ``encoder_id``, a digest of the encoder's
weights and of the preprocessing. A reader uses a table only for the very encoder it was made
with. A run whose encoder is trained writes :func:`no_table` instead, which leaves any older table
on disk but marks it as no record, so that no later step can take it for current.

Augmentation and a frozen cache do not mix: a table holds one view of each picture, so a cached run
trains without augmentation (and says so in the log).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from qsight_pipeline.files import lineage
from qsight_pipeline.training.devices import autocast_dtype, autocast_enabled, resolve_device

logger = logging.getLogger(__name__)

EMBEDDING_FILE = "data/05_model_input/embedding_cache_{split}.npy"


def no_table() -> np.ndarray:
    """What the embedding step writes when the encoder is trained: no rows, no columns."""
    return np.zeros((0, 0), dtype=np.float32)


def is_table(array: Any) -> bool:
    """True for an embedding table with a lineage record (not :func:`no_table`, not stale)."""
    return array is not None and getattr(array, "ndim", 0) == 2 and array.size > 0 and bool(
        (lineage.of(array) or {}).get("encoder_id")
    )


def encoder_id(encoder: nn.Module, parent: str, preprocessing: Mapping[str, Any] | None) -> str:
    """A digest of the encoder's weights, the preprocessing and ``parent`` (the ingestion id)."""
    settings = json.dumps(dict(preprocessing or {}), sort_keys=True, default=str)
    digest = lineage.weights_id(encoder.state_dict(), f"{parent}|{settings}")
    return "enc-" + digest.removeprefix("cls-")


@torch.no_grad()
def embed(encoder: nn.Module, loader: DataLoader, device: str = "auto", desc: str = "") -> np.ndarray:
    """``encoder`` (eval mode) over every image batch of ``loader``, in order: float32 (N, F).

    Autocast follows the trainer's rule for ``device`` (on for CUDA, off on a CPU), so the rows
    are what the uncached frozen encoder would give in training.
    """
    target = resolve_device(device)
    encoder.to(target).eval()
    use_amp = autocast_enabled(None, target)
    chunks: list[torch.Tensor] = []
    for batch in tqdm(loader, desc=desc or "embedding", leave=False, disable=None):
        images = batch["image"].to(target, non_blocking=True)
        with torch.autocast(target.type, dtype=autocast_dtype(target), enabled=use_amp):
            chunks.append(encoder(images).float())
    width = int(getattr(encoder, "num_features", 0))
    return torch.cat(chunks).cpu().numpy() if chunks else np.zeros((0, width), np.float32)


def tagged(rows: np.ndarray, record: Mapping[str, Any], split: str) -> np.ndarray:
    """``rows`` carrying their lineage record (the split and its shape added)."""
    return lineage.tag(
        np.ascontiguousarray(rows, dtype=np.float32),
        {**record, "split": split, "rows": int(rows.shape[0]), "width": int(rows.shape[1])},
    )


def check_table(table: np.ndarray, expected: Mapping[str, Any], split: str) -> str:
    """'' when ``table`` was made from ``expected``'s ingestion and encoder, else why not."""
    record = lineage.of(table) or {}
    for key in ("ingestion_id", "encoder_id"):
        if record.get(key) != expected.get(key):
            return (
                f"{EMBEDDING_FILE.format(split=split)} was computed from another {key.split('_')[0]} "
                f"({record.get(key)} vs {expected.get(key)})"
            )
    return ""


class EmbeddingDataset(Dataset):
    """Rows of an embedding table with their grades, as ``{"embedding", "grade"}`` dicts."""

    def __init__(self, embeddings: np.ndarray, grades: np.ndarray) -> None:
        grades = np.asarray(grades, dtype=np.int64)
        if embeddings.ndim != 2 or len(embeddings) != len(grades):
            raise ValueError(
                f"an embedding table of {len(grades)} rows was expected, got shape {embeddings.shape}"
            )
        # One copy in memory (a few MB even for ViT-L on a full Kaggle set): fast row access.
        self.embeddings = torch.from_numpy(np.array(embeddings, dtype=np.float32, copy=True))
        self.grades = grades

    def __len__(self) -> int:
        return len(self.grades)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "embedding": self.embeddings[index],
            "grade": torch.tensor(self.grades[index], dtype=torch.int64),
        }
