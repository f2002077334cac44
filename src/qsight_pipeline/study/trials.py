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
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from qsight_pipeline.config.quantum_study import QuantumStudyParams
from qsight_pipeline.constants import NUM_GRADES
from qsight_pipeline.study.contenders import build_estimator
from qsight_pipeline.study.grid import Trial
from qsight_pipeline.training.metrics import grading_metrics

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
    """The study's four metrics (``nan`` where undefined, e.g. AUC with one class)."""
    metrics = grading_metrics(grades, probabilities)
    return {name: np.nan if metrics[key] is None else float(metrics[key])
            for name, key in METRICS.items()}


def trainable_params(estimator: Any) -> int:
    if hasattr(estimator, "n_trainable_params_"):
        return int(estimator.n_trainable_params_)
    model = estimator[-1]  # the logistic pipeline: coefficients and intercepts
    return int(model.coef_.size + model.intercept_.size)


def run_trial(trial: Trial, data: StudyData, params: QuantumStudyParams) -> dict[str, Any]:
    """Fit one trial; returns its row (validation scores) and its unscored test probabilities."""
    import torch

    # One thread per trial: the parallelism is across trials, never inside one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        estimator = build_estimator(trial, params, data.head_settings)
        rows = data.train_rows(trial.train_fraction)
        start = time.perf_counter()
        estimator.fit(data.features["train"][rows], data.grades["train"][rows])
        seconds = time.perf_counter() - start
        val = scores(data.grades["val"], grade_probabilities(estimator, data.features["val"]))
        test_probabilities = grade_probabilities(estimator, data.features["test"])
    finally:
        torch.set_num_threads(threads)
    row = {**trial.to_dict(), "n_train": len(rows), **{f"val_{k}": v for k, v in val.items()},
           "trainable_params": trainable_params(estimator), "train_seconds": seconds}
    result = {"row": row, "test_probabilities": test_probabilities}
    if keeps_trained_head(trial, params):
        # Scored under device noise after the choice on validation (study.noise): the head's
        # tensors and the scaler, plain data that pickles across the worker processes.
        result["trained_head"] = {
            "state": {k: v.detach().clone() for k, v in estimator.module_.state_dict().items()},
            "scaler_mean": estimator.scaler_.mean_.copy(),
            "scaler_scale": estimator.scaler_.scale_.copy(),
        }
    return result


def keeps_trained_head(trial: Trial, params: QuantumStudyParams) -> bool:
    """Quantum trials on the whole training share, when the study is also scored under noise."""
    return (params.hardware is not None and trial.contender == "quantum"
            and trial.train_fraction == max(params.train_fractions))


def worker_count(n_jobs: int) -> int:
    """``-1``: every core this process may use."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, available or 1) if n_jobs == -1 else n_jobs


def run_trials(trials: list[Trial], data: StudyData, params: QuantumStudyParams,
               progress: bool = True) -> list[dict[str, Any]]:
    """All trials, in parallel processes (joblib's loky), with one progress bar; input order."""
    jobs = min(worker_count(params.n_jobs), max(1, len(trials)))
    logger.info("Quantum study: %d trials on %d worker(s)", len(trials), jobs)
    # Workers get whole trials and pin torch to one thread each, so cores are never shared by
    # two thread pools; results come back as they finish and are put in trial order below.
    parallel = Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered")
    indexed = parallel(delayed(_indexed_trial)(i, t, data, params) for i, t in enumerate(trials))
    results: list[Any] = [None] * len(trials)
    for index, result in tqdm(indexed, total=len(trials), desc="quantum study",
                              unit="trial", disable=not progress):
        results[index] = result
    return results


def _indexed_trial(index: int, trial: Trial, data: StudyData,
                   params: QuantumStudyParams) -> tuple[int, dict[str, Any]]:
    return index, run_trial(trial, data, params)
