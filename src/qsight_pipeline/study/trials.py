"""Running trials: fit on train, score on validation, keep the test probabilities unscored.

The test split is scored later, once per contender and seed, after the hyperparameter has been
chosen on validation (``statistics.choose_hyperparameters``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from qsight_pipeline.config.quantum_study import QuantumStudyParams
from qsight_pipeline.constants import NUM_GRADES
from qsight_pipeline.models.fit_together import fit_together
from qsight_pipeline.study.backends import RETURN_AS, study_backend
from qsight_pipeline.study.contenders import build_estimator
from qsight_pipeline.study.grid import Trial
from qsight_pipeline.training.metrics import headline_metrics

logger = logging.getLogger(__name__)

METRICS = {"qwk": "quadratic_weighted_kappa", "accuracy": "accuracy", "macro_f1": "macro_f1",
           "referable_auc": "referable_auc"}


@dataclass
class StudyData:
    """Features and grades per split, head B's width, and the training subsets per share."""

    features: dict[str, np.ndarray]
    grades: dict[str, np.ndarray]
    head_settings: dict[str, Any] = field(default_factory=dict)
    subsets: dict[float, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_feature_cache(cls, cache: dict[str, Any], fractions: list[float] = (1.0,),
                           subset_seed: int = 0) -> StudyData:
        splits = ("train", "val", "test")
        model_config = (cache.get("metadata") or {}).get("model_config") or {}
        grades = {s: np.asarray(cache[f"{s}_labels"], dtype=np.int64) for s in splits}
        return cls(
            {s: np.asarray(cache[f"{s}_features"], dtype=np.float64) for s in splits},
            grades,
            {k: model_config[k] for k in ("head_hidden_dim", "dropout") if k in model_config},
            training_subsets(grades["train"], fractions, subset_seed),
        )

    def train_rows(self, fraction: float) -> np.ndarray:
        """Row indices of the training split used at ``fraction`` (all rows at 1.0)."""
        if fraction not in self.subsets:
            return np.arange(len(self.grades["train"]))
        return self.subsets[fraction]


def training_subsets(grades: np.ndarray, fractions: Any, seed: int = 0) -> dict[float, np.ndarray]:
    """Nested, stratified training subsets: ``{fraction: sorted row indices}``.

    Each grade's rows are shuffled once (``seed``); a share takes the first
    ``max(1, round(fraction * n_grade))`` rows of every grade, so a smaller share is always a subset
    of a larger one, every grade present in training stays present, and the subsets do not depend
    on the contender or the training seed.
    """
    rng = np.random.default_rng(seed)
    grades = np.asarray(grades)
    order = [rng.permutation(np.flatnonzero(grades == grade)) for grade in np.unique(grades)]
    return {
        float(fraction): np.sort(np.concatenate(
            [rows[: max(1, int(round(fraction * len(rows))))] for rows in order]
        )) if order else np.zeros(0, dtype=np.int64)
        for fraction in sorted(fractions)
    }


def grade_probabilities(estimator: Any, features: np.ndarray) -> np.ndarray:
    """``(n, 5)`` probabilities; a grade the estimator never saw in training gets 0."""
    probabilities = estimator.predict_proba(features)
    full = np.zeros((len(features), NUM_GRADES))
    full[:, np.asarray(estimator.classes_, dtype=np.int64)] = probabilities
    return full


def scores(grades: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """The study's four metrics (``nan`` where undefined, e.g. AUC with one class): the values of
    ``grading_metrics``, through its fast twin ``headline_metrics`` (thousands of small splits)."""
    metrics = headline_metrics(grades, probabilities)
    return {name: np.nan if metrics[key] is None else float(metrics[key])
            for name, key in METRICS.items()}


def trainable_params(estimator: Any) -> int:
    if hasattr(estimator, "n_trainable_params_"):
        return int(estimator.n_trainable_params_)
    model = estimator[-1]  # the logistic pipeline: coefficients and intercepts
    return int(model.coef_.size + model.intercept_.size)


def run_trial(trial: Trial, data: StudyData, params: QuantumStudyParams) -> dict[str, Any]:
    """Fit one trial; returns its row (validation scores) and its unscored test probabilities."""
    return run_unit([trial], data, params)[0]


def run_unit(trials: list[Trial], data: StudyData, params: QuantumStudyParams) -> list[dict]:
    """Fit trials of one setting (see :func:`work_units`); their results in the same order.

    Several trials of a torch head are trained as one vectorised run (``fit_together``): the
    same seeds, data and recipe as one by one, at a fraction of the per-step overhead.
    """
    # One thread per worker: the parallelism is across trials, never inside one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        estimators = [build_estimator(trial, params, data.head_settings) for trial in trials]
        rows = data.train_rows(trials[0].train_fraction)
        X, y = data.features["train"][rows], data.grades["train"][rows]
        if len(estimators) > 1:
            fit_together(estimators, X, y)
            seconds = [estimator.train_seconds_ for estimator in estimators]
        else:
            start = time.perf_counter()
            estimators[0].fit(X, y)
            seconds = [time.perf_counter() - start]
        return [_trial_result(trial, estimator, len(rows), spent, data, params)
                for trial, estimator, spent in zip(trials, estimators, seconds, strict=True)]
    finally:
        torch.set_num_threads(threads)


def _trial_result(trial: Trial, estimator: Any, n_train: int, seconds: float, data: StudyData,
                  params: QuantumStudyParams) -> dict[str, Any]:
    val = scores(data.grades["val"], grade_probabilities(estimator, data.features["val"]))
    row = {**trial.to_dict(), "n_train": n_train, **{f"val_{k}": v for k, v in val.items()},
           "trainable_params": trainable_params(estimator), "train_seconds": seconds}
    result = {"row": row,
              "test_probabilities": grade_probabilities(estimator, data.features["test"])}
    if keeps_trained_head(trial, params):
        # Scored under device noise after the choice on validation (study.noise): the head's
        # tensors and the scaler, plain data that pickles across the worker processes.
        result["trained_head"] = {
            "state": {k: v.detach().clone() for k, v in estimator.module_.state_dict().items()},
            "scaler_mean": estimator.scaler_.mean_.copy(),
            "scaler_scale": estimator.scaler_.scale_.copy(),
        }
    return result


def work_units(trials: list[Trial], params: QuantumStudyParams,
               vectorise: bool = True) -> list[list[int]]:
    """Indices of ``trials`` grouped into units of work, in first-appearance order.

    Trials of a contender whose estimator trains vectorised (``vectorisable``) and that differ
    only in the learning rate and the seed form one unit; every other trial is a unit alone
    (every trial, with ``vectorise=False``: the one-by-one path the benchmark compares with).
    """
    units: dict[Any, list[int]] = {}
    known: dict[str, bool] = {}
    for index, trial in enumerate(trials):
        together = (vectorise and trial.hyperparameter == "learning_rate"
                    and _vectorisable(trial, params, known))
        key = (trial.setting(), trial.hyperparameter) if together else ("alone", index)
        units.setdefault(key, []).append(index)
    return list(units.values())


def _vectorisable(trial: Trial, params: QuantumStudyParams, known: dict[str, bool]) -> bool:
    # One estimator per contender answers for all its trials (building 3,150 costs seconds).
    if trial.contender not in known:
        estimator = build_estimator(trial, params, {})
        known[trial.contender] = bool(getattr(estimator, "vectorisable", False))
    return known[trial.contender]


def keeps_trained_head(trial: Trial, params: QuantumStudyParams) -> bool:
    """Quantum trials on the whole training share, when the study is also scored under noise."""
    return (params.hardware is not None and trial.contender == "quantum"
            and trial.train_fraction == max(params.train_fractions))


def worker_count(n_jobs: int) -> int:
    """``-1``: every core this process may use."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, available or 1) if n_jobs == -1 else n_jobs


def run_trials(trials: list[Trial], data: StudyData, params: QuantumStudyParams,
               progress: bool = True, vectorise: bool = True) -> list[dict[str, Any]]:
    """All trials, in parallel on ``quantum_study.backend`` (joblib's loky processes, or a Dask
    or Ray cluster), with one progress bar; input order."""
    units = work_units(trials, params, vectorise)
    workers = min(worker_count(params.n_jobs), max(1, len(units)))
    results: list[Any] = [None] * len(trials)
    with study_backend(params, workers) as n_jobs:
        logger.info("Quantum study: %d trials in %d units of work on %s (n_jobs %d)",
                    len(trials), len(units), params.backend, n_jobs)
        # Workers get whole units and pin torch to one thread each, so cores are never shared by
        # two thread pools; results come back as they finish and are put in trial order below.
        parallel = Parallel(n_jobs=n_jobs, return_as=RETURN_AS[params.backend])
        done = parallel(delayed(_indexed_unit)(unit, [trials[i] for i in unit], data, params)
                        for unit in units)
        with tqdm(total=len(trials), desc="quantum study", unit="trial",
                  disable=not progress) as bar:
            for unit, unit_results in done:
                for index, result in zip(unit, unit_results, strict=True):
                    results[index] = result
                bar.update(len(unit))
    return results


def _indexed_unit(unit: list[int], trials: list[Trial], data: StudyData,
                  params: QuantumStudyParams) -> tuple[list[int], list[dict[str, Any]]]:
    return unit, run_unit(trials, data, params)
