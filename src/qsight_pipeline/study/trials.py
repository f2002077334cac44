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
    """Features and grades per split, and head B's width, taken from the feature cache."""

    features: dict[str, np.ndarray]
    grades: dict[str, np.ndarray]
    head_settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_feature_cache(cls, cache: dict[str, Any]) -> StudyData:
        splits = ("train", "val", "test")
        model_config = (cache.get("metadata") or {}).get("model_config") or {}
        return cls(
            {s: np.asarray(cache[f"{s}_features"], dtype=np.float64) for s in splits},
            {s: np.asarray(cache[f"{s}_labels"], dtype=np.int64) for s in splits},
            {k: model_config[k] for k in ("head_hidden_dim", "dropout") if k in model_config},
        )


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
        start = time.perf_counter()
        estimator.fit(data.features["train"], data.grades["train"])
        seconds = time.perf_counter() - start
        val = scores(data.grades["val"], grade_probabilities(estimator, data.features["val"]))
        test_probabilities = grade_probabilities(estimator, data.features["test"])
    finally:
        torch.set_num_threads(threads)
    row = {**trial.to_dict(), **{f"val_{k}": v for k, v in val.items()},
           "trainable_params": trainable_params(estimator), "train_seconds": seconds}
    return {"row": row, "test_probabilities": test_probabilities}


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
