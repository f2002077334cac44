"""Bad data is refused before anything trains on it.

- :func:`check_finite_features` refuses a feature cache holding NaN or infinity before training.
- :func:`grade_coverage` finds the grades a split lacks (a warning) and refuses a data set with a
  single grade (nothing to learn, and every kappa would be 0).

The training's own guards (a diverging loss) are ``training.guards``. This module never imports
Kedro.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from qsight_pipeline.constants import GRADE_NAMES, NUM_GRADES
from qsight_pipeline.errors import ArtifactError, UserError


def check_finite_features(cache: Mapping[str, Any], source: str = "quantum_training_data.pkl") -> None:
    """Refuse a feature cache whose features or logits hold NaN or infinity, naming the rows."""
    for key, value in cache.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            continue
        bad = ~np.isfinite(value)
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0])
            raise ArtifactError(
                f"{source}: `{key}` holds {int(bad.sum())} NaN/infinite value(s) in "
                f"{len(rows)} row(s) (first rows: {', '.join(map(str, rows[:5].tolist()))}). "
                "Training on them would give a NaN model. The classical model that exported them "
                "has probably diverged: retrain it with a lower learning rate and re-export "
                "with `kedro run --pipelines classical,features`."
            )


def grade_coverage(grades_by_split: Mapping[str, Sequence[int] | np.ndarray]) -> list[str]:
    """Warnings for grades missing from a split; :class:`UserError` when only one grade exists."""
    everything = np.concatenate(
        [np.asarray(g, dtype=np.int64).ravel() for g in grades_by_split.values()] or [np.zeros(0)]
    )
    present = sorted(set(everything.tolist()))
    if len(present) <= 1:
        only = f"grade {present[0]} ({GRADE_NAMES[present[0]]})" if present else "no grade"
        raise SingleGradeError(
            f"The data set holds {only} only: a grader cannot learn from one class and every "
            "agreement metric would be 0. Check dataset.root and the labels (trainLabels.csv or "
            "the class folders)."
        )
    warnings = []
    for split, grades in grades_by_split.items():
        missing = sorted(set(range(NUM_GRADES)) - set(np.asarray(grades).tolist()))
        if missing:
            names = ", ".join(f"{g} ({GRADE_NAMES[g]})" for g in missing)
            warnings.append(
                f"The {split} split has no image of grade {names}: its per-grade recall and "
                "confusion-matrix rows for those grades are empty, and kappa is computed "
                "without them."
            )
    return warnings


class SingleGradeError(UserError, ValueError):
    """The labelled images all have the same grade."""
