"""The steps of a QSight training run, free of Kedro.

The Kedro nodes (``pipelines/*/nodes.py``) and the guide's Python API (``api.py``) both call these
functions, so a run through ``kedro run`` and a run through ``train_hybrid_model`` are the same code.

The flow: train the image stages on the decode-once cache, export the compressed features and the
classical heads' logits once, then run the quantum and ensemble stages on that feature cache alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from qsight_pipeline.constants import (
    COMPRESSION,
    ENCODER,
    ENSEMBLE,
    GRADE_NAMES,
    HEAD_A,
    HEAD_B,
    HEADS,
    NUM_GRADES,
    QUANTUM_HEAD,
    SPLITS,
)
from qsight_pipeline.data.feature_cache import FeatureCacheDataset
from qsight_pipeline.models.hybrid import HybridModel, ModelConfig, build_model
from qsight_pipeline.training.stages import Stage
from qsight_pipeline.training.trainer import TrainerSettings, evaluate, train_stages

logger = logging.getLogger(__name__)

# Everything after the compression module: what the feature cache must carry to rebuild it.
POST_COMPRESSION_PARTS = (HEAD_A, HEAD_B, ENSEMBLE)


def _loader_generator(seed: int) -> torch.Generator:
    # The trainer checkpoints this generator's state, so a resumed run shuffles exactly as an
    # uninterrupted one would.
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader with a seeded generator (shuffled loaders) for reproducible order."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=_loader_generator(seed) if shuffle else None,
        drop_last=False,
    )


def model_config_dict(config: ModelConfig) -> dict[str, Any]:
    """A plain dict of the model config (safe for JSON and for ``weights_only`` checkpoints)."""
    return config.to_dict()


def rebuild_model(config_dict: dict[str, Any]) -> HybridModel:
    """Rebuild a model from its saved config; the weights come from a checkpoint, never a download."""
    config = ModelConfig(**{**config_dict, "pretrained": False, "pretrained_weights": None})
    return build_model(config)


def class_counts(labels: np.ndarray) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=NUM_GRADES)


# --------------------------------------------------------------------------- classical stages


def train_image_stages(
    model: HybridModel,
    stages: Sequence[Stage],
    train_loader: DataLoader,
    val_loader: DataLoader,
    settings: TrainerSettings,
    *,
    train_labels: np.ndarray,
    run_fingerprint: str = "",
) -> list[dict[str, Any]]:
    """Run the stages that train the encoder or the compression module, on images."""
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
        run_fingerprint=run_fingerprint,
    )


def classical_checkpoint(model: HybridModel, history: list[dict[str, Any]]) -> dict[str, Any]:
    """``phase1_classical_model.pth``: the weights plus everything needed to rebuild the model."""
    return {
        "format": "qsight.phase1_classical_model/1",
        "model_config": model_config_dict(model.config),
        "classes": list(GRADE_NAMES),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "history": history,
    }


def load_classical_checkpoint(checkpoint: dict[str, Any]) -> HybridModel:
    model = rebuild_model(checkpoint["model_config"])
    missing, unexpected = model.load_state_dict(checkpoint["model_state"], strict=False)
    # The quantum head is trained later from the feature cache; everything else must match.
    missing = [k for k in missing if not k.startswith(f"{QUANTUM_HEAD}.")]
    unexpected = [k for k in unexpected if not k.startswith(f"{QUANTUM_HEAD}.")]
    if missing or unexpected:
        raise ValueError(
            "phase1_classical_model.pth does not match the model it describes "
            f"(missing: {missing[:5]}, unexpected: {unexpected[:5]}). Re-run `kedro run --pipeline "
            "classical` to rebuild it."
        )
    return model


# --------------------------------------------------------------------------- feature export


def export_features(
    model: HybridModel,
    loaders: dict[str, DataLoader],
    image_ids: dict[str, Sequence[str]],
    settings: TrainerSettings,
) -> dict[str, Any]:
    """Run the frozen classical model once per split and build ``quantum_training_data.pkl``.

    The pass is the trainer's :func:`evaluate`, which keeps every sample's compressed features
    and head logits. Returns the dict described in docs/architecture.md ("Feature cache"),
    which includes the guide's keys ``train_features``, ``train_labels``, ``val_features``,
    ``val_labels``.
    """
    cache: dict[str, Any] = {}
    for split in SPLITS:
        ids = [str(i) for i in image_ids.get(split, ())]
        if split in loaders:
            result = evaluate(model, loaders[split], (1, 1, 0), settings)
            outputs = result["outputs"]
            cache[f"{split}_features"] = outputs["compressed"].astype(np.float32)
            for head in (HEAD_A, HEAD_B):
                cache[f"{split}_logits_{head}"] = outputs[f"logits_{head}"].astype(np.float32)
            cache[f"{split}_labels"] = result["labels"].astype(np.int64)
        else:  # the Python API has no test loader: that split is exported empty
            cache[f"{split}_features"] = np.zeros((0, model.config.compressed_dim), np.float32)
            for head in (HEAD_A, HEAD_B):
                cache[f"{split}_logits_{head}"] = np.zeros((0, NUM_GRADES), np.float32)
            cache[f"{split}_labels"] = np.zeros((0,), np.int64)
        cache[f"{split}_image_ids"] = ids
        if len(ids) != len(cache[f"{split}_labels"]):
            raise ValueError(f"{split}: {len(ids)} image ids for "
                             f"{len(cache[f'{split}_labels'])} images in the cache")
    config = model.config
    cache["metadata"] = {
        "compressed_dim": config.compressed_dim,
        "num_classes": NUM_GRADES,
        "classes": list(GRADE_NAMES),
        "encoder_type": config.encoder_type,
        "encoder_name": model.encoder_name,  # the resolved timm name, never null
        "image_size": config.image_size,
        "pretrained": config.pretrained,
        "model_config": model_config_dict(config),
        "seed": settings.seed,
    }
    cache["post_compression_state"] = {
        f"{part}.{key}": value.detach().cpu()
        for part in POST_COMPRESSION_PARTS
        for key, value in getattr(model, part).state_dict().items()
    }
    return cache


REQUIRED_FEATURE_KEYS = tuple(
    f"{split}_{what}"
    for split in SPLITS
    for what in ("features", "labels", f"logits_{HEAD_A}", f"logits_{HEAD_B}", "image_ids")
) + ("metadata", "post_compression_state")


def check_feature_cache(cache: Any, source: str = "quantum_training_data.pkl") -> None:
    """Fail early, naming the missing keys, on a feature cache written by something else."""
    if not isinstance(cache, dict):
        raise ValueError(f"{source} must hold a dict, found {type(cache).__name__}.")
    missing = [key for key in REQUIRED_FEATURE_KEYS if key not in cache]
    if missing:
        raise ValueError(
            f"{source} lacks {', '.join(missing)}. It was not written by this version of the "
            "`features` pipeline; re-create it with `kedro run --pipelines classical,features` "
            "(or `--pipeline features` if phase1_classical_model.pth is current)."
        )


# --------------------------------------------------------------------------- cache stages


def model_from_feature_cache(
    cache: dict[str, Any], quantum_params: dict[str, Any] | None = None
) -> HybridModel:
    """Rebuild head A/B and the ensemble (and a fresh quantum head) from the feature cache alone."""
    check_feature_cache(cache)
    config_dict = dict(cache["metadata"]["model_config"])
    if quantum_params is not None:
        config_dict["quantum"] = dict(quantum_params)
    model = rebuild_model(config_dict)
    state = cache["post_compression_state"]
    for part in POST_COMPRESSION_PARTS:
        prefix = f"{part}."
        getattr(model, part).load_state_dict(
            {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        )
    return model


def feature_datasets(cache: dict[str, Any]) -> dict[str, FeatureCacheDataset]:
    return {
        split: FeatureCacheDataset(
            cache[f"{split}_features"],
            cache[f"{split}_labels"],
            cache[f"{split}_logits_{HEAD_A}"],
            cache[f"{split}_logits_{HEAD_B}"],
        )
        for split in SPLITS
    }


def train_cache_stages(
    model: HybridModel,
    stages: Sequence[Stage],
    cache: dict[str, Any],
    settings: TrainerSettings,
    *,
    batch_size: int,
    run_fingerprint: str = "",
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
        class_counts=class_counts(cache["train_labels"]),
        run_fingerprint=run_fingerprint,
    )


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


def quantum_head_state(model: HybridModel) -> dict[str, Any]:
    """``quantum_head.pth``: the trained quantum head and the ensemble gate trained with it."""
    return {
        "format": "qsight.quantum_head/1",
        "enabled": model.quantum_head is not None,
        "quantum_config": dict(model_config_dict(model.config).get("quantum") or {}),
        "quantum_state": (
            {k: v.detach().cpu() for k, v in model.quantum_head.state_dict().items()}
            if model.quantum_head is not None
            else {}
        ),
        "ensemble_state": {k: v.detach().cpu() for k, v in model.ensemble.state_dict().items()},
    }


def apply_quantum_head_state(model: HybridModel, state: dict[str, Any]) -> None:
    if state.get("enabled") and model.quantum_head is not None:
        model.quantum_head.load_state_dict(state["quantum_state"])
    if state.get("ensemble_state"):
        model.ensemble.load_state_dict(state["ensemble_state"])


def full_model_state(
    classical: dict[str, Any], post_cache_model: HybridModel
) -> dict[str, torch.Tensor]:
    """Encoder + compression from the classical checkpoint, everything after from the cache stages."""
    state = {
        key: value
        for key, value in classical["model_state"].items()
        if key.split(".", 1)[0] in (ENCODER, COMPRESSION)
    }
    for part in (*HEADS, ENSEMBLE):
        module = getattr(post_cache_model, part)
        if module is not None:
            state.update({f"{part}.{k}": v.detach().cpu() for k, v in module.state_dict().items()})
    return state


def to_plain(value: Any) -> Any:
    """Dataclasses, typed parameter blocks, numpy scalars and arrays to JSON-friendly values."""
    if hasattr(value, "model_dump") and not isinstance(value, type):  # a pydantic params block
        return to_plain(value.model_dump())
    if is_dataclass(value) and not isinstance(value, type):
        return to_plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


# --------------------------------------------------------------------------- final artifacts

LATENCY_SAMPLE_LIMIT = 2000


def _best_validation(stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The stage epoch with the highest validation ensemble kappa (ties: the later stage)."""
    best = None
    for stage in stages:
        val = stage.get("best_val") or {}
        kappa = (val.get(ENSEMBLE) or {}).get("kappa")
        if kappa is None:
            continue
        if best is None or kappa >= best["metrics"][ENSEMBLE]["kappa"]:
            best = {"stage": stage["name"], "epoch": stage.get("best_epoch"), "metrics": val}
    return best


def _latency(stages: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, list[float]]]:
    samples: dict[str, list[float]] = {}
    for stage in stages:
        for component, values in (stage.get("latency_samples_ms") or {}).items():
            samples.setdefault(component, []).extend(float(v) for v in values)
    stats = {
        component: {
            "p50": float(np.percentile(values, 50)),
            "p95": float(np.percentile(values, 95)),
            "mean": float(np.mean(values)),
            "count": len(values),
        }
        for component, values in samples.items()
        if values
    }
    trimmed = {c: v[-LATENCY_SAMPLE_LIMIT:] for c, v in samples.items()}
    return stats, trimmed


def build_training_summary(
    stages: list[dict[str, Any]],
    evaluation: dict[str, dict[str, Any]],
    model_info: dict[str, Any],
    config: dict[str, Any],
) -> dict[str, Any]:
    """``training_summary.json`` (schema in docs/architecture.md)."""
    latency_stats, latency_samples = _latency(stages)
    stage_records = [
        {k: v for k, v in stage.items() if k != "latency_samples_ms"} for stage in stages
    ]
    return to_plain(
        {
            "stages": stage_records,
            "best_validation": _best_validation(stages),
            "evaluation": {split: result["metrics"] for split, result in evaluation.items()},
            "latency_ms": latency_stats,
            "latency_samples_ms": latency_samples,
            "quantum": {
                key.removeprefix("quantum_"): value
                for key, value in model_info.items()
                if key.startswith("quantum_")
            },
            "config": config,
        }
    )


def build_model_info(model: HybridModel, metadata: dict[str, Any]) -> dict[str, Any]:
    """``model_info.json``: what the model is, in the guide's key names."""
    quantum = dict(model_config_dict(model.config).get("quantum") or {})
    enabled = model.quantum_head is not None
    return to_plain(
        {
            "compressed_dim": metadata["compressed_dim"],
            "num_classes": NUM_GRADES,
            "classes": list(GRADE_NAMES),
            "encoder_type": metadata["encoder_type"],
            "encoder_name": metadata["encoder_name"],
            "image_size": metadata["image_size"],
            "pretrained": metadata["pretrained"],
            "quantum_enabled": enabled,
            "quantum_qubits": quantum.get("n_qubits") if enabled else None,
            "quantum_shots": quantum.get("shots") if enabled else None,
            "quantum_reps": quantum.get("reps") if enabled else None,
            "quantum_entanglement": quantum.get("entanglement") if enabled else None,
            "quantum_encoding": quantum.get("encoding") if enabled else None,
            "quantum_executor": quantum.get("executor") if enabled else None,
            "model_config": model_config_dict(model.config),
        }
    )


def complete_checkpoint(
    classical: dict[str, Any],
    post_cache_model: HybridModel,
    training_summary: dict[str, Any],
    model_info: dict[str, Any],
) -> dict[str, Any]:
    """``complete_checkpoint.pth``: full weights, summary and metadata (``weights_only`` loadable)."""
    return {
        "format": "qsight.complete_checkpoint/1",
        "model_config": model_info["model_config"],
        "classes": list(GRADE_NAMES),
        "model_state": full_model_state(classical, post_cache_model),
        "model_info": model_info,
        "training_summary": training_summary,
    }


def load_complete_checkpoint(checkpoint: dict[str, Any]) -> HybridModel:
    """Rebuild the trained hybrid model from ``complete_checkpoint.pth``."""
    config = dict(checkpoint["model_config"])
    if not checkpoint["model_info"].get("quantum_enabled"):
        config["quantum"] = {**(config.get("quantum") or {}), "enabled": False}
    model = rebuild_model(config)
    model.load_state_dict(checkpoint["model_state"])
    return model.eval()
