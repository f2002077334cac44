"""Nodes of the ``ensemble`` pipeline: ensemble fine-tuning, final artifacts, report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from qsight_pipeline.config import EnsembleParams, GateParams, QuantumConfig
from qsight_pipeline.config.referral import ReferralParams
from qsight_pipeline.files import lineage
from qsight_pipeline.files.plain import to_plain
from qsight_pipeline.training.run_config import RunConfig

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
    # lazy: kept out of kedro start-up
    from qsight_pipeline.data.feature_cache import check_feature_cache
    from qsight_pipeline.training import artifacts, workflow
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
    model = artifacts.model_from_feature_cache(quantum_training_data, quantum_params)
    artifacts.apply_quantum_head_state(model, quantum_head)

    history, evaluation = workflow.fit_on_cache(
        model, "ensemble", run_config.schedule["ensemble"], quantum_training_data, settings,
    )
    return model, history, evaluation


def choose_fusion(
    quantum_training_data: dict[str, Any],
    post_cache_model: Any,
    evaluation: dict[str, Any],
    run_config: RunConfig,
    ensemble: EnsembleParams,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The gated ensemble against the mean of the heads' calibrated probabilities and the best
    single head, on validation with intervals over the gate's seeds, and the fusion the model
    keeps (see :func:`qsight_pipeline.inference.fusion.compare_fusions`).

    Returns:
        ``fusion`` (``training_summary["fusion"]``, with the distribution of the gate's weights
        over the test split) and ``fused_evaluation``: ``evaluation`` whose ensemble is the
        chosen fusion, which the calibration, the summary and the report read.
    """
    # lazy: kept out of kedro start-up
    from qsight_pipeline.inference import fusion

    record = fusion.compare_fusions(
        post_cache_model, quantum_training_data, run_config.schedule["ensemble"],
        run_config.trainer_settings(), ensemble, evaluation,
    )
    if "test" in evaluation:
        record["gate_weights"] = {"test": fusion.gate_weight_distribution(evaluation["test"])}
    fused = {split: fusion.with_fusion(result, record["rule"], record.get("head_temperatures", {}))
             for split, result in evaluation.items()}
    return to_plain(record), fused


def calibrate_operating_point(
    evaluation: dict[str, Any], referral: ReferralParams
) -> dict[str, Any]:
    """Temperature scaling and the referral / review thresholds, fitted on validation.

    Returns:
        ``calibration.json`` (see :func:`qsight_pipeline.inference.operating_point.fit_operating_point`).
    """
    # lazy: kept out of kedro start-up
    from qsight_pipeline.inference.operating_point import fit_operating_point

    return to_plain(fit_operating_point(evaluation, referral))


def fit_gate(
    quantum_training_data: dict[str, Any],
    image_cache_train: Any,
    manifest: Any,
    gate: GateParams,
) -> dict[str, Any]:
    """The gradability bounds and the out-of-distribution threshold (``model_info["gates"]``).

    Image-quality bounds from the training split's cached pictures (``image_cache_train``, None
    when gone), the resolution bound from the training split's original files named in the
    ``manifest`` (None when gone), the out-of-distribution detectors from the feature cache's
    training encoder features (the compressed features of a cache written before they were
    stored) with their thresholds on validation's. See
    :func:`qsight_pipeline.inference.gate.fit_gates` and :func:`~qsight_pipeline.inference.gate.ood_splits`.
    """
    # lazy: kept out of kedro start-up
    from qsight_pipeline.inference.gate import fit_gates, ood_splits, original_sizes

    sizes = None
    if manifest is not None and "split" in manifest and "path" in manifest:
        paths = [Path(p) for p in manifest.loc[manifest["split"] == "train", "path"]]
        sizes = original_sizes(p for p in paths if p.is_file()) or None
    fitted = fit_gates(image_cache_train, sizes, ood_splits(quantum_training_data), gate)
    return to_plain(fitted)


def _evaluate_gate(
    checkpoint: dict[str, Any], image_cache_test: Any, gate: GateParams
) -> dict[str, Any] | None:
    # lazy: kept out of kedro start-up
    from qsight_pipeline.inference.gate_eval import evaluate_gate
    from qsight_pipeline.inference.loading import loaded_from_checkpoint

    if image_cache_test is None or not len(image_cache_test):
        logger.warning("The test image cache is gone: the gate's AUROC and pass rates are not measured.")
        return None
    loaded = loaded_from_checkpoint(checkpoint, "cpu")
    result = evaluate_gate(loaded, image_cache_test, limit=gate.evaluation_images)
    logger.info(
        "Gate on the test split: %.1f%% of clean photographs pass; AUROC %s against corrupted "
        "copies (%.1f%% pass), %s against non-fundus pictures (%.1f%% pass).",
        100 * (result["clean"]["pass_rate"] or 0.0),
        _fmt(result["corrupted"]["auroc"]), 100 * result["corrupted"]["pass_rate"],
        _fmt(result["non_fundus"]["auroc"]), 100 * result["non_fundus"]["pass_rate"],
    )
    return to_plain(result)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def join_histories(
    classical_history: list[dict[str, Any]],
    quantum_history: list[dict[str, Any]],
    ensemble_history: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """``stage_histories``: every stage's record, in the order the stages ran (they become
    ``training_summary["stages"]``)."""
    return [*classical_history, *quantum_history, *ensemble_history]


def describe_model(
    post_cache_model: Any,
    quantum_training_data: dict[str, Any],
    calibration: dict[str, Any] | None = None,
    gates: dict[str, Any] | None = None,
    fusion: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``model_info_draft``, what becomes ``model_info.json``: the model, the preprocessing that
    inference must repeat, the operating point (``calibration``, from
    :func:`calibrate_operating_point`), the gate (``gates``, from :func:`fit_gate`) and how the
    heads are fused (``fusion``, from :func:`choose_fusion`: its ``rule``, ``setting`` and
    ``sentence``), which every entry point that grades applies."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.data import feature_cache
    from qsight_pipeline.inference import operating_point
    from qsight_pipeline.training import artifacts

    model_info = operating_point.model_info_with_operating_point(
        artifacts.build_model_info(post_cache_model, feature_cache.cache_metadata(quantum_training_data)),
        post_cache_model.config.image_size,
        calibration,
    )
    if gates:
        model_info["gates"] = gates
    if fusion:
        model_info["fusion"] = {key: fusion[key] for key in ("rule", "setting", "sentence")}
    return model_info


def summarise_training(
    stage_histories: list[dict[str, Any]],
    evaluation: dict[str, Any],
    model_info_draft: dict[str, Any],
    parameters: dict[str, Any],
    calibration: dict[str, Any] | None = None,
    fusion: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``training_summary_draft``: the history, the evaluation (its ensemble the chosen fusion),
    the model, the calibration's report and the gate against its baselines (``fusion``); the
    gate's figures are added by :func:`assemble_training_artifacts`.

    ``parameters`` is only recorded (``config``): the run's parameters, each block that this
    run's nodes take with its defaults filled in (Kedro has typed them; nothing validates again).
    """
    # lazy: kept out of kedro start-up
    from qsight_pipeline.inference import operating_point
    from qsight_pipeline.training import artifacts

    summary = operating_point.summary_with_operating_point(
        artifacts.build_training_summary(
            stage_histories, evaluation, model_info_draft, config=to_plain(parameters)
        ),
        calibration,
    )
    if fusion:
        summary["fusion"] = fusion
    _log_evaluation(summary["evaluation"])
    return summary


def build_checkpoint(
    phase1_classical_model: dict[str, Any],
    post_cache_model: Any,
    quantum_training_data: dict[str, Any],
    run_config: RunConfig,
    model_info_draft: dict[str, Any],
    training_summary_draft: dict[str, Any],
) -> dict[str, Any]:
    """``complete_checkpoint_draft``: every weight, the model's description and the summary, and
    the lineage of the classical model and the feature cache it was trained from."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.training import artifacts

    record = lineage.classical_for_feature_cache(
        phase1_classical_model, quantum_training_data, run_config.settings.output_dir
    )
    checkpoint = artifacts.complete_checkpoint(
        phase1_classical_model, post_cache_model, training_summary_draft, model_info_draft
    )
    checkpoint[lineage.LINEAGE_KEY] = record
    return checkpoint


def assemble_training_artifacts(
    complete_checkpoint_draft: dict[str, Any],
    image_cache_test: Any = None,
    gate: GateParams = GateParams(),  # noqa: B008 - a frozen block
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The guide's artifacts: ``complete_checkpoint``, ``model_info``, ``training_summary``.

    With a fitted gate, ``training_summary["gate"]`` says how it works: its rule and bounds, and
    (when ``gate.evaluate``) its pass rates and AUROC on the test split's pictures
    (``image_cache_test``), measured with the model as saved.
    """
    checkpoint = dict(complete_checkpoint_draft)
    summary = checkpoint["training_summary"]
    gates = checkpoint["model_info"].get("gates")
    if gates:
        summary["gate"] = _gate_summary(gates, checkpoint, image_cache_test, gate)
        checkpoint["training_summary"] = summary  # the embedded copy equals the written one
    return checkpoint, checkpoint["model_info"], summary


def _log_evaluation(evaluation: dict[str, Any]) -> None:
    for split in ("val", "test"):
        ensemble = evaluation[split]["ensemble"]
        logger.info(
            "Ensemble on %s: accuracy %.3f, quadratic weighted kappa %.3f, referable-DR AUC %s",
            split, ensemble["accuracy"], ensemble["quadratic_weighted_kappa"],
            "n/a" if ensemble["referable_auc"] is None else f"{ensemble['referable_auc']:.3f}",
        )


def _gate_summary(
    gates: dict[str, Any], checkpoint: dict[str, Any], image_cache_test: Any, gate: GateParams
) -> dict[str, Any]:
    """``training_summary["gate"]``: the rule, the fitted bounds and threshold, and (with
    ``gate.evaluate``) how the gate does on the test pictures."""
    return {
        "rule": GATE_RULE,
        "ood": {k: gates["ood"].get(k) for k in ("threshold", "pass_rate", "confidence", "rank",
                                                 "guaranteed", "validation_pass_rate", "method",
                                                 "detector", "space", "width")},
        "gradability": {
            "bounds": {n: {k: b.get(k) for k in ("min", "max")} for n, b in gates["gradability"]["bounds"].items()},
            "fitted_on": gates["gradability"]["fitted_on"],
            "quantile": gates["gradability"]["quantile"],
            "margin": gates["gradability"]["margin"],
        },
        "evaluation": _evaluate_gate(checkpoint, image_cache_test, gate) if gate.evaluate else None,
    }


GATE_RULE = (
    "Before a photograph is graded, the gate checks that it is gradable (a round, lit fundus "
    "field covering enough of the frame, neither too dark nor burnt out, evenly enough lit, in "
    "focus, and of enough resolution, by absolute bounds that hold for any fundus camera: "
    "gate.gradability) and that it is like the training photographs (its out-of-distribution "
    "score below a threshold set on the validation photographs so that at least "
    "gate.ood_pass_rate of new photographs like them pass, with probability "
    "gate.ood_confidence). A photograph that fails either check gets no grading: it is "
    "referred for manual grading, with the reason."
)


def draw_report_figures(training_summary: dict[str, Any]) -> dict[str, Any]:
    """The report's figures (``report_figures``), keyed by PNG file name; see
    :func:`qsight_pipeline.reporting.figures.report_figures`."""
    # lazy: kept out of kedro start-up
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
    # lazy: kept out of kedro start-up
    from qsight_pipeline.reporting import html

    return html.render_report_html(
        training_summary, model_info, report_figures, quantum_study_summary,
        quantum_hardware_summary,
    )
