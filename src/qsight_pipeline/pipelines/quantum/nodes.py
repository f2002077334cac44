"""Nodes of the ``quantum`` pipeline. They read the feature cache and parameters, nothing else."""

from __future__ import annotations

import logging
from typing import Any

from qsight_pipeline import lineage, run_config, workflow
from qsight_pipeline.constants import QUANTUM_HEAD
from qsight_pipeline.training.trainer import seed_everything

logger = logging.getLogger(__name__)


def train_quantum_head(
    quantum_training_data: dict[str, Any], parameters: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Train the quantum head (and the ensemble, where a stage says so) on the cached features.

    Args:
        quantum_training_data: the feature cache written by the ``features`` pipeline.
        parameters: all project parameters; ``quantum`` configures the circuit.

    Returns:
        ``quantum_head`` (its weights, its config and the ensemble gate trained with it),
        ``quantum_history`` (stage summaries) and ``quantum_metrics`` (the quantum head alone on
        val and test: accuracy, quadratic weighted kappa, confusion matrix and the rest).
    """
    workflow.check_feature_cache(quantum_training_data)
    record = lineage.feature_cache_record(quantum_training_data, parameters.get("output_dir"))
    settings = run_config.trainer_settings(parameters)
    seed_everything(settings.seed)
    model = workflow.model_from_feature_cache(quantum_training_data, parameters.get("quantum"))
    if model.quantum_head is None:
        # ``kedro run --pipeline quantum`` alone is refused before it starts (hooks.py); in a
        # full run the rest of the pipeline carries on classical-only.
        logger.warning("Quantum head disabled or unavailable: the quantum stage is skipped.")
        return _stamped(workflow.quantum_head_state(model), record), [], {"enabled": False}

    stages = run_config.schedule(parameters)["quantum"]
    batch_size = run_config.batch_size(parameters)
    fingerprint = run_config.fingerprint(
        "quantum", quantum_training_data["metadata"], parameters.get("quantum"), batch_size,
        len(quantum_training_data["train_labels"]),
    )
    history = workflow.train_cache_stages(
        model, stages, quantum_training_data, settings,
        batch_size=batch_size, run_fingerprint=fingerprint,
    )
    evaluation = workflow.evaluate_on_cache(
        model, quantum_training_data, settings, batch_size=batch_size
    )
    metrics = {
        "enabled": True,
        "quantum": workflow.model_config_dict(model.config).get("quantum"),
        **{split: result["metrics"][QUANTUM_HEAD] for split, result in evaluation.items()},
    }
    for split in ("val", "test"):
        logger.info(
            "Quantum head alone on %s: accuracy %.3f, quadratic weighted kappa %.3f",
            split, metrics[split]["accuracy"], metrics[split]["quadratic_weighted_kappa"],
        )
    return _stamped(workflow.quantum_head_state(model), record), history, metrics


def _stamped(quantum_head: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The quantum head remembers which classical model's features it was trained on."""
    return {**quantum_head, lineage.LINEAGE_KEY: dict(record)}
