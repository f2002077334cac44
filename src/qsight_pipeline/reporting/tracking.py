"""Flat metric names for experiment trackers (W&B, MLflow), from the documented records.

Kedro-free: the hooks in ``qsight_pipeline.kedro_app.hooks`` feed these the pipeline's history and summary
outputs. The names are the same in both trackers:

- per epoch: ``{stage}/{train|val}/{head}/{loss|accuracy|kappa}``, ``{stage}/{train|val}/loss``,
  ``{stage}/ensemble_weight/{head}``, ``{stage}/uncertainty/{entropy|disagreement}``,
  ``{stage}/latency_ms/{component}/{mean|p50|p95}``, ``{stage}/learning_rate``, ``{stage}/seconds``;
- per stage: ``stages/{stage}/{epochs_run|best_epoch|stopped_early}``,
  ``stages/{stage}/best_val/{head}/{loss|accuracy|kappa}``;
- final evaluation: ``eval/{val|test}/{head}/{metric}`` with the metrics of
  ``training.metrics.grading_metrics`` (``recall_grade_{g}`` for per-grade recall);
- latency: ``latency_ms/{component}/{p50|p95|mean|count}``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from qsight_pipeline.reporting.metric_list import LATENCY_STATS, REPORT_METRICS

EPOCH_HEAD_METRICS: tuple[str, ...] = ("loss", "accuracy", "kappa")
EVALUATION_METRICS: tuple[str, ...] = tuple(key for key, _ in REPORT_METRICS)
RECORD_SPLITS: tuple[str, ...] = ("train", "val")


def _number(value: Any) -> float | None:
    if isinstance(value, numbers.Real) and math.isfinite(value):  # bool, int, float, numpy
        return float(value)
    return None


def _put(metrics: dict[str, float], key: str, value: Any) -> None:
    number = _number(value)
    if number is not None:
        metrics[key] = number


def epoch_metrics(record: dict[str, Any]) -> dict[str, float]:
    """Scalars of one epoch record, named ``{stage}/...`` (masked heads are simply absent)."""
    stage = record.get("stage", "stage")
    metrics: dict[str, float] = {}
    for split in RECORD_SPLITS:
        split_record = record.get(split) or {}
        _put(metrics, f"{stage}/{split}/loss", split_record.get("loss"))
        for model, values in split_record.items():
            if isinstance(values, dict):
                for name in EPOCH_HEAD_METRICS:
                    _put(metrics, f"{stage}/{split}/{model}/{name}", values.get(name))
    for head, weight in (record.get("ensemble_weights") or {}).items():
        _put(metrics, f"{stage}/ensemble_weight/{head}", weight)
    for name, value in (record.get("uncertainty") or {}).items():
        _put(metrics, f"{stage}/uncertainty/{name}", value)
    for component, stats in (record.get("latency_ms") or {}).items():
        for stat in ("mean", "p50", "p95"):
            _put(metrics, f"{stage}/latency_ms/{component}/{stat}", (stats or {}).get(stat))
    _put(metrics, f"{stage}/learning_rate", record.get("learning_rate"))
    _put(metrics, f"{stage}/seconds", record.get("seconds"))
    return metrics


def stage_summary_metrics(stage: dict[str, Any]) -> dict[str, float]:
    """Scalars of one stage summary: epochs run, best epoch, early stop, best val metrics."""
    name = stage.get("name", "stage")
    metrics: dict[str, float] = {}
    for field in ("epochs_run", "best_epoch", "stopped_early"):
        _put(metrics, f"stages/{name}/{field}", stage.get(field))
    for model, values in (stage.get("best_val") or {}).items():
        if isinstance(values, dict):
            for metric in EPOCH_HEAD_METRICS:
                _put(metrics, f"stages/{name}/best_val/{model}/{metric}", values.get(metric))
    return metrics


def evaluation_metrics(training_summary: dict[str, Any]) -> dict[str, float]:
    """The final val/test metrics per head and ensemble, as ``eval/{split}/{head}/{metric}``."""
    metrics: dict[str, float] = {}
    for split, by_model in (training_summary.get("evaluation") or {}).items():
        for model, values in (by_model or {}).items():
            for metric in EVALUATION_METRICS:
                _put(metrics, f"eval/{split}/{model}/{metric}", values.get(metric))
            _put(metrics, f"eval/{split}/{model}/n", values.get("n"))
            for grade, recall in enumerate(values.get("per_grade_recall") or []):
                _put(metrics, f"eval/{split}/{model}/recall_grade_{grade}", recall)
    return metrics


def latency_metrics(training_summary: dict[str, Any]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for component, stats in (training_summary.get("latency_ms") or {}).items():
        for stat in LATENCY_STATS:
            _put(metrics, f"latency_ms/{component}/{stat}", (stats or {}).get(stat))
    return metrics


def summary_metrics(training_summary: dict[str, Any]) -> dict[str, float]:
    """Everything final in a training summary: stage summaries, evaluation, latency and the
    gate's test-split figures (``gate/<clean|corrupted|non_fundus>/<pass_rate|auroc>``)."""
    metrics: dict[str, float] = {}
    for stage in training_summary.get("stages") or []:
        metrics.update(stage_summary_metrics(stage))
    metrics.update(evaluation_metrics(training_summary))
    metrics.update(latency_metrics(training_summary))
    gate = (training_summary.get("gate") or {}).get("evaluation") or {}
    for family in ("clean", "corrupted", "non_fundus"):
        for metric in ("pass_rate", "auroc"):
            _put(metrics, f"gate/{family}/{metric}", (gate.get(family) or {}).get(metric))
    best = training_summary.get("best_validation") or {}
    for model, values in (best.get("metrics") or {}).items():
        if isinstance(values, dict):
            for metric in EPOCH_HEAD_METRICS:
                _put(metrics, f"best_validation/{model}/{metric}", values.get(metric))
    return metrics


def stage_summaries(history_output: Any) -> list[dict[str, Any]]:
    """Normalise a ``*_history`` output to a list of stage summaries.

    Accepts the documented list of stage summaries (each with a ``history`` list), a single
    stage summary, or a bare list of epoch records (grouped by their ``stage`` field).
    """
    if isinstance(history_output, dict):
        history_output = history_output.get("stages", [history_output])
    stages: list[dict[str, Any]] = []
    loose: dict[str, list[dict[str, Any]]] = {}
    for item in history_output or []:
        if not isinstance(item, dict):
            continue
        if "history" in item:
            stages.append(item)
        elif "epoch" in item:
            loose.setdefault(str(item.get("stage", "stage")), []).append(item)
    stages.extend({"name": name, "history": records} for name, records in loose.items())
    return stages


def epoch_records(stages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """All epoch records of the stages, in order, each with its ``stage`` field filled in."""
    records = []
    for stage in stages:
        for record in stage.get("history") or []:
            records.append({"stage": stage.get("name", "stage"), **record})
    return records

