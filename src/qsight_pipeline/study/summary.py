"""The study's table (test scored after the choice) and its summary."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from qsight_pipeline.config.quantum_study import QuantumStudyParams
from qsight_pipeline.study.grid import USES_SETTINGS, Trial
from qsight_pipeline.study.statistics import (
    BETTER,
    GROUP_COLUMNS,
    SETTING_COLUMNS,
    UNRESOLVED,
    WORSE,
    choose_hyperparameters,
    paired_difference,
    setting_label,
    t_interval,
)
from qsight_pipeline.study.trials import METRICS, StudyData, scores

TABLE_COLUMNS = [
    *SETTING_COLUMNS, "train_fraction", "n_train", "hyperparameter", "value", "seed", "chosen",
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
    return [rows for _, rows in chosen.groupby(GROUP_COLUMNS, dropna=False, sort=False)]


def _setting_entry(rows: pd.DataFrame, confidence: float) -> dict[str, Any]:
    first = rows.iloc[0]
    return {
        "label": setting_label(first),
        **{key: _plain(first[key]) for key in SETTING_COLUMNS},
        "train_fraction": float(first["train_fraction"]), "n_train": int(first["n_train"]),
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


# The quantum head's paired comparisons: the summary's key and the other contender.
COMPARISONS = {
    "quantum_vs_twin": "classical_twin",
    "quantum_vs_frozen_circuit": "frozen_circuit",
    "quantum_vs_no_entanglement": "no_entanglement",
}


def _pairs(entries: list[dict[str, Any]], against: str, confidence: float) -> list[dict]:
    """Each quantum setting against the ``against`` contender of the same circuit: matched on
    the settings ``against`` has (all four, or width, depth and encoding, or width and depth)."""
    used = USES_SETTINGS[against]
    others = {tuple(e[key] for key in used): e for e in entries if e["contender"] == against}
    pairs = []
    for entry in (e for e in entries if e["contender"] == "quantum"):
        other = others.get(tuple(entry[key] for key in used))
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


# Shown wherever the few-data result is: on cached features the encoder saw every image.
FEW_DATA_CAVEAT = (
    "Only the head sees fewer images: the cached features come from an encoder trained on the "
    "whole training split, so this measures how the heads learn from few examples of good "
    "features, not how the whole model learns from few photographs."
)


def summarise(table: pd.DataFrame, params: QuantumStudyParams,
              quantum_stage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per contender and setting at its chosen value: intervals across seeds; quantum against
    its twin, the frozen circuit and the circuit without entanglement, paired by seed; the
    winner; the configured stage's gap.

    Everything but ``few_data`` and ``circuit`` is on the largest training share (normally the
    whole split); ``few_data`` repeats the three verdicts and the best contenders at every share,
    ``circuit`` counts the entanglement and circuit-training verdicts over every setting and share
    in one sentence (the headline's second), and ``noise`` (with ``quantum_study.hardware``) the
    twin verdict with the quantum head on a device.
    """
    confidence = params.confidence
    every = [_setting_entry(rows, confidence) for rows in _chosen_settings(table)]
    full = max(e["train_fraction"] for e in every) if every else 1.0
    entries = [e for e in every if e["train_fraction"] == full]
    best = best_by_validation(entries)
    ranked = sorted(best.values(), key=lambda e: e["test"]["qwk"]["mean"], reverse=True)
    winner = _winner(ranked, confidence)
    shares = few_data(every, confidence)
    circuit = circuit_verdicts(shares["fractions"])
    summary = {
        "confidence": confidence,
        "seeds": sorted(int(s) for s in table["seed"].unique()),
        "study": params.model_dump(),
        "n_trials": len(table),
        "train_fraction": full,
        "n_train": entries[0]["n_train"] if entries else 0,
        "settings": entries,
        "best_by_validation": {name: e["label"] for name, e in best.items()},
        **{key: _pairs(entries, against, confidence) for key, against in COMPARISONS.items()},
        "winner": winner,
        "configured_quantum_stage": configured_stage_gap(best.get("quantum"), quantum_stage),
        "headline": f"{headline(winner, confidence, full)} {circuit['headline']}",
        "circuit": circuit,
        "few_data": shares,
    }
    if "noisy_test_qwk" in table:
        summary["noise"] = noise_summary(table, entries, params)
    return summary


def few_data(every: list[dict[str, Any]], confidence: float) -> dict[str, Any]:
    """At each training share: its size, each contender's best setting (on validation) with its
    test QWK, and the quantum head's verdicts against the twin, the frozen circuit and the
    circuit without entanglement; one sentence over all shares (on the twin)."""
    shares = sorted({e["train_fraction"] for e in every})
    out = []
    for share in shares:
        entries = [e for e in every if e["train_fraction"] == share]
        best = best_by_validation(entries)
        compared = {key: _pairs(entries, against, confidence)
                    for key, against in COMPARISONS.items()}
        pairs = compared["quantum_vs_twin"]
        best_quantum = best.get("quantum")
        out.append({
            "train_fraction": share,
            "n_train": entries[0]["n_train"],
            "best": {name: {"label": e["label"], "test_qwk": e["test"]["qwk"],
                            "val_qwk": e["val_qwk"]} for name, e in best.items()},
            **compared,
            "verdict_counts": _counts(pairs),
            "verdict_counts_by_comparison": {key: _counts(p) for key, p in compared.items()},
            "best_quantum_vs_twin": next(
                (p for p in pairs if best_quantum and p["quantum"] == best_quantum["label"]), None),
        })
    return {"caveat": FEW_DATA_CAVEAT, "fractions": out, "headline": few_data_headline(out)}


def _counts(pairs: list[dict[str, Any]]) -> dict[str, int]:
    return {v: sum(p["verdict"] == v for p in pairs) for v in (BETTER, WORSE, UNRESOLVED)}


# What each circuit verdict answers: its subject in the headline, and the other circuit.
CIRCUIT_QUESTIONS = {
    "quantum_vs_no_entanglement": ("entanglement", "the same circuit without entangling gates"),
    "quantum_vs_frozen_circuit": ("training the circuit", "the frozen random circuit"),
}


def circuit_verdicts(fractions: list[dict[str, Any]]) -> dict[str, Any]:
    """Does entanglement matter, does training the circuit matter: the quantum head's verdicts
    against the no_entanglement and frozen circuits, counted over every setting and share."""
    counts = {key: _counts([p for f in fractions for p in f[key]]) for key in CIRCUIT_QUESTIONS}
    clauses = [_circuit_clause(key, counts[key]) for key in CIRCUIT_QUESTIONS]
    sentence = " and ".join(clauses)
    return {"verdict_counts": counts, "headline": sentence[0].upper() + sentence[1:] + "."}


def _circuit_clause(key: str, counts: dict[str, int]) -> str:
    subject, other = CIRCUIT_QUESTIONS[key]
    total = sum(counts.values())
    if total == 0:
        return f"{subject} was not tested ({COMPARISONS[key]} is not among the contenders)"
    detected = counts[BETTER] + counts[WORSE]
    amount = (f"no detectable difference in any of the {total}" if detected == 0
              else f"a detectable difference in {detected} of the {total}")
    return (f"{subject} made {amount} (setting, training share) pairs (the quantum head against "
            f"{other}: {counts[BETTER]} better, {counts[WORSE]} worse)")


def few_data_headline(fractions: list[dict[str, Any]]) -> str:
    """The few-data answer in one sentence."""
    counted = [f for f in fractions if f["quantum_vs_twin"]]
    if not counted:
        return "No quantum setting had its classical twin in the study, so there is no few-data verdict."
    better = [f for f in counted if f["verdict_counts"][BETTER]]
    parts = "; ".join(
        f"{f['train_fraction']:.0%} ({f['n_train']} images): "
        f"{f['verdict_counts'][BETTER]} better, {f['verdict_counts'][WORSE]} worse, "
        f"{f['verdict_counts'][UNRESOLVED]} no detectable difference"
        for f in counted
    )
    if better:
        shares = ", ".join(f"{f['train_fraction']:.0%}" for f in better)
        verdict = f"the quantum head beats its classical twin somewhere at {shares}"
    else:
        verdict = "at no training share is the quantum head better than its classical twin"
    return f"With fewer training images {verdict} (settings per share: {parts})."


def noise_summary(table: pd.DataFrame, entries: list[dict[str, Any]],
                  params: QuantumStudyParams) -> dict[str, Any]:
    """The chosen quantum settings on the device: exact and noisy test QWK per setting, the
    noisy head against its classical twin (paired by seed), and one sentence."""
    hardware = params.hardware
    confidence = params.confidence
    full = max(e["train_fraction"] for e in entries)
    chosen = table[table["chosen"] & (table["contender"] == "quantum")
                   & (table["train_fraction"] == full) & table["noisy_test_qwk"].notna()]
    twins = {(e["n_qubits"], e["reps"]): e for e in entries if e["contender"] == "classical_twin"}
    settings = []
    for _, rows in chosen.groupby(SETTING_COLUMNS, dropna=False, sort=False):
        first = rows.iloc[0]
        noisy = _by_seed(rows, "noisy_test_qwk")
        exact = _by_seed(rows, "test_qwk")
        entry = {
            "label": setting_label(first),
            "depth": int(first["noisy_depth"]), "two_qubit_gates": int(first["noisy_two_qubit_gates"]),
            "exact_test_qwk": t_interval(list(exact.values()), confidence),
            "noisy_test_qwk": t_interval(list(noisy.values()), confidence),
            "noisy_minus_exact": paired_difference(noisy, exact, confidence),
        }
        twin = twins.get((_plain(first["n_qubits"]), _plain(first["reps"])))
        if twin is not None:
            difference = paired_difference(noisy, twin["test_qwk_by_seed"], confidence)
            entry.update(against=twin["label"], noisy_vs_twin=difference,
                         verdict=difference["verdict"])
        settings.append(entry)
    verdicts = [s["verdict"] for s in settings if "verdict" in s]
    counts = {v: verdicts.count(v) for v in (BETTER, WORSE, UNRESOLVED)}
    where = f"on {hardware.device} at {hardware.shots} shots with {hardware.mitigation} mitigation"
    if verdicts:
        sentence = (f"Under noise ({where}) the quantum head against its classical twin: "
                    f"{counts[BETTER]} better, {counts[WORSE]} worse, {counts[UNRESOLVED]} no "
                    f"detectable difference, of {len(verdicts)} settings.")
    else:
        sentence = f"Under noise ({where}) no quantum setting had its twin in the study."
    return {"device": hardware.device, "shots": hardware.shots,
            "mitigation": hardware.mitigation, "noise_scale": hardware.noise_scale,
            "settings": settings, "verdict_counts": counts, "headline": sentence}


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


def headline(winner: dict[str, Any], confidence: float, train_fraction: float = 1.0) -> str:
    """The study in one sentence."""
    if not winner:
        return "The study ran no contender."
    qwk = winner["test_qwk"]
    data = "this data" if train_fraction == 1.0 else f"{train_fraction:.0%} of the training split"
    sentence = (f"On {data} {winner['label']} wins with a test QWK of {qwk['mean']:.3f} "
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
                          "`kedro run --pipelines quantum` on the same cache to compare"}
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
