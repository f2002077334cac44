"""The formats of the artifacts a run writes: ``phase1_classical_model.pth``, ``quantum_head.pth``,
``complete_checkpoint.pth``, ``model_info.json`` and ``training_summary.json``.

Every ``.pth`` here is a dict of tensors and plain data, loadable with ``weights_only=True``.
Docs: docs/architecture.md ("History and summary records").

This is the one place that builds a model from an artifact, always through :func:`rebuild_model`
(the saved ``ModelConfig``, never a download): :func:`load_classical_checkpoint` (the classical
model), :func:`model_from_feature_cache` (heads and ensemble from the feature cache) and
:func:`load_complete_checkpoint` (the whole model; ``inference.loading`` adds its calibration).
A new model is built from the parameter blocks by ``models.hybrid.build_model``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from qsight_pipeline.constants import (
    COMPRESSION,
    ENCODER,
    ENSEMBLE,
    GRADE_NAMES,
    HEADS,
    NUM_GRADES,
    POST_COMPRESSION_PARTS,
    QUANTUM_HEAD,
)
from qsight_pipeline.data import feature_cache
from qsight_pipeline.data.feature_cache import check_feature_cache
from qsight_pipeline.errors import ArtifactError, UserError
from qsight_pipeline.files.plain import to_plain
from qsight_pipeline.files.safe_files import CorruptArtifactError, corrupt_artifact_message
from qsight_pipeline.models.hybrid import HybridModel, ModelConfig, build_model
from qsight_pipeline.training.latency import latency_statistics


@contextmanager
def _contents_of(name: str) -> Iterator[None]:
    """A file that loaded but does not describe a model we can rebuild is one error, no traceback."""
    try:
        yield
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as error:
        raise CorruptArtifactError(corrupt_artifact_message(
            name, f"does not describe a model this version can rebuild ({type(error).__name__})"
        )) from error


def model_config_dict(config: ModelConfig) -> dict[str, Any]:
    """A plain dict of the model config (safe for JSON and for ``weights_only`` checkpoints)."""
    return config.to_dict()


def rebuild_model(config_dict: dict[str, Any]) -> HybridModel:
    """Rebuild a model from its saved config; the weights come from a checkpoint, never a download."""
    config = ModelConfig(**{**config_dict, "pretrained": False, "pretrained_weights": None})
    return build_model(config)


def model_from_feature_cache(
    cache: dict[str, Any], quantum_params: dict[str, Any] | None = None
) -> HybridModel:
    """Rebuild head A/B and the ensemble (and a fresh quantum head) from the feature cache alone."""
    check_feature_cache(cache)
    config_dict = dict(feature_cache.cache_metadata(cache)["model_config"])
    if quantum_params is not None:
        config_dict["quantum"] = dict(quantum_params)
    model = rebuild_model(config_dict)
    state = feature_cache.post_compression_state(cache)
    for part in POST_COMPRESSION_PARTS:
        prefix = f"{part}."
        getattr(model, part).load_state_dict(
            {k[len(prefix):]: torch.as_tensor(v) for k, v in state.items() if k.startswith(prefix)}
        )
    return model


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
    with _contents_of("phase1_classical_model.pth"):
        model = rebuild_model(checkpoint["model_config"])
        missing, unexpected = model.load_state_dict(checkpoint["model_state"], strict=False)
    # The quantum head is trained later from the feature cache; everything else must match.
    missing = [k for k in missing if not k.startswith(f"{QUANTUM_HEAD}.")]
    unexpected = [k for k in unexpected if not k.startswith(f"{QUANTUM_HEAD}.")]
    if missing or unexpected:
        raise ArtifactError(
            "phase1_classical_model.pth does not match the model it describes "
            f"(missing: {missing[:5]}, unexpected: {unexpected[:5]}). Re-run `kedro run --pipelines "
            "classical` to rebuild it."
        )
    return model


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
    with _contents_of("quantum_head.pth"):
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


def build_training_summary(
    stages: list[dict[str, Any]],
    evaluation: dict[str, dict[str, Any]],
    model_info: dict[str, Any],
    config: dict[str, Any],
) -> dict[str, Any]:
    """``training_summary.json`` (schema in docs/architecture.md)."""
    latency_stats, latency_samples = latency_statistics(stages)
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
    with _contents_of("complete_checkpoint.pth"):
        config = dict(checkpoint["model_config"])
        if not checkpoint["model_info"].get("quantum_enabled"):
            config["quantum"] = {**(config.get("quantum") or {}), "enabled": False}
        model = rebuild_model(config)
        model.load_state_dict(checkpoint["model_state"])
    return model.eval()
