"""The report's calibration and referral section: reliability diagram, ROC with the operating point.

Drawn from ``training_summary["calibration"]`` (written by the ensemble pipeline's
``calibrate_operating_point`` node).
"""

from __future__ import annotations

import html
from typing import Any

from matplotlib.figure import Figure

from qsight_pipeline.constants import ENSEMBLE

RELIABILITY_FIGURE = "calibration_reliability.png"
ROC_FIGURE = "referral_roc.png"


def reliability_figure(calibration: dict[str, Any], split: str = "test") -> Figure | None:
    """Top-label reliability of the ensemble before and after temperature scaling."""
    quality = (calibration.get("quality") or {}).get(split)
    if not quality:
        return None
    figure = Figure(figsize=(4.6, 4.2), layout="constrained")
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1, label="perfect")
    ece = (quality.get("ece") or {}).get(ENSEMBLE) or {}
    for when, colour in (("before", "#d62728"), ("after", "#2ca02c")):
        curve = quality["reliability"][when]
        value = ece.get(when)
        label = f"{when} (ECE {value:.3f})" if value is not None else when
        axes.plot(curve["confidence"], curve["accuracy"], marker="o", color=colour, label=label)
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top grade)", ylabel="accuracy",
             title=f"Ensemble reliability, {split} set")
    axes.legend(loc="upper left", fontsize=8)
    return figure


def roc_figure(calibration: dict[str, Any]) -> Figure | None:
    """Test ROC of P(grade >= 2) with the validation-chosen operating point marked."""
    roc = calibration.get("test_roc")
    point = calibration.get("test_operating_point")
    if not roc or not point or point.get("sensitivity") is None or point.get("specificity") is None:
        return None
    figure = Figure(figsize=(4.6, 4.2), layout="constrained")
    axes = figure.subplots()
    axes.plot(roc["fpr"], roc["tpr"], color="#1f77b4", label=f"test ROC (AUC {roc['auc']:.3f})")
    axes.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1)
    axes.plot([1 - point["specificity"]], [point["sensitivity"]], marker="o", markersize=9,
              color="#d62728", linestyle="none",
              label=f"threshold {point['threshold']:.3f} (chosen on validation)")
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="1 - specificity", ylabel="sensitivity",
             title="Referable DR (grade >= 2), test set")
    axes.legend(loc="lower right", fontsize=8)
    return figure


def calibration_figures(training_summary: dict[str, Any]) -> dict[str, Figure]:
    calibration = training_summary.get("calibration") or {}
    figures = {RELIABILITY_FIGURE: reliability_figure(calibration), ROC_FIGURE: roc_figure(calibration)}
    return {name: figure for name, figure in figures.items() if figure is not None}


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"


def _interval(values: list[Any] | None) -> str:
    if not values or values[0] is None:
        return "n/a"
    return f"{100 * values[0]:.1f}% to {100 * values[1]:.1f}%"


def _cell(element_id: str, value: Any, text: str) -> str:
    raw = "" if value is None else f' data-value="{html.escape(repr(value))}"'
    return f'<td id="{element_id}"{raw}>{html.escape(text)}</td>'


def calibration_tables_html(calibration: dict[str, Any]) -> str:
    """Tables: the operating point (validation and test, Wilson 95% CIs) and ECE before/after."""
    referral = calibration.get("referral") or {}
    rows = []
    for split, point in (("validation", referral.get("validation")),
                         ("test", calibration.get("test_operating_point"))):
        point = point or {}
        rows.append(
            f"<tr><th>{split}</th>"
            + _cell(f"referral-{split}-sensitivity", point.get("sensitivity"),
                    _fmt(point.get("sensitivity"), True))
            + f"<td id=\"referral-{split}-sensitivity-ci\">{_interval(point.get('sensitivity_ci95'))}</td>"
            + _cell(f"referral-{split}-specificity", point.get("specificity"),
                    _fmt(point.get("specificity"), True))
            + f"<td id=\"referral-{split}-specificity-ci\">{_interval(point.get('specificity_ci95'))}</td>"
            + f"<td>{point.get('positives', 'n/a')} / {point.get('negatives', 'n/a')}</td></tr>"
        )
    operating = (
        '<table id="referral-operating-point"><thead><tr><th>split</th><th>sensitivity</th>'
        "<th>95% CI (Wilson)</th><th>specificity</th><th>95% CI (Wilson)</th>"
        "<th>referable / not</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )
    ece_rows = []
    for split, quality in (calibration.get("quality") or {}).items():
        for model, values in (quality.get("ece") or {}).items():
            ece_rows.append(
                f"<tr><th>{html.escape(split)}</th><th>{html.escape(model)}</th>"
                + _cell(f"ece-{split}-{model}-before", values.get("before"), _fmt(values.get("before")))
                + _cell(f"ece-{split}-{model}-after", values.get("after"), _fmt(values.get("after")))
                + "</tr>"
            )
    ece = (
        '<table id="calibration-ece"><thead><tr><th>split</th><th>model</th><th>ECE before</th>'
        "<th>ECE after</th></tr></thead><tbody>" + "".join(ece_rows) + "</tbody></table>"
    )
    temperatures = ", ".join(
        f"{html.escape(k)} T = {v:.3f}" for k, v in (calibration.get("temperatures") or {}).items()
    )
    threshold = referral.get("threshold")
    return (
        f'<p>Referral threshold on P(grade &ge; 2): <b id="referral-threshold">{_fmt(threshold)}</b>, '
        f"the highest reaching the target sensitivity {_fmt(referral.get('target_sensitivity'), True)} "
        "on validation. An image needs review when the entropy of its calibrated ensemble is above "
        f"<b id=\"review-entropy-threshold\">{_fmt(referral.get('review_entropy_threshold'))}</b> "
        f"(the {_fmt(referral.get('review_fraction'), True)} most uncertain validation images).</p>"
        + operating
        + f"<h3>Expected calibration error (10 bins)</h3><p>Temperatures: {temperatures}.</p>" + ece
    )
