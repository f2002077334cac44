"""How a QSight training run drives the trainer, free of Kedro.

The Kedro nodes (``pipelines/*/nodes.py``) and the guide's Python API (``inference/api.py``) both call these
functions, so a run through ``kedro run`` and a run through ``train_hybrid_model`` are the same code.

The flow: train the image stages on the decode-once cache, export the compressed features and the
classical heads' logits once, then run the quantum and ensemble stages on that feature cache alone.
The artifact formats live in ``training/artifacts.py``, the feature-cache format in ``data/feature_cache.py``,
the loaders in ``data/loaders.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from qsight_pipeline.constants import (
    GRADE_NAMES,
    HEAD_A,
    HEAD_B,
    NUM_GRADES,
    POST_COMPRESSION_PARTS,
    SPLITS,
)
from qsight_pipeline.data import feature_cache
from qsight_pipeline.data.feature_cache import (
    feature_datasets,
)
from qsight_pipeline.data.loaders import class_counts, make_loader
from qsight_pipeline.files.plain import to_plain
from qsight_pipeline.models.hybrid import HybridModel
from qsight_pipeline.training.artifacts import (
    model_config_dict,
)
from qsight_pipeline.training.checkpoints import fingerprint
from qsight_pipeline.training.frozen_encoder import without_encoder
from qsight_pipeline.training.stages import Stage
from qsight_pipeline.training.trainer import TrainerSettings, evaluate, train_stages

logger = logging.getLogger(__name__)



# --------------------------------------------------------------------------- classical stages


def train_image_stages(
    model: HybridModel,
    stages: Sequence[Stage],
    train_loader: DataLoader,
    val_loader: DataLoader,
    settings: TrainerSettings,
    *,
    train_labels: np.ndarray,
) -> list[dict[str, Any]]:
    """Run the stages that train the encoder or the compression module, on images.

    With ``model.freeze_encoder`` the encoder is kept out of every stage (the Python API's way;
    the ``classical`` pipeline embeds the pictures once instead: ``training.frozen_encoder``).
    """
    if stages and model.config.freeze_encoder:
        stages = without_encoder(stages)
    if not stages:
        logger.warning(
            "The stage schedule has no stage that trains the encoder or the compression module; "
            "the classical model is exported as built (%s weights).",
            "pretrained" if model.config.pretrained else "randomly initialised",
        )
        return []
    return train_stages(
        model,
        list(stages),
        train_loader,
        val_loader,
        settings,
        class_counts=class_counts(train_labels),
    )


# --------------------------------------------------------------------------- feature export


def export_features(
    model: HybridModel,
    loaders: dict[str, DataLoader],
    image_ids: dict[str, Sequence[str]],
    settings: TrainerSettings,
) -> dict[str, Any]:
    """Run the frozen classical model once per split and build ``quantum_training_data.pkl``.

    The pass is the trainer's :func:`evaluate`, which keeps every sample's compressed features,
    head logits and the encoder's pooled features (``{split}_encoder_features``, what the gate's
    out-of-distribution score measures). Returns the dict of ``data.feature_cache`` (the guide's keys
    ``train_features``, ``train_labels``, ``val_features``, ``val_labels`` included).
    """
    splits: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        ids = [str(i) for i in image_ids.get(split, ())]
        if split in loaders:
            result = evaluate(model, loaders[split], (1, 1, 0), settings)
            outputs = result["outputs"]
            fields = {
                "features": outputs["compressed"].astype(np.float32),
                **{
                    f"logits_{head}": outputs[f"logits_{head}"].astype(np.float32)
                    for head in (HEAD_A, HEAD_B)
                },
                "labels": result["labels"].astype(np.int64),
                "encoder_features": outputs.get("encoder_features"),  # None from cached features
            }
        else:  # the Python API has no test loader: that split is exported empty
            fields = {
                "features": np.zeros((0, model.config.compressed_dim), np.float32),
                **{f"logits_{head}": np.zeros((0, NUM_GRADES), np.float32) for head in (HEAD_A, HEAD_B)},
                "labels": np.zeros((0,), np.int64),
                "encoder_features": np.zeros((0, model.encoder.num_features), np.float32),
            }
        splits[split] = {**fields, "image_ids": ids}
    metadata = model_metadata(model, settings.seed)
    # NumPy, not tensors: the file is read with a restricted unpickler that admits no torch code.
    state = {
        f"{part}.{key}": value.detach().cpu().numpy()
        for part in POST_COMPRESSION_PARTS
        for key, value in getattr(model, part).state_dict().items()
    }
    return feature_cache.build_feature_cache(splits, metadata, state)


def model_metadata(model: HybridModel, seed: int) -> dict[str, Any]:
    """What the classical model is (the feature cache's ``metadata``; read by ``build_model_info``)."""
    config = model.config
    return {
        "compressed_dim": config.compressed_dim,
        "num_classes": NUM_GRADES,
        "classes": list(GRADE_NAMES),
        "encoder_type": config.encoder_type,
        "encoder_name": model.encoder_name,  # the resolved timm name, never null
        "image_size": config.image_size,
        "pretrained": config.pretrained,
        "model_config": model_config_dict(config),
        "seed": seed,
    }


# --------------------------------------------------------------------------- cache stages


def train_cache_stages(
    model: HybridModel,
    stages: Sequence[Stage],
    cache: dict[str, Any],
    settings: TrainerSettings,
    *,
    batch_size: int,
) -> list[dict[str, Any]]:
    """Run stages that start after the compression module, on the cached features."""
    if not stages:
        return []
    datasets = feature_datasets(cache)
    train_loader = make_loader(datasets["train"], batch_size, shuffle=True, seed=settings.seed)
    val_loader = make_loader(datasets["val"], batch_size, shuffle=False, seed=settings.seed)
    return train_stages(
        model,
        list(stages),
        train_loader,
        val_loader,
        settings,
        class_counts=class_counts(feature_cache.split_labels(cache, "train")),
    )


def fit_on_cache(
    model: HybridModel,
    part: str,
    stages: Sequence[Stage],
    cache: dict[str, Any],
    settings: TrainerSettings,
    *,
    splits: Sequence[str] = ("val", "test"),
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Train ``part``'s stages (``quantum`` or ``ensemble``) on the feature cache, then evaluate.

    The ensemble stages fit the gate from a fresh start seeded by ``settings.seed``.

    A checkpoint in ``settings.checkpoint_dir`` is resumed only when it was written for the same
    cache, quantum settings, batch size (``settings.batch_size``) and training-set size. Returns
    the stage history and :func:`evaluate_on_cache` on ``splits``.
    """
    batch_size = settings.batch_size
    if part == "ensemble" and stages:
        # Every head is frozen here: the gate starts afresh, so that a gate the earlier stages
        # left saturated on one head (a saturated softmax has no gradient to leave it) is not
        # kept, and so that another seed fits it again the same way (``inference.fusion``).
        fresh_gate(model.ensemble, settings.seed)
    run_fingerprint = fingerprint(
        part, feature_cache.cache_metadata(cache), to_plain(model.config.quantum), batch_size,
        len(feature_cache.split_labels(cache, "train")),
    )
    history = train_cache_stages(
        model, stages, cache, settings.model_copy(update={"run_fingerprint": run_fingerprint}),
        batch_size=batch_size,
    )
    return history, evaluate_on_cache(model, cache, settings, batch_size=batch_size, splits=splits)


def fresh_gate(ensemble: nn.Module, seed: int) -> None:
    """Re-initialise the gate's layers from ``seed`` (the global generator is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in ensemble.modules():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()


def evaluate_on_cache(
    model: HybridModel,
    cache: dict[str, Any],
    settings: TrainerSettings,
    *,
    batch_size: int,
    splits: Sequence[str] = ("val", "test"),
) -> dict[str, dict[str, Any]]:
    """Metrics of every active head and of the ensemble, per split (``grading_metrics`` dicts)."""
    datasets = feature_datasets(cache)
    active_mask = (1, 1, 1 if model.quantum_head is not None else 0)
    results: dict[str, dict[str, Any]] = {}
    for split in splits:
        loader = make_loader(datasets[split], batch_size, shuffle=False, seed=settings.seed)
        results[split] = evaluate(model, loader, active_mask, settings)
    return results
