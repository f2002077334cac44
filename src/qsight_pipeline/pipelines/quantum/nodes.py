"""Nodes of the ``quantum`` pipeline. They read the feature cache and parameters, nothing else."""

from __future__ import annotations

import logging
from typing import Any

from qsight_pipeline.config import QuantumConfig
from qsight_pipeline.constants import QUANTUM_HEAD
from qsight_pipeline.files import lineage
from qsight_pipeline.training.run_config import RunConfig

logger = logging.getLogger(__name__)


def train_quantum_head(
    quantum_training_data: dict[str, Any], run_config: RunConfig, quantum: QuantumConfig
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Train the quantum head (and the ensemble, where a stage says so) on the cached features.

    Args:
        quantum_training_data: the feature cache written by the ``features`` pipeline.
        run_config: the run-wide settings and the parsed stage schedule.
        quantum: the typed ``quantum`` block (the circuit and its executor).

    Returns:
        ``quantum_head`` (its weights, its config and the ensemble gate trained with it),
        ``quantum_history`` (stage summaries) and ``quantum_metrics`` (the quantum head alone on
        val and test: accuracy, quadratic weighted kappa, confusion matrix and the rest).
    """
    # lazy: kept out of kedro start-up
    from qsight_pipeline.data.feature_cache import check_feature_cache
    from qsight_pipeline.training import artifacts, workflow
    from qsight_pipeline.training.trainer import seed_everything

    check_feature_cache(quantum_training_data)
    record = lineage.feature_cache_record(quantum_training_data, run_config.settings.output_dir)
    settings = run_config.trainer_settings()
    seed_everything(settings.seed)
    quantum_params = QuantumConfig.from_params(quantum).to_dict()
    model = artifacts.model_from_feature_cache(quantum_training_data, quantum_params)
    if model.quantum_head is None:
        # ``kedro run --pipelines quantum`` alone is refused before it starts (hooks.py); in a
        # full run the rest of the pipeline carries on classical-only.
        logger.warning("Quantum head disabled or unavailable: the quantum stage is skipped.")
        return _stamped(artifacts.quantum_head_state(model), record), [], {"enabled": False}

    if model.quantum_head.config.standardize:
        # Fitted on train only and saved in the head's state with its weights.
        model.quantum_head.fit_standardizer(quantum_training_data["train_features"])
    history, evaluation = workflow.fit_on_cache(
        model, "quantum", run_config.schedule["quantum"], quantum_training_data, settings,
    )
    metrics = {
        "enabled": True,
        "quantum": artifacts.model_config_dict(model.config).get("quantum"),
        **{split: result["metrics"][QUANTUM_HEAD] for split, result in evaluation.items()},
    }
    for split in ("val", "test"):
        logger.info(
            "Quantum head alone on %s: accuracy %.3f, quadratic weighted kappa %.3f",
            split, metrics[split]["accuracy"], metrics[split]["quadratic_weighted_kappa"],
        )
    return _stamped(artifacts.quantum_head_state(model), record), history, metrics


def _stamped(quantum_head: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The quantum head remembers which classical model's features it was trained on."""
    return {**quantum_head, lineage.LINEAGE_KEY: dict(record)}
