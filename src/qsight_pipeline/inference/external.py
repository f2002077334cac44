"""What changed on an external data set: its figures beside the model's own test split's.

The ``evaluate`` pipeline grades a labelled external set with the model as saved (nothing is
fitted on it). This module turns those gradings into what a user asks next: is the model still
calibrated there (ECE before and after the saved temperatures), how does each figure compare with
the internal test split's (``training_summary.json``), how often does the gate let photographs
through, and, in one sentence, does the model transfer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from qsight_pipeline.constants import ENSEMBLE, HEADS, NUM_GRADES
from qsight_pipeline.inference.calibration import expected_calibration_error
from qsight_pipeline.models.fusion_rules import GATED, MEAN

# (name in the comparison, where the internal test split keeps it in training_summary.json).
SIDE_BY_SIDE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("qwk", ("evaluation", "test", ENSEMBLE, "quadratic_weighted_kappa")),
    ("accuracy", ("evaluation", "test", ENSEMBLE, "accuracy")),
    ("macro_f1", ("evaluation", "test", ENSEMBLE, "macro_f1")),
    ("referable_auc", ("evaluation", "test", ENSEMBLE, "referable_auc")),
    ("ece_before_temperature", ("calibration", "quality", "test", "ece", ENSEMBLE, "before")),
    ("ece_after_temperature", ("calibration", "quality", "test", "ece", ENSEMBLE, "after")),
    ("referral_sensitivity", ("calibration", "test_operating_point", "sensitivity")),
    ("referral_specificity", ("calibration", "test_operating_point", "specificity")),
    ("gate_pass_rate", ("gate", "evaluation", "clean", "pass_rate")),
    # A model saved before these two were recorded has None here (its training summary lacks them).
    ("gradable_rate", ("gate", "evaluation", "clean", "gradable_rate")),
    ("in_distribution_rate", ("gate", "evaluation", "clean", "in_distribution_rate")),
)


def uncalibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities before a temperature: ``softmax(z / T)`` raised to ``T``, renormalised,
    is ``softmax(z)`` again (the ensemble's ``z`` is the log of its fused probabilities)."""
    powered = np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None) ** float(temperature)
    return powered / powered.sum(axis=1, keepdims=True)


def calibration_change(
    gradings: Sequence[Any], labels: np.ndarray, temperatures: Mapping[str, float],
    fusion: str = GATED,
) -> dict[str, dict[str, float | None]]:
    """Top-label ECE of the ensemble and of each head, before and after the saved temperatures.

    ``gradings`` are readable :class:`~qsight_pipeline.inference.predict.Prediction` objects,
    whose probabilities are the calibrated ones; ``labels`` their true grades; ``fusion`` the
    model's rule. "Before" is the model with every temperature at 1: for a model that fuses by
    the gate, its fused probabilities without the ensemble's temperature; for one that fuses by
    the mean of its calibrated heads, the mean of the heads without theirs.
    """
    probabilities = {ENSEMBLE: [g.ensemble_probabilities for g in gradings]}
    for head in HEADS:
        if gradings and head in gradings[0].head_probabilities:
            probabilities[head] = [g.head_probabilities[head] for g in gradings]
    before: dict[str, np.ndarray] = {}
    after: dict[str, np.ndarray] = {}
    for model, rows in probabilities.items():
        after[model] = np.asarray(rows, dtype=np.float64).reshape(-1, NUM_GRADES)
        before[model] = (uncalibrated(after[model], temperatures.get(model, 1.0))
                         if len(after[model]) else after[model])
    heads = [head for head in HEADS if head in before]
    if fusion == MEAN and heads and len(after[ENSEMBLE]):
        before[ENSEMBLE] = np.mean([before[head] for head in heads], axis=0)
    return {model: {"before": expected_calibration_error(before[model], labels),
                    "after": expected_calibration_error(after[model], labels)}
            for model in probabilities}


def gate_rates(gradings: Sequence[Any]) -> dict[str, float | None]:
    """The share of readable photographs the gate finds gradable, in distribution, and passes
    (None without a gate or without photographs)."""
    def share(values: list[bool | None]) -> float | None:
        known = [v for v in values if v is not None]
        return float(np.mean(known)) if known else None

    return {
        "gradable_rate": share([g.gradable for g in gradings]),
        "in_distribution_rate": share([g.in_distribution for g in gradings]),
    }


def _dig(record: Mapping[str, Any] | None, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(record, Mapping):
            return None
        record = record.get(key)
    return record


def side_by_side(external: Mapping[str, Any], training_summary: Mapping[str, Any]) -> dict[str, Any]:
    """``{figure: {"internal_test", "external", "change"}}``: each figure of the model's own test
    split (``training_summary``, None where it was not measured) beside the external set's
    (``external``, keyed by the same names) and the change (external minus internal)."""
    table: dict[str, Any] = {}
    for name, path in SIDE_BY_SIDE:
        internal, outside = _dig(training_summary, path), external.get(name)
        change = None if internal is None or outside is None else float(outside) - float(internal)
        table[name] = {"internal_test": internal, "external": outside, "change": change}
    return table


def _gate_clause(pass_rate: float | None, rates: Mapping[str, float | None]) -> str:
    if pass_rate is None:
        return "the model has no gate"
    if pass_rate == 0.0:
        return "the gate refers every photograph"
    if pass_rate == 1.0:
        return "the gate lets every photograph through"
    held = [f"{100 * (1 - rate):.0f}% {label}" for key, label in
            (("gradable_rate", "not gradable"), ("in_distribution_rate", "out of distribution"))
            if (rate := rates.get(key)) is not None and rate < 1.0]
    return (f"the gate refers {100 * (1 - pass_rate):.0f}% of the photographs"
            + (f" ({', '.join(held)})" if held else ""))


def transfer_verdict(comparison: Mapping[str, Mapping[str, Any]], tolerance: float) -> str:
    """One sentence: whether the model transfers to the external set (its QWK within
    ``tolerance`` of its own test split's), the calibration, and what the gate does."""
    qwk = comparison["qwk"]
    if qwk["external"] is None:
        return "Nothing to judge: no photograph of this set could be read."
    ece = comparison["ece_after_temperature"]
    rates = {k: comparison[k]["external"] for k in ("gradable_rate", "in_distribution_rate")}
    gate = _gate_clause(comparison["gate_pass_rate"]["external"], rates)
    if qwk["internal_test"] is None:
        return (f"The model reaches QWK {qwk['external']:.2f} on this set (its own test split was "
                f"not measured), and {gate}.")
    transfers = qwk["external"] >= qwk["internal_test"] - tolerance
    calibration = ("" if ece["external"] is None or ece["internal_test"] is None else
                   f", ECE {ece['external']:.3f} against {ece['internal_test']:.3f} after its "
                   "saved temperatures")
    return (f"The model {'transfers' if transfers else 'does not transfer'} to this set: QWK "
            f"{qwk['external']:.2f} against {qwk['internal_test']:.2f} on its own test split"
            f"{calibration}, and {gate}.")
