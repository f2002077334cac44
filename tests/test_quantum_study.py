"""The quantum-vs-classical study: estimators, statistics, the library and the pipeline."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
import torch
import yaml
from scipy import stats
from sklearn.datasets import make_blobs
from sklearn.model_selection import GridSearchCV, cross_val_score

from qsight_pipeline.config import validate_parameters
from qsight_pipeline.config.quantum_study import CONTENDERS, QuantumStudyParams
from qsight_pipeline.errors import ConfigError
from qsight_pipeline.models.estimators import (
    ClassicalTwinClassifier,
    HeadBClassifier,
    QuantumHeadClassifier,
)
from qsight_pipeline.reporting.html import add_study_section
from qsight_pipeline.study import run_study, study_figures, summarise
from qsight_pipeline.study.grid import expand_grid
from qsight_pipeline.study.statistics import paired_difference, t_interval

REPO = Path(__file__).resolve().parents[1]
OUTPUT_DIR = "06_models/trained_model"
TINY = {"n_qubits": [2, 3], "reps": [1], "encoding": ["angle"], "learning_rates": [0.003, 0.03],
        "logistic_c": [1.0, 10.0], "seeds": 2, "epochs": 2, "n_jobs": 1,
        "train_fractions": [0.5, 1.0]}
# Per training share: quantum 2 settings, twin 2, head B 1, logistic 1, frozen circuit 2, no
# entanglement 2; two hyperparameter values and two seeds each.
TRIALS_PER_SHARE = (2 + 2 + 1 + 1 + 2 + 2) * 2 * 2


def _cache(n: int = 150, features: int = 8) -> dict:
    X, y = make_blobs(n, n_features=features, centers=5, random_state=0, cluster_std=4.0)
    cache = {}
    for index, split in enumerate(("train", "val", "test")):
        cache[f"{split}_features"] = X[index::3]
        cache[f"{split}_labels"] = y[index::3]
    cache["metadata"] = {"model_config": {"head_hidden_dim": 8, "dropout": 0.1}}
    return cache


# --------------------------------------------------------------------------- configuration


def test_yaml_defaults_equal_the_model_defaults():
    text = (REPO / "conf/base/parameters_quantum_study.yml").read_text()
    assert QuantumStudyParams(**yaml.safe_load(text)["quantum_study"]) == QuantumStudyParams()
    default = QuantumStudyParams()
    assert default.n_qubits == [2, 4, 6, 8] and default.encoding == ["angle", "zz"]
    assert len(default.learning_rates) == 3 and default.seeds == 5


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"n_qubits": [2, 40]}, "quantum_study.n_qubits"),
        ({"encoding": ["angle", "amplitude"]}, "quantum_study.encoding"),
        ({"learning_rates": [0.01, -1.0]}, "quantum_study.learning_rates"),
        ({"contenders": ["quantum", "svm"]}, "quantum_study.contenders"),
        ({"reps": [1, 3], "n_qubits": [2]}, "quantum_study.reps"),
        ({"seeds": 1}, "quantum_study.seeds"),
        ({"train_fractions": [0.5, 0.0]}, "quantum_study.train_fractions"),
        ({"train_fractions": [0.5, 1.5]}, "quantum_study.train_fractions"),
        ({"hardware": {"device": "fake_torino", "shots": 0}}, "quantum_study.hardware.shots"),
        ({"entanglement": ["linear", "none"]}, "quantum_study.entanglement"),
        ({"backend": "spark"}, "quantum_study.backend"),
        ({"cluster_address": "tcp://10.0.0.1:8786"}, "quantum_study.cluster_address"),
    ],
)
def test_a_bad_grid_value_is_refused_naming_the_key(change, key):
    local = key.removeprefix("quantum_study.")  # pydantic's own bounds name the field only
    with pytest.raises(pydantic.ValidationError, match=local.replace(".", r"\.")):
        QuantumStudyParams(**change)
    # The pre-run check of every `kedro run` (RunChecksHook) validates the whole parameter set.
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_parameters({"quantum_study": {**TINY, **change}})


# --------------------------------------------------------------------------- estimators


@pytest.mark.parametrize(("n_qubits", "reps", "encoding"), [(2, 1, "angle"), (4, 2, "zz"),
                                                            (3, 3, "angle")])
def test_twin_has_as_many_trainable_parameters_as_the_quantum_head(n_qubits, reps, encoding):
    X, y = make_blobs(40, n_features=6, centers=3, random_state=0)
    quantum = QuantumHeadClassifier(n_qubits=n_qubits, reps=reps, encoding=encoding, epochs=1,
                                    random_state=0).fit(X, y)
    twin = ClassicalTwinClassifier(n_qubits=n_qubits, reps=reps, epochs=1, random_state=0).fit(X, y)
    circuit = quantum.module_.circuit_weights.numel()
    assert twin.module_.layer.values.numel() == circuit
    assert twin.n_trainable_params_ == quantum.n_trainable_params_
    frozen = QuantumHeadClassifier(n_qubits=n_qubits, reps=reps, encoding=encoding, epochs=1,
                                   freeze_circuit=True, random_state=0).fit(X, y)
    assert frozen.n_trainable_params_ == quantum.n_trainable_params_ - circuit
    assert not torch.equal(frozen.module_.circuit_weights, quantum.module_.circuit_weights)


@pytest.mark.parametrize("encoding", ["angle", "zz"])
def test_the_no_entanglement_circuit_is_the_same_circuit_without_two_qubit_gates(encoding):
    from qiskit import transpile

    from qsight_pipeline.models.estimators import circuit_spec
    from qsight_pipeline.study.contenders import build_estimator
    from qsight_pipeline.study.grid import Trial

    trial = Trial("no_entanglement", 4, 2, encoding, None, "learning_rate", 3e-3, 0)
    estimator = build_estimator(trial, QuantumStudyParams(**TINY), {})
    assert isinstance(estimator, QuantumHeadClassifier) and estimator.entanglement == "none"
    entangled, product = (circuit_spec(4, 2, e, encoding) for e in ("linear", "none"))
    gates = [transpile(spec.circuit, basis_gates=["rx", "ry", "rz", "p", "h", "x", "cx"],
                       optimization_level=0).count_ops() for spec in (entangled, product)]
    assert gates[0]["cx"] > 0 and "cx" not in gates[1]
    # The same rotations: every single-qubit gate of the entangled circuit, and nothing else
    # (the zz map's pair terms each add a phase gate besides their CX pair).
    assert gates[1]["ry"] == gates[0]["ry"] and gates[1].get("h") == gates[0].get("h")
    assert (product.num_qubits, product.num_weights) == (entangled.num_qubits,
                                                         entangled.num_weights)
    assert [str(p) for p in product.weight_params] == [str(p) for p in entangled.weight_params]


def test_the_circuit_headline_says_whether_entanglement_and_training_made_a_difference():
    from qsight_pipeline.study.summary import circuit_verdicts

    def share(*verdicts):
        return [{"verdict": v} for v in verdicts]

    found = circuit_verdicts([
        {"quantum_vs_no_entanglement": share("worse", "no detectable difference"),
         "quantum_vs_frozen_circuit": share("no detectable difference")},
        {"quantum_vs_no_entanglement": share("better", "no detectable difference"),
         "quantum_vs_frozen_circuit": share("no detectable difference")},
    ])
    assert found["headline"] == (
        "Entanglement made a detectable difference in 2 of the 4 (setting, training share) pairs "
        "(the quantum head against the same circuit without entangling gates: 1 better, 1 worse) "
        "and training the circuit made no detectable difference in any of the 2 (setting, "
        "training share) pairs (the quantum head against the frozen random circuit: 0 better, "
        "0 worse).")
    untested = circuit_verdicts([{"quantum_vs_no_entanglement": [],
                                  "quantum_vs_frozen_circuit": share("worse")}])
    assert untested["headline"].startswith(
        "Entanglement was not tested (no_entanglement is not among the contenders) and training "
        "the circuit made a detectable difference in 1 of the 1 ")


@pytest.mark.parametrize("prototype", [
    QuantumHeadClassifier(n_qubits=3, reps=1, encoding="zz", epochs=4, batch_size=16),
    QuantumHeadClassifier(n_qubits=2, reps=1, freeze_circuit=True, epochs=4, batch_size=16),
    ClassicalTwinClassifier(n_qubits=3, reps=1, epochs=4, batch_size=16),
], ids=["quantum", "frozen_circuit", "classical_twin"])
def test_heads_trained_together_match_heads_trained_one_by_one(prototype):
    from sklearn.base import clone

    from qsight_pipeline.models.fit_together import fit_together

    cache = _cache()
    X, y, X_val = cache["train_features"], cache["train_labels"], cache["val_features"]
    grid = [(rate, seed) for rate in (1e-3, 1e-2) for seed in (0, 1, 2)]
    together = [clone(prototype).set_params(learning_rate=r, random_state=s) for r, s in grid]
    alone = [clone(prototype).set_params(learning_rate=r, random_state=s).fit(X, y)
             for r, s in grid]
    seconds = fit_together(together, X, y)
    assert seconds > 0 and all(e.train_seconds_ == pytest.approx(seconds / 6) for e in together)
    for a, b in zip(together, alone, strict=True):
        # The same seeds, batches and AdamW: equal to float rounding (batched kernels sum in
        # another order), at the start and at the end of training.
        np.testing.assert_allclose(a.predict_proba(X_val), b.predict_proba(X_val), atol=1e-4)
        np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-4)
        assert a.n_trainable_params_ == b.n_trainable_params_ and not a.module_.training
    # Different seeds and rates really trained different heads.
    probabilities = [e.predict_proba(X_val) for e in together]
    assert not np.allclose(probabilities[0], probabilities[1])
    assert not np.allclose(probabilities[0], probabilities[3])


def test_fit_together_refuses_heads_it_cannot_train_as_one():
    from qsight_pipeline.models.fit_together import fit_together

    X, y = _cache()["train_features"], _cache()["train_labels"]
    with pytest.raises(ValueError, match="differ only in random_state and learning_rate; "
                                         "these differ too: n_qubits"):
        fit_together([QuantumHeadClassifier(n_qubits=2), QuantumHeadClassifier(n_qubits=3)], X, y)
    with pytest.raises(ValueError, match="one kind of head at a time"):
        fit_together([QuantumHeadClassifier(n_qubits=2, reps=1),
                      ClassicalTwinClassifier(n_qubits=2, reps=1)], X, y)
    with pytest.raises(ValueError, match="HeadBClassifier cannot be trained vectorised"):
        fit_together([HeadBClassifier(), HeadBClassifier(random_state=1)], X, y)


def test_study_trains_each_setting_as_one_unit_and_baselines_alone():
    from qsight_pipeline.study.trials import work_units

    params = QuantumStudyParams(**TINY)
    trials = expand_grid(params)
    units = work_units(trials, params)
    assert sorted(i for unit in units for i in unit) == list(range(len(trials)))
    by_kind: dict[str, list[int]] = {}
    for unit in units:
        kinds = {trials[i].setting() for i in unit}
        assert len(kinds) == 1  # one setting per unit
        by_kind.setdefault(trials[unit[0]].contender, []).append(len(unit))
    # Per share: 2 rates x 2 seeds train together for every torch head with a deterministic
    # forward pass; head B (dropout) and the logistic regression train one by one.
    assert by_kind == {"quantum": [4] * 4, "classical_twin": [4] * 4, "frozen_circuit": [4] * 4,
                       "no_entanglement": [4] * 4, "head_b": [1] * 8, "logistic": [1] * 8}


def test_estimators_work_with_grid_search_and_cross_validation():
    X, y = make_blobs(90, n_features=5, centers=3, random_state=1, cluster_std=1.0)
    scores = cross_val_score(QuantumHeadClassifier(n_qubits=2, reps=1, epochs=3,
                                                   learning_rate=0.05, random_state=0), X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.6
    search = GridSearchCV(ClassicalTwinClassifier(n_qubits=2, reps=1, epochs=3, random_state=0),
                          {"learning_rate": [0.001, 0.05]}, cv=2).fit(X, y)
    assert search.best_params_["learning_rate"] in (0.001, 0.05)
    head_b = HeadBClassifier(hidden_dim=8, epochs=3, random_state=0, classes=range(5)).fit(X, y)
    probabilities = head_b.predict_proba(X[:4])
    assert probabilities.shape == (4, 5) and np.allclose(probabilities.sum(axis=1), 1.0)
    assert head_b.get_params()["hidden_dim"] == 8


def test_quantum_head_classifier_passes_check_estimator():
    from sklearn.utils.estimator_checks import check_estimator

    estimator = QuantumHeadClassifier(n_qubits=2, reps=1, epochs=5, batch_size=64,
                                      learning_rate=0.1)
    results = check_estimator(estimator, on_fail=None)
    failed = {r["check_name"]: str(r["exception"])[:200] for r in results if r["status"] == "failed"}
    assert failed == {}
    assert len(results) > 40


# --------------------------------------------------------------------------- statistics


def test_the_studys_fast_metrics_equal_grading_metrics_on_random_and_degenerate_splits():
    from qsight_pipeline.training.metrics import grading_metrics, headline_metrics

    rng = np.random.default_rng(1)
    cases = [(np.array([2, 2, 2]), np.eye(5)[[2, 2, 2]]),        # one grade, all right: kappa 1
             (np.array([0, 0]), np.eye(5)[[3, 3]]),               # one grade each, wrong
             (np.array([0, 1, 3, 4]), np.full((4, 5), 0.2)),      # all tied: grade 0, AUC 0.5
             (np.array([0, 1]), np.eye(5)[[1, 0]])]               # no referable grade: AUC None
    for _ in range(300):
        n = int(rng.integers(1, 60))
        grades = rng.choice(rng.choice(5, int(rng.integers(1, 6)), replace=False), n)
        probabilities = rng.dirichlet(np.ones(5) * rng.choice([0.1, 1.0, 10.0]), n)
        cases.append((grades, np.round(probabilities, 1) if n % 3 == 0 else probabilities))
    for grades, probabilities in cases:
        slow, fast = grading_metrics(grades, probabilities), headline_metrics(grades, probabilities)
        for key, value in fast.items():
            assert (value is None) == (slow[key] is None), (key, grades)
            if value is not None:
                assert value == pytest.approx(slow[key], abs=1e-12), (key, grades)
    with pytest.raises(ValueError, match=r"probabilities must have shape \(3, 5\)"):
        headline_metrics(np.array([0, 1, 2]), np.zeros((3, 4)))


def test_intervals_match_scipy_on_a_known_input():
    values = [0.61, 0.64, 0.59, 0.70, 0.66]
    interval = t_interval(values, 0.95)
    low, high = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert interval["mean"] == pytest.approx(0.64)
    assert (interval["low"], interval["high"]) == pytest.approx((low, high), abs=1e-12)
    assert interval["high"] - interval["low"] == pytest.approx(2 * 2.7764451 * stats.sem(values))

    better = paired_difference({0: 0.9, 1: 0.8, 2: 0.85}, {0: 0.5, 1: 0.45, 2: 0.52})
    diffs = [0.4, 0.35, 0.33]
    expected = stats.t.interval(0.95, 2, loc=np.mean(diffs), scale=stats.sem(diffs))
    assert (better["low"], better["high"]) == pytest.approx(expected)
    assert better["verdict"] == "better"
    assert paired_difference({0: 0.1, 1: 0.2}, {0: 0.5, 1: 0.6})["verdict"] == "worse"
    unresolved = paired_difference({0: 0.5, 1: 0.7, 2: 0.4}, {0: 0.6, 1: 0.5, 2: 0.5})
    assert unresolved["verdict"] == "no detectable difference"


# --------------------------------------------------------------------------- the library


@pytest.fixture(scope="module")
def tiny_study():
    params = QuantumStudyParams(**TINY)
    table = run_study(_cache(), params, progress=False)
    summary = summarise(table, params)
    return params, table, summary


def test_study_table_has_every_contender_and_seed_and_repeats_exactly(tiny_study):
    params, table, summary = tiny_study
    assert len(table) == len(expand_grid(params)) == 2 * TRIALS_PER_SHARE
    assert table.groupby("train_fraction")["n_train"].unique().to_dict() == {0.5: [26], 1.0: [50]}
    for contender in CONTENDERS:
        rows = table[table["contender"] == contender]
        assert sorted(rows["seed"].unique()) == [0, 1]
        chosen = rows[rows["chosen"]]
        # One chosen value per setting and share; test scored there and nowhere else.
        assert chosen.groupby(["n_qubits", "reps", "train_fraction"],
                              dropna=False)["value"].nunique().eq(1).all()
        assert chosen["test_qwk"].notna().all() and rows[~rows["chosen"]]["test_qwk"].isna().all()
    twin = table[table["contender"] == "classical_twin"].set_index(["n_qubits", "seed", "value"])
    quantum = table[table["contender"] == "quantum"].set_index(["n_qubits", "seed", "value"])
    product = table[table["contender"] == "no_entanglement"].set_index(
        ["n_qubits", "seed", "value"])
    assert (twin["trainable_params"] == quantum["trainable_params"]).all()
    assert (product["trainable_params"] == quantum["trainable_params"]).all()
    assert product["entanglement"].isna().all() and (product["encoding"] == "angle").all()

    again = run_study(_cache(), params, progress=False)
    pd.testing.assert_frame_equal(table.drop(columns="train_seconds"),
                                  again.drop(columns="train_seconds"))

    assert len(summary["quantum_vs_twin"]) == 2
    assert [(p["quantum"], p["against"]) for p in summary["quantum_vs_no_entanglement"]] == [
        ("quantum n2 r1 angle linear", "no_entanglement n2 r1 angle"),
        ("quantum n3 r1 angle linear", "no_entanglement n3 r1 angle")]
    assert [p["against"] for p in summary["quantum_vs_frozen_circuit"]] == [
        "frozen_circuit n2 r1 angle linear", "frozen_circuit n3 r1 angle linear"]
    assert summary["headline"].startswith("On this data ")
    # Its second sentence: entanglement and circuit training over 2 settings x 2 shares.
    assert summary["headline"].endswith(summary["circuit"]["headline"])
    assert summary["circuit"]["headline"].startswith("Entanglement made ")
    assert " of the 4 (setting, training share) pairs" in summary["circuit"]["headline"]
    assert all(sum(c.values()) == 4 for c in summary["circuit"]["verdict_counts"].values())
    assert {e["train_fraction"] for e in summary["settings"]} == {1.0}  # the main verdict: all data
    few = summary["few_data"]
    assert [(f["train_fraction"], f["n_train"]) for f in few["fractions"]] == [(0.5, 26), (1.0, 50)]
    for share in few["fractions"]:
        assert len(share["quantum_vs_twin"]) == 2 and sum(share["verdict_counts"].values()) == 2
        for key in ("quantum_vs_twin", "quantum_vs_frozen_circuit", "quantum_vs_no_entanglement"):
            assert len(share[key]) == 2 and sum(
                share["verdict_counts_by_comparison"][key].values()) == 2
            assert all(p["test_qwk_difference"]["n"] == 2 for p in share[key])  # paired by seed
        assert set(share["best"]) == set(CONTENDERS)
    assert few["fractions"][1]["quantum_vs_twin"] == summary["quantum_vs_twin"]
    assert "50%" in few["headline"] and "encoder" in few["caveat"]
    assert summary["configured_quantum_stage"]["available"] is False
    figures = study_figures(summary)
    figure = figures["test_qwk_vs_qubits.png"]
    assert [line.get_label() for line in figure.axes[0].get_lines()][:4] == [
        "quantum", "classical_twin", "frozen_circuit", "no_entanglement"]
    lines = figures["test_qwk_vs_training_images.png"].axes[0].get_lines()
    assert {line.get_label() for line in lines} == set(CONTENDERS)
    assert all(list(line.get_xdata()) == [26, 50] for line in lines)
    page = add_study_section("<html><body><p>old</p></body></html>", summary)
    assert page.count('id="quantum-study-verdict"') == 1 and "<p>old</p>" in page
    assert few["headline"] in page and "only the head sees fewer images" in page
    assert add_study_section(page, summary).count('id="quantum-study"') == 1


def test_training_subsets_are_nested_stratified_and_the_same_for_every_contender_and_seed(
        monkeypatch):
    from qsight_pipeline.study.trials import StudyData, training_subsets

    grades = np.repeat(np.arange(5), [40, 20, 10, 6, 4])
    subsets = training_subsets(grades, [0.05, 0.1, 0.25, 0.5, 1.0], seed=3)
    shares = sorted(subsets)
    for small, large in zip(shares, shares[1:], strict=False):
        assert set(subsets[small]) < set(subsets[large])  # nested
    assert np.array_equal(subsets[1.0], np.arange(len(grades)))
    counts = {share: np.bincount(grades[rows], minlength=5).tolist()
              for share, rows in subsets.items()}
    assert counts[0.5] == [20, 10, 5, 3, 2] and counts[0.25] == [10, 5, 2, 2, 1]
    assert counts[0.05] == [2, 1, 1, 1, 1]  # every grade keeps at least one image
    again = training_subsets(grades, [1.0, 0.5, 0.25, 0.1, 0.05], seed=3)
    assert all(np.array_equal(again[k], subsets[k]) for k in subsets)
    assert not np.array_equal(training_subsets(grades, [0.5], seed=4)[0.5], subsets[0.5])

    # In the study every trial of a share trains on exactly those rows, whatever its contender.
    params = QuantumStudyParams(**{**TINY, "contenders": ["quantum", "logistic"]})
    data = StudyData.from_feature_cache(_cache(), params.train_fractions, params.train_subset_seed)
    from sklearn.pipeline import Pipeline

    from qsight_pipeline.study import trials as trial_module

    seen: dict[int, list[bytes]] = {}  # rows trained on -> the training matrix of every fit

    def spy(original):
        def fit_or_prepare(self, X, *args, **kwargs):
            seen.setdefault(len(X), []).append(np.asarray(X).tobytes())
            return original(self, X, *args, **kwargs)
        return fit_or_prepare

    # The torch heads train together (fit_together calls _prepare per estimator); the logistic
    # regression is a scikit-learn pipeline fitted on its own.
    monkeypatch.setattr(QuantumHeadClassifier, "_prepare", spy(QuantumHeadClassifier._prepare))
    monkeypatch.setattr(Pipeline, "fit", spy(Pipeline.fit))
    trial_module.run_trials(expand_grid(params), data, params, progress=False)
    sizes = {share: len(data.train_rows(share)) for share in params.train_fractions}
    assert sorted(seen) == sorted(sizes.values())
    # Per share: quantum 2 settings x 2 rates x 2 seeds, logistic 2 C x 2 seeds, on one matrix.
    assert {n: (len(fits), len(set(fits))) for n, fits in seen.items()} == {
        n: (12, 1) for n in sizes.values()}


def test_the_chosen_quantum_heads_are_scored_on_a_device_and_the_twin_verdict_is_stated_under_noise():
    pytest.importorskip("qiskit_ibm_runtime")
    params = QuantumStudyParams(**{
        **TINY, "n_qubits": [2], "train_fractions": [1.0], "epochs": 3,
        "contenders": ["quantum", "classical_twin"],
        "hardware": {"device": "fake_manila", "shots": 256, "mitigation": "readout"},
    })
    table = run_study(_cache(), params, progress=False)
    noisy = table[table["noisy_test_qwk"].notna()]
    # Only the chosen quantum rows (one setting, two seeds) are scored on the device.
    assert set(noisy["contender"]) == {"quantum"} and noisy["chosen"].all() and len(noisy) == 2
    assert (noisy["noisy_depth"] > 0).all() and (noisy["noisy_two_qubit_gates"] >= 1).all()
    assert table[~table.index.isin(noisy.index)]["noisy_test_qwk"].isna().all()
    again = run_study(_cache(), params, progress=False)
    pd.testing.assert_series_equal(table["noisy_test_qwk"], again["noisy_test_qwk"])

    summary = summarise(table, params)
    noise = summary["noise"]
    assert (noise["device"], noise["shots"], noise["mitigation"]) == ("fake_manila", 256, "readout")
    [setting] = noise["settings"]
    assert setting["against"] == "classical_twin n2 r1"
    assert setting["noisy_test_qwk"]["mean"] == pytest.approx(noisy["noisy_test_qwk"].mean())
    assert setting["exact_test_qwk"]["mean"] == pytest.approx(noisy["test_qwk"].mean())
    assert setting["verdict"] in ("better", "worse", "no detectable difference")
    assert noise["headline"].startswith("Under noise (on fake_manila at 256 shots with readout")
    page = add_study_section(None, summary)
    assert noise["headline"] in page


def test_study_hardware_with_an_unknown_device_is_refused_before_any_training():
    pytest.importorskip("qiskit_ibm_runtime")
    from qsight_pipeline.errors import ConfigError
    from qsight_pipeline.study.noise import check_study_hardware

    params = QuantumStudyParams(**{**TINY, "hardware": {"device": "fake_nowhere"}})
    with pytest.raises(ConfigError, match=r"quantum_study.hardware.device: unknown device "
                                          r"snapshot 'fake_nowhere'. Available in .*fake_torino"):
        check_study_hardware(params)
    wide = QuantumStudyParams(**{**TINY, "n_qubits": [2, 8], "hardware": {"device": "fake_manila"}})
    with pytest.raises(ConfigError, match="quantum_study.hardware.device: the quantum head has 8 "
                                          "qubits but fake_manila has only 5"):
        check_study_hardware(wide)


# --------------------------------------------------------------------------- on a cluster

# A grid small enough to pay a cluster's start-up only: 12 trials, 3 units of work.
CLUSTER_GRID = {**TINY, "n_qubits": [2], "train_fractions": [1.0],
                "contenders": ["quantum", "no_entanglement", "logistic"]}


@pytest.mark.parametrize(("backend", "missing", "extra"), [("ray", "ray", "cluster-ray"),
                                                          ("dask", "distributed", "cluster-dask")])
def test_a_missing_cluster_package_is_one_line_naming_the_extra_before_any_work(
        backend, missing, extra, monkeypatch):
    import importlib.util

    from qsight_pipeline.errors import UserError
    from qsight_pipeline.pipelines.quantum_study.nodes import run_quantum_study

    if backend == "ray" and importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed here")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == missing else find_spec(name, *a))
    params = QuantumStudyParams(**{**CLUSTER_GRID, "backend": backend})
    message = (f"quantum_study.backend is {backend}, which needs {missing}: install it with "
               f"`pip install 'qsight_pipeline[{extra}]'`, or set quantum_study.backend: loky.")
    # An empty cache would fail at the first step of any work: the backend is checked first.
    for run in (lambda: run_study({}, params, progress=False),
                lambda: run_quantum_study({}, params)):
        with pytest.raises(UserError) as raised:
            run()
        assert str(raised.value) == message and "\n" not in message


def test_an_unreachable_dask_scheduler_names_the_cluster_address():
    import socket

    import dask
    import dask.distributed  # noqa: F401 - its config defaults load before the override below

    from qsight_pipeline.study.backends import ClusterUnavailableError

    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{free.getsockname()[1]}"
    params = QuantumStudyParams(**{**CLUSTER_GRID, "backend": "dask", "cluster_address": address})
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), pytest.raises(
            ClusterUnavailableError, match=f"quantum_study.cluster_address: cannot reach the "
                                           f"Dask scheduler at {address}"):
        run_study(_cache(), params, progress=False)


def _assert_tables_agree(table: pd.DataFrame, loky: pd.DataFrame) -> None:
    metrics = [c for c in loky if c.startswith(("val_", "test_"))]
    others = [c for c in loky if c not in metrics and c != "train_seconds"]
    assert len(table) == len(loky) == 12
    # The same units of work with the same seeds: equal within the tolerance of heads trained
    # together (README: 1e-4); in practice to the last bit.
    pd.testing.assert_frame_equal(table[metrics], loky[metrics], check_exact=False, atol=1e-4)
    pd.testing.assert_frame_equal(table[others], loky[others])


@pytest.fixture(scope="module")
def loky_cluster_grid():
    return run_study(_cache(), QuantumStudyParams(**CLUSTER_GRID), progress=False)


def test_the_study_on_a_running_dask_cluster_gives_the_loky_table(loky_cluster_grid, caplog):
    from dask.distributed import LocalCluster

    # A cluster that is already running, reached by its scheduler's address (a worker thread in
    # this process: starting worker processes is the slow test below).
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, caplog.at_level("INFO"):
        params = QuantumStudyParams(**CLUSTER_GRID, backend="dask",
                                    cluster_address=cluster.scheduler_address)
        table = run_study(_cache(), params, progress=False)
    assert f"trials on the Dask cluster at {cluster.scheduler_address}" in caplog.text
    _assert_tables_agree(table, loky_cluster_grid)


@pytest.mark.slow  # the study starts a local Dask cluster of worker processes
def test_the_study_on_its_own_local_dask_cluster_gives_the_loky_table(loky_cluster_grid):
    environment = dict(os.environ)
    table = run_study(_cache(), QuantumStudyParams(**CLUSTER_GRID, backend="dask"),
                      progress=False)
    _assert_tables_agree(table, loky_cluster_grid)
    # Dask's nanny sets OMP_NUM_THREADS=1 (and more) in the starting process for its workers;
    # left there, every torch process the run starts after the study gets one thread.
    assert dict(os.environ) == environment


def test_mlflow_hook_logs_the_study_table_summary_and_figure(tiny_study, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from types import SimpleNamespace

    from qsight_pipeline.kedro_app.hooks import MlflowTrackingHook
    from tests.test_tracking import fake_context, in_fresh_thread, project_catalog

    _, table, summary = tiny_study
    outputs = {"quantum_study_table": table, "quantum_study_summary": summary,
               "quantum_study_figures": study_figures(summary)}
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("study", artifact_location=(tmp_path / "a").as_uri())

        def tracked_run():
            with mlflow.start_run(experiment_id=experiment) as run:
                hook = MlflowTrackingHook()
                hook.after_context_created(context=fake_context(tmp_path, {}))
                hook.before_pipeline_run(run_params={}, pipeline=None,
                                         catalog=project_catalog())
                for name, value in outputs.items():
                    hook.after_node_run(node=SimpleNamespace(name=name), outputs={name: value})
            return run.info.run_id

        run_id = in_fresh_thread(tracked_run)
        client = mlflow.MlflowClient()
        logged = {a.path for a in client.list_artifacts(run_id, "records")}
        logged |= {a.path for a in client.list_artifacts(run_id, "tables")}
        figures = {a.path for a in client.list_artifacts(run_id, "report/figures")}
        csv = Path(client.download_artifacts(run_id, "tables/quantum_study_table.csv", tmp_path))
    finally:
        mlflow.set_tracking_uri(previous)
    assert logged == {"tables/quantum_study_table.csv", "records/quantum_study_summary.json"}
    assert figures == {"report/figures/test_qwk_vs_qubits.png",
                       "report/figures/test_qwk_vs_training_images.png"}
    assert len(pd.read_csv(csv)) == len(table)


# --------------------------------------------------------------------------- the pipeline


def test_quantum_study_pipeline_runs_from_the_feature_cache_alone(smoke_copy):
    data = smoke_copy.path / "data"
    keep = data / OUTPUT_DIR / "quantum_training_data.pkl"
    saved = keep.read_bytes()
    metrics = json.loads((data / "08_reporting/quantum_metrics.json").read_text())
    (data / "01_raw").unlink()
    for layer in data.iterdir():
        shutil.rmtree(layer) if layer.is_dir() else layer.unlink()  # the run lock is a file
    (data / "01_raw").mkdir(parents=True)
    keep.parent.mkdir(parents=True)
    keep.write_bytes(saved)
    (data / "08_reporting").mkdir()
    (data / "08_reporting/quantum_metrics.json").write_text(json.dumps(metrics))

    smoke_copy.run("--pipelines", "quantum_study", env="smoke")
    table = pd.read_csv(data / "08_reporting/quantum_study.csv")
    assert set(table["contender"]) == set(CONTENDERS)
    assert len(table) == 2 * TRIALS_PER_SHARE  # train_fractions [0.5, 1.0] in conf/smoke
    assert {"val_referable_auc", "test_macro_f1", "trainable_params", "train_seconds"} <= set(table)
    summary = json.loads((data / "08_reporting/quantum_study_summary.json").read_text())
    gap = summary["configured_quantum_stage"]
    assert gap["available"] and gap["stage_test_qwk"] == pytest.approx(
        metrics["test"]["quadratic_weighted_kappa"])
    for name in ("test_qwk_vs_qubits.png", "test_qwk_vs_training_images.png"):
        assert (data / "08_reporting/quantum_study_figures" / name).stat().st_size
    report = (data / "08_reporting/report.html").read_text()
    assert summary["headline"] in report
    assert not (data / OUTPUT_DIR / "phase1_classical_model.pth").exists()


# --------------------------------------------------------------------------- the quantum stage


def test_quantum_standardize_is_fitted_on_train_and_saved_with_the_head():
    from qsight_pipeline.models.quantum import QuantumConfig, QuantumHead

    plain = QuantumHead(6, QuantumConfig(n_qubits=2, reps=1, standardize=False))
    assert set(plain.state_dict()) == {"projection.weight", "projection.bias", "circuit_weights",
                                       "readout.weight", "readout.bias"}
    head = QuantumHead(6, QuantumConfig(n_qubits=2, reps=1, standardize=True))
    train = np.random.default_rng(0).normal(5.0, 3.0, size=(50, 6))
    head.fit_standardizer(train)
    assert np.allclose(head.feature_mean.numpy(), train.mean(axis=0))
    assert np.allclose(head.feature_scale.numpy(), train.std(axis=0))
    restored = QuantumHead(6, QuantumConfig(n_qubits=2, reps=1, standardize=True))
    restored.load_state_dict(head.state_dict())
    features = torch.as_tensor(train[:4], dtype=torch.float32)
    assert torch.allclose(restored(features), head(features))
    with pytest.raises(ConfigError, match=r"quantum\.standardize"):
        QuantumConfig.from_params({"standardize": "yes"})
