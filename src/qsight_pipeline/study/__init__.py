"""The quantum-vs-classical study, free of Kedro: grid, trials, statistics, figures.

``run_study(cache, params)`` trains every contender (scikit-learn estimators from
``models.estimators`` and scikit-learn's logistic regression) on the feature cache, at every
training share (nested stratified subsets of the training split), chooses each one's
hyperparameter on validation, scores test once per contender, setting, share and seed, optionally
scores the chosen quantum heads on a device snapshot, and returns the tidy table. Trials run in
joblib's loky processes, or on a Dask or Ray cluster (``quantum_study.backend``, ``backends``).
``summarise`` and ``study_figures`` turn it into the summary and the figure.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from qsight_pipeline.config.quantum_study import QuantumStudyParams
from qsight_pipeline.study.backends import check_backend
from qsight_pipeline.study.figures import study_figures
from qsight_pipeline.study.grid import Trial, expand_grid
from qsight_pipeline.study.summary import build_table, summarise
from qsight_pipeline.study.trials import StudyData, run_trials

logger = logging.getLogger(__name__)

__all__ = ["QuantumStudyParams", "StudyData", "Trial", "expand_grid", "run_study",
           "study_figures", "summarise"]


def run_study(cache: dict[str, Any], params: QuantumStudyParams,
              progress: bool = True) -> pd.DataFrame:
    """Every trial of ``params`` on the feature cache; the tidy table."""
    check_backend(params)  # a missing cluster package stops the study before any work
    data = StudyData.from_feature_cache(cache, params.train_fractions, params.train_subset_seed)
    trials = expand_grid(params)
    results = run_trials(trials, data, params, progress=progress)
    table = build_table(trials, results, data)
    if params.hardware is not None:
        # lazy: import cycle (study.noise imports qsight_pipeline.study.trials)
        from qsight_pipeline.study.noise import score_under_noise

        table = score_under_noise(table, results, data, params)
    return table
