"""The study's table (test scored after the choice) and its summary."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from qsight_pipeline.config.quantum_study import QuantumStudyParams
from qsight_pipeline.study.grid import Trial
from qsight_pipeline.study.statistics import (
    BETTER,
    SETTING_COLUMNS,
    choose_hyperparameters,
    paired_difference,
    setting_label,
    t_interval,
)
from qsight_pipeline.study.trials import METRICS, StudyData, scores

TABLE_COLUMNS = [
    *SETTING_COLUMNS, "hyperparameter", "value", "seed", "chosen",
    *(f"{split}_{metric}" for split in ("val", "test") for metric in METRICS),
    "trainable_params", "train_seconds",
]


def build_table(trials: list[Trial], results: list[dict[str, Any]],
                data: StudyData) -> pd.DataFrame:
    """One row per trial; the hyperparameter is chosen on validation, then the chosen rows (one
    per contender, setting and seed) are scored on test. Other rows keep test columns empty."""
    table = pd.DataFrame([result["row"] for result in results])
    for column in ("n_qubits", "reps"):  # whole numbers, empty for the baselines
        table[column] = table[column].astype("Int64")
    table = choose_hyperparameters(table)
    for metric in METRICS:
        table[f"test_{metric}"] = np.nan
    for index in table.index[table["chosen"]]:
        test = scores(data.grades["test"], results[index]["test_probabilities"])
        for metric, value in test.items():
            table.loc[index, f"test_{metric}"] = value
    return table[TABLE_COLUMNS]


def _by_seed(rows: pd.DataFrame, column: str = "test_qwk") -> dict[int, float]:
    return {int(seed): float(value) for seed, value in zip(rows["seed"], rows[column], strict=True)}


def _chosen_settings(table: pd.DataFrame) -> list[pd.DataFrame]:
    chosen = table[table["chosen"]]
    return [rows for _, rows in chosen.groupby(SETTING_COLUMNS, dropna=False, sort=False)]


def _setting_entry(rows: pd.DataFrame, confidence: float) -> dict[str, Any]:
    first = rows.iloc[0]
    return {
        "label": setting_label(first),
        **{key: _plain(first[key]) for key in SETTING_COLUMNS},
        "hyperparameter": first["hyperparameter"], "chosen_value": float(first["value"]),
        "trainable_params": int(first["trainable_params"]),
        "val_qwk": t_interval(rows["val_qwk"], confidence),
        "test": {metric: t_interval(rows[f"test_{metric}"], confidence) for metric in METRICS},
        "test_qwk_by_seed": _by_seed(rows),
        "train_seconds_mean": float(rows["train_seconds"].mean()),
    }


def _plain(value: Any) -> Any:
    if value is None or pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _pairs(entries: list[dict[str, Any]], against: str, confidence: float) -> list[dict]:
    """Each quantum setting against the ``against`` contender of the same width and depth."""
    others = {(e["n_qubits"], e["reps"], e["encoding"], e["entanglement"]): e
              for e in entries if e["contender"] == against}
    pairs = []
    for entry in (e for e in entries if e["contender"] == "quantum"):
        key = (entry["n_qubits"], entry["reps"], entry["encoding"], entry["entanglement"])
        other = others.get(key) or others.get((entry["n_qubits"], entry["reps"], None, None))
        if other is not None:
            difference = paired_difference(entry["test_qwk_by_seed"], other["test_qwk_by_seed"],
                                           confidence)
            pairs.append({"quantum": entry["label"], "against": other["label"],
                          "test_qwk_difference": difference, "verdict": difference["verdict"]})
    return pairs


def best_by_validation(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each contender's setting with the best mean validation QWK (never chosen on test)."""
    best: dict[str, dict[str, Any]] = {}
    for entry in entries:
        current = best.get(entry["contender"])
        if current is None or entry["val_qwk"]["mean"] > current["val_qwk"]["mean"]:
            best[entry["contender"]] = entry
    return best


def summarise(table: pd.DataFrame, params: QuantumStudyParams,
              quantum_stage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per contender and setting at its chosen value: intervals across seeds; quantum against
    its twin and its frozen control, paired by seed; the winner; the configured stage's gap."""
    confidence = params.confidence
    entries = [_setting_entry(rows, confidence) for rows in _chosen_settings(table)]
    best = best_by_validation(entries)
    ranked = sorted(best.values(), key=lambda e: e["test"]["qwk"]["mean"], reverse=True)
    winner = _winner(ranked, confidence)
    return {
        "confidence": confidence,
        "seeds": sorted(int(s) for s in table["seed"].unique()),
        "study": params.model_dump(),
        "n_trials": len(table),
        "settings": entries,
        "best_by_validation": {name: e["label"] for name, e in best.items()},
        "quantum_vs_twin": _pairs(entries, "classical_twin", confidence),
        "quantum_vs_frozen_circuit": _pairs(entries, "frozen_circuit", confidence),
        "winner": winner,
        "configured_quantum_stage": configured_stage_gap(best.get("quantum"), quantum_stage),
        "headline": headline(winner, confidence),
    }


def _winner(ranked: list[dict[str, Any]], confidence: float) -> dict[str, Any]:
    if not ranked:
        return {}
    top = ranked[0]
    result = {"label": top["label"], "contender": top["contender"],
              "test_qwk": top["test"]["qwk"]}
    if len(ranked) > 1:
        runner_up = ranked[1]
        difference = paired_difference(top["test_qwk_by_seed"], runner_up["test_qwk_by_seed"],
                                       confidence)
        result.update(runner_up=runner_up["label"], runner_up_test_qwk=runner_up["test"]["qwk"],
                      difference=difference, resolved=difference["verdict"] == BETTER)
    return result


def headline(winner: dict[str, Any], confidence: float) -> str:
    """The study in one sentence."""
    if not winner:
        return "The study ran no contender."
    qwk = winner["test_qwk"]
    sentence = (f"On this data {winner['label']} wins with a test QWK of {qwk['mean']:.3f} "
                f"({confidence:.0%} CI {qwk['low']:.3f} to {qwk['high']:.3f})")
    if "runner_up" not in winner:
        return sentence + "."
    d = winner["difference"]
    state = "resolved" if winner["resolved"] else "not resolved"
    return (f"{sentence}; its lead of {d['mean']:+.3f} over {winner['runner_up']} "
            f"(paired by seed, CI {d['low']:+.3f} to {d['high']:+.3f}) is {state}.")


def configured_stage_gap(best_quantum: dict[str, Any] | None,
                         quantum_stage: dict[str, Any] | None) -> dict[str, Any]:
    """How far the pipeline's own quantum stage (``quantum_metrics.json``) is from the study's
    best quantum setting on the same cache."""
    if best_quantum is None:
        return {"available": False, "reason": "the study had no quantum contender"}
    if not quantum_stage or not quantum_stage.get("enabled") or "test" not in quantum_stage:
        return {"available": False,
                "reason": "no quantum_metrics.json from the quantum stage; run "
                          "`kedro run --pipeline quantum` on the same cache to compare"}
    stage_qwk = float(quantum_stage["test"]["quadratic_weighted_kappa"])
    best_qwk = best_quantum["test"]["qwk"]
    return {
        "available": True,
        "stage_quantum_config": quantum_stage.get("quantum"),
        "stage_test_qwk": stage_qwk,
        "stage_test_accuracy": float(quantum_stage["test"]["accuracy"]),
        "best_study_setting": best_quantum["label"],
        "best_study_learning_rate": best_quantum["chosen_value"],
        "best_study_test_qwk": best_qwk,
        "gap_test_qwk": best_qwk["mean"] - stage_qwk,
        "stage_inside_interval": best_qwk["low"] <= stage_qwk <= best_qwk["high"],
    }
