"""Matplotlib figures of a training run, drawn from ``training_summary`` alone.

Figures are built with :class:`matplotlib.figure.Figure` directly (not ``pyplot``), so drawing
them needs no display, keeps no global state and is safe in any Kedro runner.

Keys of the returned dict are file names (``confusion_test_ensemble.png``): kedro-datasets'
``MatplotlibDataset`` saves a dict of figures as one file per key inside its folder.
"""

from __future__ import annotations

import base64
import io
import logging
import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from qsight_pipeline.constants import ENSEMBLE, GRADE_NAMES, HEADS, NUM_GRADES
from qsight_pipeline.models.fusion_rules import GATED
from qsight_pipeline.reporting.calibration import calibration_figures

logger = logging.getLogger(__name__)

# Heads and the ensemble, in the order every table and figure uses.
REPORTED_MODELS: tuple[str, ...] = (*HEADS, ENSEMBLE)
MODEL_LABELS = {
    "head_a": "Head A (classical)",
    "head_b": "Head B (classical)",
    "quantum_head": "Quantum head",
    "ensemble": "Ensemble",
}
MODEL_COLOURS = {
    "head_a": "#1f77b4",
    "head_b": "#ff7f0e",
    "quantum_head": "#9467bd",
    "ensemble": "#2ca02c",
}
EVALUATION_SPLITS: tuple[str, ...] = ("val", "test")


def present_models(metrics_by_model: dict[str, Any]) -> list[str]:
    """The heads (and ensemble) present in ``metrics_by_model``, in the report's fixed order."""
    return [name for name in REPORTED_MODELS if name in metrics_by_model]


def confusion_figure(matrix: Iterable[Iterable[int]], title: str) -> Figure:
    """Confusion matrix with true grade on rows and predicted grade on columns, clinical order.

    Cells show counts; the colour is the share of the row (the recall of that true grade), so a
    rare grade's errors are as visible as the common grade's.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.shape != (NUM_GRADES, NUM_GRADES):
        raise ValueError(f"confusion matrix must be {NUM_GRADES}x{NUM_GRADES}, got {counts.shape}")
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)

    figure = Figure(figsize=(5.6, 4.8), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of true grade")
    ticks = np.arange(NUM_GRADES)
    axes.set_xticks(ticks, labels=GRADE_NAMES, rotation=30, ha="right")
    axes.set_yticks(ticks, labels=GRADE_NAMES)
    axes.set_xlabel("Predicted grade")
    axes.set_ylabel("True grade")
    axes.set_title(title)
    for row in range(NUM_GRADES):
        for col in range(NUM_GRADES):
            colour = "white" if shares[row, col] > 0.6 else "black"
            axes.text(col, row, str(counts[row, col]), ha="center", va="center", color=colour)
    return figure


def training_curves_figure(stage: dict[str, Any]) -> Figure:
    """Loss, accuracy and kappa per epoch of one stage: solid lines val, dashed lines train."""
    history = stage.get("history") or []
    epochs = [record["epoch"] for record in history]
    figure = Figure(figsize=(12, 3.8), layout="constrained")
    panels = figure.subplots(1, 3)
    for axes, metric, label in zip(
        panels, ("loss", "accuracy", "kappa"), ("Loss", "Accuracy", "Quadratic weighted kappa"),
        strict=True,
    ):
        for model in REPORTED_MODELS:
            for split, style in (("train", "--"), ("val", "-")):
                values = [
                    (record.get(split) or {}).get(model, {}).get(metric) for record in history
                ]
                points = [(e, v) for e, v in zip(epochs, values, strict=True) if v is not None]
                if not points:
                    continue
                xs, ys = zip(*points, strict=True)
                axes.plot(
                    xs, ys, style, marker="o", markersize=3, color=MODEL_COLOURS[model],
                    label=f"{MODEL_LABELS[model]} ({split})",
                )
        axes.set_title(label)
        axes.set_xlabel("Epoch")
        axes.grid(alpha=0.3)
        if len(epochs) < 12:
            axes.set_xticks(epochs)
    handles, labels = panels[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside right center", fontsize="small")
    figure.suptitle(f"Stage '{stage.get('name')}': training curves (dashed = train, solid = val)")
    return figure


def _epoch_sequence(training_summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (stage.get("name", "?"), record)
        for stage in training_summary.get("stages", [])
        for record in stage.get("history") or []
    ]


def _mark_stage_boundaries(axes, sequence: list[tuple[str, dict[str, Any]]]) -> None:
    previous = None
    for index, (stage_name, _) in enumerate(sequence, start=1):
        if stage_name != previous:
            axes.axvline(index - 0.5, color="grey", linewidth=0.8, linestyle=":")
            axes.text(index - 0.4, 1.0, stage_name, transform=axes.get_xaxis_transform(),
                      va="top", fontsize="small", color="dimgrey")
            previous = stage_name


def ensemble_weights_figure(training_summary: dict[str, Any]) -> Figure:
    """Average gate weight of each head over all epochs of all stages (stacked, sums to 1)."""
    sequence = _epoch_sequence(training_summary)
    xs = np.arange(1, len(sequence) + 1)
    figure = Figure(figsize=(9, 3.8), layout="constrained")
    axes = figure.add_subplot()
    weights = {
        head: [float((record.get("ensemble_weights") or {}).get(head, 0.0)) for _, record in sequence]
        for head in HEADS
    }
    shown = [head for head in HEADS if any(weights[head])]
    if shown:
        axes.stackplot(
            xs, *[weights[head] for head in shown],
            labels=[MODEL_LABELS[head] for head in shown],
            colors=[MODEL_COLOURS[head] for head in shown], alpha=0.85,
        )
        axes.legend(loc="lower left", fontsize="small")
    _mark_stage_boundaries(axes, sequence)
    axes.set_ylim(0, 1)
    axes.set_xlabel("Epoch (all stages, in order)")
    axes.set_ylabel("Average gate weight (val)")
    axes.set_title("Ensemble weights over the epochs")
    return figure


def uncertainty_figure(training_summary: dict[str, Any]) -> Figure:
    """Predictive entropy and head disagreement (validation averages) over all epochs."""
    sequence = _epoch_sequence(training_summary)
    xs = np.arange(1, len(sequence) + 1)
    figure = Figure(figsize=(9, 3.4), layout="constrained")
    axes = figure.add_subplot()
    for key, colour in (("entropy", "#d62728"), ("disagreement", "#8c564b")):
        ys = [(record.get("uncertainty") or {}).get(key) for _, record in sequence]
        points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
        if points:
            px, py = zip(*points, strict=True)
            axes.plot(px, py, marker="o", markersize=3, color=colour, label=key)
    _mark_stage_boundaries(axes, sequence)
    axes.set_xlabel("Epoch (all stages, in order)")
    axes.set_ylabel("nats")
    axes.set_title("Uncertainty: predictive entropy and head disagreement")
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small")
    return figure


def gate_weights_figure(distribution: dict[str, Any], rule: str) -> Figure:
    """How the gate weighs each head over the test photographs: one histogram per head."""
    edges = np.asarray(distribution["bins"], dtype=np.float64)
    figure = Figure(figsize=(6.4, 3.6), layout="constrained")
    axes = figure.add_subplot()
    for head, counts in distribution["counts"].items():
        axes.stairs(counts, edges, label=f"{MODEL_LABELS[head]} (mean "
                    f"{distribution['mean'].get(head, 0.0):.2f})", color=MODEL_COLOURS[head],
                    linewidth=1.8)
    axes.set_xlim(0, 1)
    axes.set_xlabel("Gate weight")
    axes.set_ylabel("Test photographs")
    used = "the model fuses by it" if rule == GATED else "unused: the model fuses by the mean"
    axes.set_title(f"Gate weights over {distribution['images']} test photographs ({used})",
                   fontsize="medium")
    axes.legend(fontsize="small")
    return figure


def latency_figure(component: str, samples_ms: Iterable[float]) -> Figure:
    """Histogram of per-batch latency of one model component, with p50 and p95 marked."""
    values = np.asarray(list(samples_ms), dtype=np.float64)
    figure = Figure(figsize=(5.6, 3.6), layout="constrained")
    axes = figure.add_subplot()
    axes.hist(values, bins=min(40, max(5, values.size // 5)), color="#17becf", edgecolor="white")
    for quantile, style in ((50, "-"), (95, "--")):
        value = float(np.percentile(values, quantile))
        axes.axvline(value, color="black", linestyle=style, linewidth=1,
                     label=f"p{quantile} = {value:.2f} ms")
    axes.set_xlabel("Milliseconds per batch")
    axes.set_ylabel("Batches")
    axes.set_title(f"Latency: {component} ({values.size} batches)")
    axes.legend(fontsize="small")
    return figure


def report_figures(training_summary: dict[str, Any]) -> dict[str, Figure]:
    """Every figure of the report, keyed by file name.

    Args:
        training_summary: the ``training_summary.json`` dict (docs/architecture.md).

    Returns:
        ``confusion_{val|test}_{head}.png`` for each head and the ensemble present in the
        evaluation, ``training_curves_{stage}.png`` for every stage, ``ensemble_weights.png`` and
        ``uncertainty.png`` when there are epochs, ``gate_weights_test.png`` (the gate's weights
        over the test split) and ``latency_{component}.png`` for each component with latency
        samples.
    """
    figures: dict[str, Figure] = {}
    evaluation = training_summary.get("evaluation") or {}
    for split in EVALUATION_SPLITS:
        by_model = evaluation.get(split) or {}
        for model in present_models(by_model):
            matrix = by_model[model].get("confusion_matrix")
            if matrix is None:
                continue
            figures[f"confusion_{split}_{model}.png"] = confusion_figure(
                matrix, f"{MODEL_LABELS[model]}: {split} set"
            )
    for stage in training_summary.get("stages") or []:
        if stage.get("history"):
            figures[f"training_curves_{stage['name']}.png"] = training_curves_figure(stage)
    if _epoch_sequence(training_summary):
        figures["ensemble_weights.png"] = ensemble_weights_figure(training_summary)
        figures["uncertainty.png"] = uncertainty_figure(training_summary)
    fusion = training_summary.get("fusion") or {}
    test_weights = (fusion.get("gate_weights") or {}).get("test")
    if test_weights and test_weights["images"]:
        figures["gate_weights_test.png"] = gate_weights_figure(test_weights, fusion["rule"])
    for component, samples in (training_summary.get("latency_samples_ms") or {}).items():
        if samples:
            figures[f"latency_{component}.png"] = latency_figure(component, samples)

    figures.update(calibration_figures(training_summary))
    if not training_summary.get("latency_samples_ms"):
        logger.info("training_summary has no latency_samples_ms; the report has no latency histograms")
    return figures


# A figure is drawn once per resolution: the figures folder, the HTML page, MLflow and W&B all
# take the same PNG bytes (drawing with constrained layout costs ~0.3 s per figure). Figures are
# never changed after a node returns them; the cache forgets a figure when it is collected.
_PNG_CACHE: weakref.WeakKeyDictionary[Figure, dict[int, bytes]] = weakref.WeakKeyDictionary()


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (for the figures folder, trackers and embedding)."""
    drawn = _PNG_CACHE.setdefault(figure, {})
    if dpi not in drawn:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
        drawn[dpi] = buffer.getvalue()
    return drawn[dpi]


def figure_png_base64(figure: Figure, dpi: int = 100) -> str:
    """The figure as a base64-encoded PNG (for embedding in HTML)."""
    return base64.b64encode(figure_png(figure, dpi)).decode("ascii")
