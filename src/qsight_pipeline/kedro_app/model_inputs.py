"""What the classical and features nodes read per split: the image cache, and the frozen
encoder's embedding table when this run has one (``training.embedding_cache``).

One node, shared by both pipelines (Kedro runs it once when they combine), hands them over as one
``model_inputs`` dict, so a node's arguments stay few and it never opens a file itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from kedro.pipeline import Node

SPLITS = ("train", "val", "test")


def gather_model_inputs(
    image_cache_train: np.ndarray, image_cache_val: np.ndarray, image_cache_test: np.ndarray,
    embedding_cache_train: np.ndarray, embedding_cache_val: np.ndarray,
    embedding_cache_test: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """``model_inputs``: ``{"images": {split: cache}, "embeddings": {split: table or None}}``
    (None for an empty table: this run trains its encoder, or none was ever made)."""
    tables = (embedding_cache_train, embedding_cache_val, embedding_cache_test)
    return {
        "images": dict(zip(SPLITS, (image_cache_train, image_cache_val, image_cache_test), strict=True)),
        "embeddings": {
            split: table if getattr(table, "size", 0) else None
            for split, table in zip(SPLITS, tables, strict=True)
        },
    }


def model_inputs_node() -> Node:
    """The node that gathers ``model_inputs`` (in the classical and the features pipelines)."""
    return Node(
        func=gather_model_inputs,
        inputs=[*(f"image_cache_{s}" for s in SPLITS), *(f"embedding_cache_{s}" for s in SPLITS)],
        outputs="model_inputs",
        name="gather_model_inputs",
    )
