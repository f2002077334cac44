"""One self-contained HTML report of a training run (figures embedded, no network needed).

Every number on the page is written by :func:`format_metric` and sits in an element with an ``id``
and ``data-*`` attributes naming where it comes from in ``training_summary.json``, so a test (or a
script) can check the page against the file.
"""

from __future__ import annotations

import datetime as _dt
import html
import logging
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from qsight_pipeline.constants import GRADE_NAMES, REFERABLE_GRADE
from qsight_pipeline.hardware.summary import figures as hardware_figures
from qsight_pipeline.models.fusion_rules import GATED, MEAN
from qsight_pipeline.reporting.calibration import calibration_tables_html
from qsight_pipeline.reporting.figures import (
    EVALUATION_SPLITS,
    MODEL_LABELS,
    figure_png_base64,
    present_models,
)
from qsight_pipeline.reporting.metric_list import LATENCY_STATS, REFERABLE_PREFIX, REPORT_METRICS
from qsight_pipeline.study.figures import study_figures
from qsight_pipeline.study.summary import best_by_validation

logger = logging.getLogger(__name__)

# Metric columns of the metrics tables: (key in grading_metrics, column header), the referable-DR
# ones under a header of their own.
SCALAR_METRICS: tuple[tuple[str, str], ...] = tuple(
    (key, label) for key, label in REPORT_METRICS if not key.startswith(REFERABLE_PREFIX)
)
REFERABLE_METRICS: tuple[tuple[str, str], ...] = tuple(
    (key, label) for key, label in REPORT_METRICS if key.startswith(REFERABLE_PREFIX)
)
DECIMALS = 4
MISSING = "n/a"

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1200px; padding: 1.5em; color: #1d2733; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #dde3ea; padding-bottom: 0.2em;
     margin-top: 2em; }
.subtitle { color: #5a6877; margin-top: 0; }
.howto { background: #f3f7fb; border-left: 4px solid #2f6fb0; padding: 0.6em 1.2em; }
.howto dt { font-weight: 600; margin-top: 0.5em; } .howto dd { margin-left: 1.2em; }
table { border-collapse: collapse; margin: 0.8em 0 1.2em; font-size: 0.92em; }
th, td { border: 1px solid #cfd8e3; padding: 0.3em 0.6em; text-align: right; }
th { background: #eef2f7; } td.name, th.name { text-align: left; }
tr.ensemble td { font-weight: 600; background: #f4fbf4; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figure img { max-width: 100%; border: 1px solid #e3e8ee; }
figcaption { font-size: 0.85em; color: #5a6877; }
.note { font-size: 0.88em; color: #5a6877; }
"""


def format_metric(value: Any) -> str:
    """How the report prints a number: 4 decimals for floats, integers as is, ``n/a`` for None."""
    if value is None:
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):  # float, numpy floats
        return f"{float(value):.{DECIMALS}f}"
    return str(value)


def metric_cell_id(split: str, model: str, metric: str) -> str:
    """Element id of one metric on the page, e.g. ``metric-test-ensemble-macro_f1``.

    Per-grade recall uses ``metric = f"recall_{grade}"`` (grade 0..4).
    """
    return f"metric-{split}-{model}-{metric}"


def latency_cell_id(component: str, stat: str) -> str:
    return f"latency-{component}-{stat}"


def stage_cell_id(stage: str, field: str) -> str:
    return f"stage-{stage}-{field}"


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number_cell(value: Any, element_id: str, **data: str) -> str:
    attributes = "".join(f' data-{key}="{_esc(val)}"' for key, val in data.items())
    raw = "" if value is None else f' data-value="{_esc(repr(value))}"'
    return f'<td id="{_esc(element_id)}"{attributes}{raw}>{_esc(format_metric(value))}</td>'


def _figure_html(name: str, figure: Figure, caption: str) -> str:
    encoded = figure_png_base64(figure)
    return (
        f'<figure id="figure-{_esc(name)}"><img alt="{_esc(caption)}" '
        f'src="data:image/png;base64,{encoded}"><figcaption>{_esc(caption)}</figcaption></figure>'
    )


def _how_to_read() -> str:
    referable = ", ".join(GRADE_NAMES[REFERABLE_GRADE:])
    items = [
        ("Grades", "0 No DR, 1 Mild, 2 Moderate, 3 Severe, 4 Proliferative, always in this "
                   "clinical order. Tables and matrices never sort them alphabetically."),
        ("Heads and ensemble", "Two classical heads (A, B) and a quantum head read the same "
                               "compressed image features; the ensemble fuses them, by a learned "
                               "gate that weights them per image or by the mean of their "
                               "calibrated probabilities, whichever wins on validation. The "
                               "ensemble is the model's answer."),
        ("Validation vs test", "Validation images chose the best epoch of each stage, so "
                               "validation numbers are slightly optimistic. The test split was "
                               "never used for any choice: quote the test numbers."),
        ("Accuracy", "Share of images graded exactly right. With many grade-0 images it can "
                     "look good while severe grades are missed; read it with the recalls."),
        ("QWK (quadratic weighted kappa)", "Agreement with the reference grade beyond chance, "
                                           "penalising a prediction more the further it is from "
                                           "the true grade: 1 is perfect, 0 is chance level."),
        ("Macro-F1", "F1 score averaged over the five grades, each grade counting equally "
                     "however rare it is."),
        ("Recall per grade", "Of the images truly at this grade, the share graded correctly. "
                             f"{MISSING} means the grade does not occur in that split."),
        ("Referable DR", f"Grade {REFERABLE_GRADE} or worse ({referable}). Sensitivity: share "
                         "of referable images flagged as referable; specificity: share of "
                         "non-referable images not flagged; AUC: how well the summed "
                         f"probability of grades {REFERABLE_GRADE}-4 ranks referable above "
                         "non-referable images (0.5 is chance)."),
        ("Confusion matrices", "Rows are the true grade, columns the predicted grade; a cell's "
                               "number is a count of images, its colour the share of its row. A "
                               "perfect model fills the diagonal only."),
        ("Ensemble weights and uncertainty", "How much the gate relies on each head, and "
                                             "how unsure the ensemble is (entropy) and how much "
                                             "the heads disagree, averaged over validation "
                                             "images at each epoch."),
        ("Latency", "Milliseconds per batch for each part of the model during training and "
                    "evaluation, not per image."),
    ]
    body = "".join(f"<dt>{_esc(term)}</dt><dd>{_esc(text)}</dd>" for term, text in items)
    return (
        '<section class="howto" id="how-to-read"><h2>How to read this report</h2>'
        f"<dl>{body}</dl><p class=\"note\">A research prototype's evaluation on its own data "
        "split, not a clinical validation.</p></section>"
    )


def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        rows: list[tuple[str, Any]] = []
        for key, item in value.items():
            rows.extend(_flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return rows
    return [(prefix, value)]


def _key_value_table(mapping: dict[str, Any], table_id: str) -> str:
    rows = "".join(
        f'<tr><td class="name">{_esc(key)}</td><td class="name">'
        f"{_esc(', '.join(map(str, value)) if isinstance(value, list | tuple) else format_metric(value))}"
        "</td></tr>"
        for key, value in _flatten("", mapping)
    )
    return f'<table id="{_esc(table_id)}"><tbody>{rows}</tbody></table>'


def _metrics_table(split: str, by_model: dict[str, Any]) -> str:
    header = (
        '<tr><th class="name" rowspan="2">Model</th><th rowspan="2">n</th>'
        + "".join(f'<th rowspan="2">{_esc(label)}</th>' for _, label in SCALAR_METRICS)
        + f'<th colspan="{len(GRADE_NAMES)}">Recall per grade</th>'
        + f'<th colspan="{len(REFERABLE_METRICS)}">Referable DR (grade &ge; {REFERABLE_GRADE})</th></tr><tr>'
        + "".join(f"<th>{grade}: {_esc(name)}</th>" for grade, name in enumerate(GRADE_NAMES))
        + "".join(f"<th>{_esc(label)}</th>" for _, label in REFERABLE_METRICS)
        + "</tr>"
    )
    rows = []
    for model in present_models(by_model):
        metrics = by_model[model]
        cells = [_number_cell(metrics.get("n"), metric_cell_id(split, model, "n"),
                              split=split, model=model, metric="n")]
        for key, _ in SCALAR_METRICS:
            cells.append(_number_cell(metrics.get(key), metric_cell_id(split, model, key),
                                      split=split, model=model, metric=key))
        recalls = metrics.get("per_grade_recall") or [None] * len(GRADE_NAMES)
        for grade, value in enumerate(recalls):
            cells.append(_number_cell(value, metric_cell_id(split, model, f"recall_{grade}"),
                                      split=split, model=model, metric="per_grade_recall",
                                      grade=str(grade)))
        for key, _ in REFERABLE_METRICS:
            cells.append(_number_cell(metrics.get(key), metric_cell_id(split, model, key),
                                      split=split, model=model, metric=key))
        css = ' class="ensemble"' if model == "ensemble" else ""
        rows.append(f'<tr{css}><td class="name">{_esc(MODEL_LABELS[model])}</td>{"".join(cells)}</tr>')
    return (
        f'<table id="metrics-{_esc(split)}" class="metrics"><thead>{header}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _stages_table(stages: list[dict[str, Any]]) -> str:
    rows = []
    for stage in stages:
        name = str(stage.get("name"))
        best_val = (stage.get("best_val") or {}).get("ensemble") or {}
        cells = [
            _number_cell(stage.get("epochs_run"), stage_cell_id(name, "epochs_run")),
            _number_cell(stage.get("best_epoch"), stage_cell_id(name, "best_epoch")),
            _number_cell(bool(stage.get("stopped_early")), stage_cell_id(name, "stopped_early")),
            _number_cell(best_val.get("kappa"), stage_cell_id(name, "best_val_ensemble_kappa")),
            _number_cell(best_val.get("accuracy"), stage_cell_id(name, "best_val_ensemble_accuracy")),
            _number_cell(best_val.get("loss"), stage_cell_id(name, "best_val_ensemble_loss")),
        ]
        rows.append(f'<tr><td class="name">{_esc(name)}</td>{"".join(cells)}</tr>')
    header = (
        '<tr><th class="name">Stage</th><th>Epochs run</th><th>Best epoch</th>'
        "<th>Stopped early</th><th>Best val ensemble kappa</th><th>accuracy</th><th>loss</th></tr>"
    )
    return f'<table id="stages"><thead>{header}</thead><tbody>{"".join(rows)}</tbody></table>'


def _latency_table(latency: dict[str, Any]) -> str:
    header = '<tr><th class="name">Component</th>' + "".join(
        f"<th>{_esc(stat)}{'' if stat == 'count' else ' (ms)'}</th>" for stat in LATENCY_STATS
    ) + "</tr>"
    rows = "".join(
        f'<tr><td class="name">{_esc(component)}</td>'
        + "".join(
            _number_cell(stats.get(stat), latency_cell_id(component, stat),
                         component=component, stat=stat)
            for stat in LATENCY_STATS
        )
        + "</tr>"
        for component, stats in latency.items()
    )
    return f'<table id="latency"><thead>{header}</thead><tbody>{rows}</tbody></table>'


class _Figures:
    """The report's figures, each placed once: ``take(prefix, caption)`` embeds those whose name
    starts with ``prefix`` and were not placed yet."""

    def __init__(self, figures: dict[str, Figure] | None) -> None:
        self.figures = dict(figures or {})
        self.used: set[str] = set()

    def take(self, prefix: str, caption: Callable[[str], str]) -> str:
        parts = []
        for name in [n for n in self.figures if n.startswith(prefix) and n not in self.used]:
            self.used.add(name)
            parts.append(_figure_html(name, self.figures[name], caption(name)))
        return f'<div class="figures">{"".join(parts)}</div>' if parts else ""

    def leftovers(self) -> list[str]:
        return [name for name in self.figures if name not in self.used]


def render_report_html(
    training_summary: dict[str, Any],
    model_info: dict[str, Any],
    figures: dict[str, Figure],
    quantum_study_summary: dict[str, Any] | None = None,
    quantum_hardware_summary: dict[str, Any] | None = None,
) -> str:
    """The report as one HTML page that needs nothing but a browser.

    Args:
        training_summary: the ``training_summary.json`` dict (docs/architecture.md).
        model_info: the ``model_info.json`` dict (encoder, quantum configuration, classes).
        figures: the output of :func:`qsight_pipeline.reporting.figures.report_figures`;
            embedded as base64 PNG images.
        quantum_study_summary: the quantum study's summary, when one exists: adds its section.
        quantum_hardware_summary: the quantum_hardware summary, when one exists: its section.

    Returns:
        The HTML text (UTF-8), with a metrics table per split (val, test) holding a row per head
        and the ensemble, stage, latency and configuration tables, and every figure.
    """
    placed = _Figures(figures)
    sections = [
        _how_to_read(),
        *_evaluation_sections(training_summary.get("evaluation") or {}, placed),
        _fusion_section(training_summary.get("fusion"), placed),
        _calibration_section(training_summary.get("calibration"), placed),
        gate_section_html(training_summary["gate"]) if training_summary.get("gate") else "",
        _training_section(training_summary.get("stages") or [], placed),
        _latency_section(training_summary.get("latency_ms") or {}, placed),
    ]
    if placed.leftovers():
        sections.append('<section id="other-figures"><h2>Other figures</h2>'
                        + placed.take("", lambda n: n) + "</section>")
    if quantum_study_summary:
        sections.append(study_section_html(quantum_study_summary))
    if quantum_hardware_summary:
        sections.append(hardware_section_html(quantum_hardware_summary))
    sections.append(_configuration_section(training_summary, model_info))
    logger.info("Rendered the report with %d figures", len(placed.figures))
    return _page(_headline(training_summary.get("best_validation") or {}), sections)


def _headline(best: dict[str, Any]) -> str:
    if not best:
        return "No validation snapshot in this summary."
    best_kappa = ((best.get("metrics") or {}).get("ensemble") or {}).get("kappa")
    return (
        f"Best validation: stage <b>{_esc(best.get('stage'))}</b>, epoch "
        f"<b>{_esc(best.get('epoch'))}</b>, ensemble kappa "
        f'<b id="best-validation-kappa">{_esc(format_metric(best_kappa))}</b>.'
    )


def _evaluation_sections(evaluation: dict[str, Any], placed: _Figures) -> list[str]:
    """A metrics table and the confusion matrices per split."""
    if not evaluation:
        return ['<section id="evaluation-missing"><h2>Evaluation</h2><p>'
                "This summary has no evaluation on val/test.</p></section>"]
    sections = []
    for split in EVALUATION_SPLITS:
        by_model = evaluation.get(split)
        if not by_model:
            continue
        title = "Test set (held out)" if split == "test" else "Validation set"
        sections.append(
            f'<section id="evaluation-{_esc(split)}"><h2>{title}: metrics</h2>'
            f"{_metrics_table(split, by_model)}"
            f"<h3>Confusion matrices ({_esc(split)})</h3>"
            + placed.take(f"confusion_{split}_", lambda n: n.removesuffix(".png").replace("_", " "))
            + "</section>"
        )
    return sections


def _fusion_section(fusion: dict[str, Any] | None, placed: _Figures) -> str:
    """The gated ensemble against the mean of the heads and each head: the sentence, the QWK
    table (validation chose, test quoted) and the gate's weights over the test split."""
    if not fusion or "validation" not in fusion:
        return ""
    val, test, seeds = fusion["validation"], fusion.get("test") or {}, len(fusion["seeds"])
    rows = [(GATED, "Gated ensemble", _interval_text(val[GATED]),
             _interval_text(test[GATED]) if test else MISSING),
            (MEAN, "Mean of the heads' calibrated probabilities", format_metric(val[MEAN]),
             format_metric(test.get(MEAN)))]
    rows += [(head, MODEL_LABELS[head], format_metric(value),
              format_metric((test.get("heads") or {}).get(head)))
             for head, value in val["heads"].items()]
    body = "".join(
        f'<tr id="fusion-{_esc(key)}"><td class="name">{_esc(label)}'
        f'{" (best single head)" if key == fusion["best_head"] else ""}</td>'
        f"<td>{_esc(v)}</td><td>{_esc(t)}</td></tr>"
        for key, label, v, t in rows
    )
    difference = fusion["gate_vs_mean"]
    return (
        '<section id="fusion"><h2>Ensemble: the gate against its baselines</h2>'
        f'<p id="fusion-sentence"><b>{_esc(fusion["sentence"])}</b></p>'
        f"<p>The gate was fitted {seeds} time{'s' if seeds > 1 else ''} on the frozen heads, each "
        "from a fresh start (seeds from <code>run.seed</code>; the first is the model's own); "
        "the mean and the heads do not depend on that seed. Gate minus mean, paired by seed: "
        f"{_esc(_interval_text(difference))} ({_esc(difference['verdict'])}). The fusion was "
        "chosen on validation; the test column is quoted, never used for a choice.</p>"
        '<table id="fusion-comparison"><thead><tr><th class="name">fusion</th><th>validation '
        f"QWK, mean [{fusion.get('confidence', 0.95):.0%} CI]</th><th>test QWK</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
        + placed.take("gate_weights", lambda n: "Gate weights per head over the test split")
        + "</section>"
    )


def _calibration_section(calibration: dict[str, Any] | None, placed: _Figures) -> str:
    if not calibration:
        return ""

    return (
        '<section id="calibration"><h2>Calibration and the referral operating point</h2>'
        + calibration_tables_html(calibration)
        + placed.take("referral_roc", lambda n: "Test ROC of P(grade >= 2), operating point marked")
        + placed.take("calibration_reliability",
                      lambda n: "Reliability of the ensemble before and after temperature scaling")
        + "</section>"
    )


def _training_section(stages: list[dict[str, Any]], placed: _Figures) -> str:
    return (
        '<section id="training"><h2>Training stages</h2>'
        + _stages_table(stages)
        + placed.take("training_curves_", lambda n: f"Training curves, stage {n[16:-4]}")
        + "<h3>Ensemble weights and uncertainty</h3>"
        + placed.take("ensemble_weights", lambda n: "Average ensemble gate weight per head, per epoch")
        + placed.take("uncertainty", lambda n: "Validation entropy and head disagreement, per epoch")
        + "</section>"
    )


def _latency_section(latency: dict[str, Any], placed: _Figures) -> str:
    return (
        '<section id="latency-section"><h2>Latency</h2>'
        + (_latency_table(latency) if latency else "<p>No latency was recorded.</p>")
        + placed.take("latency_", lambda n: f"Per-batch latency: {n[8:-4]}")
        + "</section>"
    )


def _configuration_section(training_summary: dict[str, Any], model_info: dict[str, Any]) -> str:
    return (
        '<section id="configuration"><h2>Model and configuration</h2><h3>Model</h3>'
        + _key_value_table(_without_matrices(model_info or {}), "model-info")
        + "<h3>Quantum head</h3>"
        + _key_value_table(training_summary.get("quantum") or {}, "quantum-config")
        + "<h3>Run configuration</h3>"
        + _key_value_table(training_summary.get("config") or {}, "run-config")
        + "</section>"
    )


def _page(headline: str, sections: list[str]) -> str:
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>QSight training report</title><style>{_STYLE}</style></head><body>"
        "<h1>QSight: diabetic-retinopathy grading report</h1>"
        f'<p class="subtitle">Hybrid classical + quantum grader. Generated {generated}. '
        f"{headline}</p>"
        + "".join(sections)
        + "</body></html>\n"
    )


# The feature space the gate's out-of-distribution score reads (gates["ood"]["space"]); a gate
# saved before the space was recorded scored the compressed features.
_SPACE_WORDS = {"encoder": "encoder's pooled features", "compressed": "compressed features"}


def _without_matrices(model_info: dict[str, Any]) -> dict[str, Any]:
    """``model_info`` without the detectors' fitted arrays (numbers, not reading)."""
    gates = model_info.get("gates")
    if not gates or not gates.get("ood"):
        return model_info
    ood = {k: v for k, v in gates["ood"].items()
           if k not in ("mean", "precision", "detectors", "projection")}
    return {**model_info, "gates": {**gates, "ood": ood}}


def _ood_promise(ood: dict[str, Any]) -> str:
    """What the split-conformal threshold promises about new photographs, in words."""
    if ood.get("rank") is None or ood.get("pass_rate") is None:
        return ""
    share = _share(ood["pass_rate"])
    if ood.get("confidence") is None:
        return f"; at least {share} of new in-distribution photographs pass on average"
    promise = (f"at least {share} of new in-distribution photographs pass, with "
               f"{_share(ood['confidence'])} confidence")
    if ood.get("guaranteed"):
        return f"; {promise}"
    return (f"; too few validation photographs to promise that {promise}, so the threshold is "
            "the largest validation distance")


def _share(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def gate_section_html(gate: dict[str, Any]) -> str:
    """The gate: its rule in plain words, its bounds, and how well it worked on the test split."""
    bounds = gate.get("gradability", {}).get("bounds", {})
    bound_rows = "".join(
        f'<tr><td class="name">{_esc(name)}</td><td>{format_metric(b.get("min"))}</td>'
        f"<td>{format_metric(b.get('max'))}</td></tr>"
        for name, b in bounds.items()
    )
    ood = gate.get("ood") or {}
    parts = [
        '<section id="gate"><h2>Gate: gradable photographs like the training ones</h2>',
        f"<p>{_esc(gate.get('rule', ''))}</p>",
        "<p>A photograph is graded only when every image-quality measure lies inside its bounds "
        "and its out-of-distribution score is at most the threshold. Otherwise its row says "
        "<code>gradable: false</code> or <code>in_distribution: false</code> with the reason, "
        "<code>needs_review</code> is true and the decision is "
        "<strong>refer for manual grading</strong>.</p>",
        f"<p>Gradability: {_esc(gate.get('gradability', {}).get('fitted_on', ''))}. "
        f"Out-of-distribution threshold {format_metric(ood.get('threshold'))} "
        f"({_esc(ood.get('method', ''))}, on the {_esc(_SPACE_WORDS.get(ood.get('space'), 'compressed features'))}), "
        f"passing {_share(ood.get('validation_pass_rate'))} "
        f"of validation photographs{_ood_promise(ood)}.</p>",
        '<table id="gate-bounds"><thead><tr><th>measure</th><th>min</th><th>max</th></tr></thead>'
        f"<tbody>{bound_rows}</tbody></table>",
    ]
    evaluation = gate.get("evaluation")
    if evaluation:
        rows = [("clean test photographs", evaluation["clean"], False)]
        for family, label in (("corrupted", "corrupted copies (all kinds)"),
                              ("near_ood", "another camera's photographs"),
                              ("non_fundus", "non-fundus pictures (all kinds)")):
            if evaluation.get(family):
                rows.append((label, evaluation[family], True))
        rows += [(name, result, True) for name, result in evaluation.get("sets", {}).items()]
        body = "".join(
            f'<tr><td class="name">{_esc(name)}</td><td>{result.get("images")}</td>'
            f"<td>{_share(result.get('pass_rate'))}</td>"
            f"<td>{_share(result.get('flagged_by_score')) if bad else ''}</td>"
            f"<td>{format_metric(result.get('auroc')) if bad else ''}</td></tr>"
            for name, result, bad in rows
        )
        parts.append(
            "<h3>How well the gate works on the test split</h3>"
            "<p>Pass rate: the share of each set that the gate lets through to grading (high for "
            "clean photographs, low for bad ones). Stopped by the score: the share that the "
            "out-of-distribution score alone refers, whatever the quality checks say. AUROC: how "
            "well the gate's score separates the clean test photographs from each set (1 is "
            f"perfect, 0.5 is chance). {_esc(evaluation.get('note', ''))}.</p>"
            '<table id="gate-evaluation"><thead><tr><th>set</th><th>images</th><th>pass rate</th>'
            "<th>stopped by the score</th><th>AUROC vs clean</th></tr></thead>"
            f"<tbody>{body}</tbody></table>"
            + detector_table_html(evaluation.get("detectors"))
        )
    else:
        parts.append("<p>The gate was not measured on the test split (no test image cache, or "
                     "<code>gate.evaluate: false</code>).</p>")
    return "".join(parts) + "</section>"


def detector_table_html(detectors: dict[str, Any] | None) -> str:
    """The out-of-distribution detectors compared on the test split's sets: AUROC and FPR at 95%
    TPR of each, the one in use marked."""
    if not detectors or not detectors.get("results"):
        return ""
    results = detectors["results"]
    sets = list(next(iter(results.values())))
    head = "".join(f"<th>{_esc(name)}</th>" for name in sets)
    body = "".join(
        f'<tr><td class="name">{_esc(name)}{" (in use)" if name == detectors.get("in_use") else ""}</td>'
        + "".join(f"<td>{format_metric(by_set[s]['auroc'])} / {format_metric(by_set[s]['fpr_at_95_tpr'])}</td>"
                  for s in sets)
        + "</tr>"
        for name, by_set in results.items()
    )
    return (
        "<h3>Out-of-distribution detectors compared</h3>"
        f"<p>Each detector's score alone, against {_esc(detectors.get('reference', ''))}: AUROC / "
        "FPR at 95% TPR (the share of the set that passes when 95% of the clean photographs "
        "do; lower is better). The detector in use was chosen on other sets (the validation "
        "split, other photographs): docs/grading.md, \"Like the training photographs?\".</p>"
        f'<table id="gate-detectors"><thead><tr><th>detector</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


STUDY_START, STUDY_END = "<!-- quantum-study:start -->", "<!-- quantum-study:end -->"


def _interval_text(interval: dict[str, Any]) -> str:
    return (f"{format_metric(interval['mean'])} [{format_metric(interval['low'])}, "
            f"{format_metric(interval['high'])}]")


def study_section_html(summary: dict[str, Any]) -> str:
    """The quantum study's section: its one-sentence verdict, each contender's best setting
    (chosen on validation) with its test QWK interval, and the figure."""
    best = best_by_validation(summary.get("settings") or [])
    rows = "".join(
        f"<tr><td>{_esc(e['label'])}</td><td>{_esc(e['hyperparameter'])} = "
        f"{_esc(e['chosen_value'])}</td><td>{_esc(e['trainable_params'])}</td>"
        f"<td>{_esc(_interval_text(e['test']['qwk']))}</td></tr>"
        for e in sorted(best.values(), key=lambda e: -e["test"]["qwk"]["mean"])
    )
    verdicts = [pair["verdict"] for pair in summary.get("quantum_vs_twin") or []]
    twin = ("Quantum head against its classical twin, per setting: "
            + ", ".join(f"{verdicts.count(v)} {v}" for v in sorted(set(verdicts))) + "."
            if verdicts else "")
    gap = summary.get("configured_quantum_stage") or {}
    stage = (f"The pipeline's own quantum stage reaches test QWK "
             f"{format_metric(gap['stage_test_qwk'])} on the same cache."
             if gap.get("available") else "")
    captions = {"test_qwk_vs_training_images.png": "Test QWK against the number of training "
                "images (cached features: only the head sees fewer images)"}
    figures = "".join(
        _figure_html(name, figure, captions.get(name, "Test QWK against qubit count"))
        for name, figure in study_figures(summary).items()
    )
    few = summary.get("few_data") or {}
    few_html = (f'<p id="quantum-study-few-data"><b>Few training data.</b> '
                f'{_esc(few["headline"])} {_esc(few["caveat"])}</p>'
                if len(few.get("fractions") or []) > 1 else "")
    noise = summary.get("noise") or {}
    noise_html = (f'<p id="quantum-study-noise"><b>Noise.</b> {_esc(noise["headline"])}</p>'
                  if noise else "")
    return (
        f'{STUDY_START}<section id="quantum-study"><h2>Quantum vs classical study</h2>'
        f'<p id="quantum-study-verdict"><b>{_esc(summary.get("headline", ""))}</b></p>'
        f"<p>{_esc(twin)} {_esc(stage)}</p>{few_html}{noise_html}"
        '<table id="quantum-study-best"><thead><tr><th>contender (best setting on validation)'
        f"</th><th>chosen on validation</th><th>trainable parameters</th><th>test QWK, mean "
        f"[{summary.get('confidence', 0.95):.0%} CI]</th></tr></thead><tbody>{rows}</tbody>"
        f'</table><div class="figures">{figures}</div></section>{STUDY_END}'
    )


def add_study_section(report: str | None, summary: dict[str, Any]) -> str:
    """``report`` with its study section replaced (or added before ``</body>``); without a
    report, a page holding the study section alone."""
    return _put_section(
        report, study_section_html(summary), (STUDY_START, STUDY_END), "quantum vs classical study"
    )


def _put_section(report: str | None, section: str, markers: tuple[str, str], title: str) -> str:
    """``report`` with the section between ``markers`` replaced (or added before ``</body>``);
    without a report, a page holding that section alone."""
    if not report:
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>QSight {_esc(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>QSight: {_esc(title)}</h1>{section}</body></html>\n"
        )
    start, end = report.find(markers[0]), report.find(markers[1])
    if start != -1 and end != -1:
        return report[:start] + section + report[end + len(markers[1]):]
    at = report.rfind("</body>")
    at = len(report) if at == -1 else at
    return report[:at] + section + report[at:]


HARDWARE_START, HARDWARE_END = "<!-- quantum-hardware:start -->", "<!-- quantum-hardware:end -->"


def hardware_section_html(summary: dict[str, Any]) -> str:
    """The quantum_hardware section: its headline, one row per condition (means over seeds) and
    the QWK-against-shots figure."""
    exact = summary.get("exact") or {}

    def mean(entry: dict[str, Any], key: str) -> Any:
        value = entry.get(key)
        return value.get("mean") if isinstance(value, dict) else value

    rows = [("exact", "", "", exact.get("qwk"), 1.0, 1.0, 0.0, exact.get("ensemble_qwk"), None)]
    for c in summary.get("conditions") or []:
        rows.append((c["device"], c["shots"], c["mitigation"], mean(c, "qwk"), c.get("qwk_kept"),
                     mean(c, "agreement_with_exact"), mean(c, "z_mae"), mean(c, "ensemble_qwk"),
                     c.get("qpu_seconds_per_1000_images")))
    body = "".join(
        "<tr>" + "".join(
            f"<td>{_esc(format_metric(v) if isinstance(v, float) else ('' if v is None else v))}</td>"
            for v in row
        ) + "</tr>"
        for row in rows
    )
    figures = "".join(_figure_html(name, figure, "Test QWK against shots per device")
                      for name, figure in hardware_figures(None, summary).items())
    return (
        f'{HARDWARE_START}<section id="quantum-hardware"><h2>On quantum hardware</h2>'
        f'<p id="quantum-hardware-headline"><b>{_esc(summary.get("headline", ""))}</b></p>'
        f"<p>The quantum head alone on the {_esc(summary.get('split', 'test'))} split "
        f"({_esc(summary.get('n_images'))} images), means over the sampling seeds.</p>"
        '<table id="quantum-hardware-conditions"><thead><tr><th>device</th><th>shots</th>'
        "<th>mitigation</th><th>QWK</th><th>share of exact QWK</th><th>agreement with exact"
        "</th><th>&lt;Z&gt; MAE</th><th>ensemble QWK</th><th>QPU s / 1,000 images</th></tr>"
        f'</thead><tbody>{body}</tbody></table><div class="figures">{figures}</div>'
        f"</section>{HARDWARE_END}"
    )


def add_hardware_section(report: str | None, summary: dict[str, Any]) -> str:
    """``report`` with its quantum_hardware section replaced or added."""
    return _put_section(
        report, hardware_section_html(summary), (HARDWARE_START, HARDWARE_END), "on quantum hardware"
    )


EXTERNAL_START, EXTERNAL_END = "<!-- external-validation:start -->", "<!-- external-validation:end -->"
EXTERNAL_LABELS = {
    "qwk": "QWK", "accuracy": "accuracy", "macro_f1": "macro-F1",
    "referable_auc": "referable-DR AUC", "ece_before_temperature": "ECE before the temperatures",
    "ece_after_temperature": "ECE after the temperatures",
    "referral_sensitivity": "referral sensitivity", "referral_specificity": "referral specificity",
    "gate_pass_rate": "gate pass rate", "gradable_rate": "gradable",
    "in_distribution_rate": "in distribution",
}


def external_section_html(result: dict[str, Any]) -> str:
    """The ``evaluate`` pipeline's section: its verdict, every figure beside the model's own test
    split's with the change, and the ECE of each head before and after its temperature."""
    dataset = result.get("dataset") or {}
    rows = "".join(
        f'<tr><td class="name">{_esc(EXTERNAL_LABELS.get(name, name))}</td>'
        + "".join(_number_cell(entry.get(column), f"external-{name}-{column}")
                  for column in ("internal_test", "external", "change"))
        + "</tr>"
        for name, entry in (result.get("comparison") or {}).items()
    )
    ece = "".join(
        f'<tr><td class="name">{_esc(MODEL_LABELS.get(model, model))}</td>'
        + "".join(_number_cell(values.get(when), f"external-ece-{model}-{when}")
                  for when in ("before", "after"))
        + "</tr>"
        for model, values in (result.get("calibration") or {}).items()
    )
    reasons = ", ".join(f"{_esc(r)} ({n})" for r, n in ((result.get("gate") or {}).get("reasons") or {}).items())
    return (
        f'{EXTERNAL_START}<section id="external-validation"><h2>External validation</h2>'
        f'<p id="external-verdict"><b>{_esc(result.get("verdict", ""))}</b></p>'
        f"<p>{_esc(dataset.get('images'))} photographs in the {_esc(dataset.get('type'))} layout "
        f"at <code>{_esc(dataset.get('root'))}</code> ({_esc(dataset.get('unreadable'))} "
        "unreadable), graded with the model as saved: nothing was fitted on them. The internal "
        "column is the model's own test split; the change is this set minus it.</p>"
        '<table id="external-comparison"><thead><tr><th class="name">figure</th>'
        "<th>own test split</th><th>this set</th><th>change</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        '<h3>Calibration on this set</h3><table id="external-ece"><thead><tr>'
        '<th class="name">model</th><th>ECE before its temperature</th><th>after</th></tr>'
        f"</thead><tbody>{ece}</tbody></table>"
        + (f"<p>Why the gate referred photographs: {reasons}.</p>" if reasons else "")
        + f"</section>{EXTERNAL_END}"
    )


def add_external_section(report: str | None, result: dict[str, Any]) -> str:
    """``report`` with its external-validation section replaced or added."""
    return _put_section(
        report, external_section_html(result), (EXTERNAL_START, EXTERNAL_END), "external validation"
    )


ROBUSTNESS_START, ROBUSTNESS_END = "<!-- robustness:start -->", "<!-- robustness:end -->"


def robustness_section_html(robustness: dict[str, Any]) -> str:
    """Grades under benign changes to the photograph: the verdict in words, then per change the
    share of test photographs whose grade and whose referral changed."""
    rows = "".join(
        f'<tr><td class="name">{_esc(change.get("description"))}</td>'
        + f'<td id="robustness-{_esc(name)}-count">{_esc(change.get("grades_changed"))}</td>'
        + f'<td id="robustness-{_esc(name)}-grade">{_share(change.get("grade_changed"))}</td>'
        + f'<td id="robustness-{_esc(name)}-referral">{_share(change.get("referral_changed"))}</td>'
        + "</tr>"
        for name, change in (robustness.get("changes") or {}).items()
    )
    return (
        f'{ROBUSTNESS_START}<section id="robustness"><h2>Robustness: grades under benign changes'
        f'</h2><p id="robustness-verdict"><b>{_esc(robustness.get("verdict", ""))}</b></p>'
        f"<p>The {_esc(robustness.get('images'))} test photographs (as the model sees them, from "
        "the image cache) graded as they are and after each change below, which leaves the eye as "
        "it was. A share is of the test photographs; a grade that moves here moves with how a "
        "photograph was saved, not with the eye.</p>"
        '<table id="robustness-changes"><thead><tr><th class="name">the photograph</th>'
        "<th>grades changed</th><th>share of grades changed</th><th>share of referrals "
        f"changed</th></tr></thead><tbody>{rows}</tbody></table></section>{ROBUSTNESS_END}"
    )


def add_robustness_section(report: str | None, robustness: dict[str, Any]) -> str:
    """``report`` with its robustness section replaced or added."""
    return _put_section(
        report, robustness_section_html(robustness), (ROBUSTNESS_START, ROBUSTNESS_END),
        "robustness",
    )
