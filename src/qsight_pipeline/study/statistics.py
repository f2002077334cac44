"""The study's statistics: choice on validation, t-intervals across seeds, paired differences."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

SETTING_COLUMNS = ["contender", "n_qubits", "reps", "encoding", "entanglement"]
# A hyperparameter is chosen per setting AND training share: each share is a study of its own.
GROUP_COLUMNS = [*SETTING_COLUMNS, "train_fraction"]
BETTER, WORSE, UNRESOLVED = "better", "worse", "no detectable difference"


def t_interval(values: Any, confidence: float = 0.95) -> dict[str, float]:
    """Mean and Student-t confidence interval of the mean across seeds (``scipy.stats``)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    n = int(values.size)
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "std": math.nan, "n": 0}
    mean = float(values.mean())
    sem = float(stats.sem(values)) if n > 1 else math.nan
    if n > 1 and sem > 0:
        low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    else:  # one seed, or every seed the same: the data give no spread to widen the interval
        low = high = mean
    std = float(values.std(ddof=1)) if n > 1 else math.nan
    return {"mean": mean, "low": float(low), "high": float(high), "std": std, "n": n}


def verdict(interval: Mapping[str, float]) -> str:
    """``better`` / ``worse`` when the interval of a difference excludes 0, else unresolved."""
    if interval["n"] == 0:
        return UNRESOLVED
    if interval["low"] > 0:
        return BETTER
    if interval["high"] < 0:
        return WORSE
    return UNRESOLVED


def paired_difference(first: Mapping[int, float], second: Mapping[int, float],
                      confidence: float = 0.95) -> dict[str, Any]:
    """``first - second`` paired by seed, its t-interval and the verdict for ``first``."""
    seeds = sorted(set(first) & set(second))
    differences = [first[s] - second[s] for s in seeds]
    interval = t_interval(differences, confidence)
    return {**interval, "seeds": seeds, "verdict": verdict(interval)}


def _setting_groups(table: pd.DataFrame) -> Any:
    columns = GROUP_COLUMNS if "train_fraction" in table else SETTING_COLUMNS
    return table.groupby(columns, dropna=False, sort=False)


def choose_hyperparameters(table: pd.DataFrame) -> pd.DataFrame:
    """Mark, per contender, setting and training share, the value with the best mean validation
    QWK.

    Ties go to the value listed first in the grid. Only validation columns are read.
    """
    table = table.copy()
    table["chosen"] = False
    for _, rows in _setting_groups(table):
        means = rows.groupby("value", sort=False)["val_qwk"].mean()
        best = means.index[int(np.argmax(means.to_numpy()))]
        table.loc[rows.index[rows["value"] == best], "chosen"] = True
    return table


def setting_label(row: Mapping[str, Any]) -> str:
    """``quantum n4 r2 angle linear``; the baselines are just their name."""
    parts = [str(row["contender"])]
    for key, prefix in (("n_qubits", "n"), ("reps", "r"), ("encoding", ""), ("entanglement", "")):
        value = row.get(key)
        if value is not None and not pd.isna(value):
            parts.append(f"{prefix}{int(value) if prefix else value}")
    return " ".join(parts)
