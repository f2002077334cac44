"""Nodes of the ``ensemble`` pipeline: ensemble fine-tuning, final artifacts, report."""

from __future__ import annotations

import logging
from typing import Any

from qsight_pipeline import lineage
from qsight_pipeline.config import QuantumConfig, validate_parameters
from qsight_pipeline.config.referral import ReferralParams
from qsight_pipeline.run_config import RunConfig

logger = logging.getLogger(__name__)


def finetune_ensemble(
    quantum_training_data: dict[str, Any],
    quantum_head: dict[str, Any],
    run_config: RunConfig,
    quantum: QuantumConfig,
) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """Fine-tune the ensemble on cached head outputs with every head frozen, then evaluate.

    Returns:
        The model after the compression module (kept in memory), ``ensemble_history`` and the
        evaluation of every head and the ensemble on val and test.
    """
    from qsight_pipeline import artifacts, workflow
    from qsight_pipeline.data import feature_cache
    from qsight_pipeline.data.feature_cache import check_feature_cache
    from qsight_pipeline.training.checkpoints import fingerprint
    from qsight_pipeline.training.trainer import seed_everything

    check_feature_cache(quantum_training_data)
    lineage.quantum_head_for_feature_cache(
        quantum_head, quantum_training_data, run_config.settings.output_dir
    )
    settings = run_config.trainer_settings()
    seed_everything(settings.seed)
    quantum_params = dict(quantum_head.get("quantum_config") or QuantumConfig.from_params(quantum).to_dict())
    if not quantum_head.get("enabled"):
        quantum_params["enabled"] = False
    model = workflow.model_from_feature_cache(quantum_training_data, quantum_params)
    artifacts.apply_quantum_head_state(model, quantum_head)

    stages = run_config.schedule["ensemble"]
    batch_size = run_config.batch_size
    run_fingerprint = fingerprint(
        "ensemble", feature_cache.cache_metadata(quantum_training_data), quantum_params, batch_size,
        len(feature_cache.split_labels(quantum_training_data, "train")),
    )
    history = workflow.train_cache_stages(
        model, stages, quantum_training_data, settings,
        batch_size=batch_size, run_fingerprint=run_fingerprint,
    )
    evaluation = workflow.evaluate_on_cache(
        model, quantum_training_data, settings, batch_size=batch_size
    )
    return model, history, evaluation


def calibrate_operating_point(
    evaluation: dict[str, Any], referral: ReferralParams
) -> dict[str, Any]:
    """Temperature scaling and the referral / review thresholds, fitted on validation.

    Returns:
        ``calibration.json`` (see :func:`qsight_pipeline.inference.operating_point.fit_operating_point`).
    """
    from qsight_pipeline.config import validate_block
    from qsight_pipeline.inference.operating_point import fit_operating_point
    from qsight_pipeline.plain import to_plain

    referral = validate_block(ReferralParams, referral, "referral")
    return to_plain(fit_operating_point(evaluation, referral))


def assemble_training_artifacts(
    phase1_classical_model: dict[str, Any],
    post_cache_model: Any,
    classical_history: list[dict[str, Any]],
    quantum_history: list[dict[str, Any]],
    ensemble_history: list[dict[str, Any]],
    evaluation: dict[str, Any],
    quantum_training_data: dict[str, Any],
    parameters: dict[str, Any],
    calibration: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Build the guide's artifacts: ``complete_checkpoint``, ``model_info``, ``training_summary``.

    ``parameters`` is only recorded: the summary keeps the run's whole typed configuration.
    ``calibration`` (from :func:`calibrate_operating_point`) is saved with the model: its
    temperatures and operating point in ``model_info["calibration"]``, with the preprocessing
    inference must repeat; its report part in ``training_summary["calibration"]``.
    """
    from qsight_pipeline import artifacts
    from qsight_pipeline.data import feature_cache
    from qsight_pipeline.inference import operating_point

    record = lineage.classical_for_feature_cache(
        phase1_classical_model, quantum_training_data, parameters.get("output_dir")
    )
    model_info = operating_point.model_info_with_operating_point(
        artifacts.build_model_info(post_cache_model, feature_cache.cache_metadata(quantum_training_data)),
        post_cache_model.config.image_size,
        calibration,
    )
    summary = operating_point.summary_with_operating_point(
        artifacts.build_training_summary(
            [*classical_history, *quantum_history, *ensemble_history],
            evaluation,
            model_info,
            config=validate_parameters(parameters).model_dump(mode="json"),
        ),
        calibration,
    )
    for split in ("val", "test"):
        ensemble = summary["evaluation"][split]["ensemble"]
        logger.info(
            "Ensemble on %s: accuracy %.3f, quadratic weighted kappa %.3f, referable-DR AUC %s",
            split, ensemble["accuracy"], ensemble["quadratic_weighted_kappa"],
            "n/a" if ensemble["referable_auc"] is None else f"{ensemble['referable_auc']:.3f}",
        )
    checkpoint = artifacts.complete_checkpoint(
        phase1_classical_model, post_cache_model, summary, model_info
    )
    checkpoint[lineage.LINEAGE_KEY] = record
    return checkpoint, model_info, summary


def draw_report_figures(training_summary: dict[str, Any]) -> dict[str, Any]:
    """The report's figures (``report_figures``), keyed by PNG file name; see
    :func:`qsight_pipeline.reporting.figures.report_figures`."""
    from qsight_pipeline.reporting.figures import report_figures  # matplotlib only when drawing

    return report_figures(training_summary)


def render_report_html(
    training_summary: dict[str, Any], model_info: dict[str, Any], report_figures: dict[str, Any],
    quantum_study_summary: dict[str, Any] | None = None,
    quantum_hardware_summary: dict[str, Any] | None = None,
) -> str:
    """The self-contained HTML report (``report_html``), with the quantum study's and the
    quantum_hardware sections when their summaries exist; see
    :func:`qsight_pipeline.reporting.html.render_report_html`."""
    from qsight_pipeline.reporting import html

    return html.render_report_html(
        training_summary, model_info, report_figures, quantum_study_summary,
        quantum_hardware_summary,
    )
