"""One ``predictions.csv`` row per graded photograph: the ``predict`` and ``evaluate`` pipelines'
shared table format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qsight_pipeline.constants import GRADE_NAMES, HEADS
from qsight_pipeline.files.plain import path_text


def prediction_row(prediction: Any, path: Path, image: str) -> dict[str, Any]:
    """One CSV row of a :class:`~qsight_pipeline.inference.Prediction` (NaN where it failed).

    The gate's columns: ``decision`` ("refer for manual grading" for a gated image),
    ``gradable``, ``in_distribution`` (empty for a model saved without a gate), ``gate_reasons``
    (why it was gated, ``; ``-separated), ``ood_distance`` and ``gate_score``. ``image``,
    ``path`` and ``error`` show a file name that is not valid UTF-8 escaped (``bad\\xff.png``).
    """
    # lazy: kept out of kedro start-up
    from qsight_pipeline.inference.predict import gate_reasons  # torch: only when grading

    failed = prediction.error is not None
    probs = prediction.ensemble_probabilities or [np.nan] * len(GRADE_NAMES)
    row: dict[str, Any] = {
        "image": path_text(image),
        "path": path_text(path),
        "predicted_grade": pd.NA if failed else prediction.grade,
        "grade_name": prediction.grade_name,
        **{f"prob_grade_{g}": float(probs[g]) for g in range(len(GRADE_NAMES))},
        "referable_probability": prediction.referable_probability,
        "refer": pd.NA if failed else prediction.refer,
        "needs_review": pd.NA if failed else prediction.needs_review,
        "decision": prediction.decision or "",
        "gradable": pd.NA if prediction.gradable is None else prediction.gradable,
        "in_distribution": pd.NA if prediction.in_distribution is None else prediction.in_distribution,
        "gate_reasons": "; ".join(gate_reasons(prediction)),
        "ood_distance": prediction.ood_distance,
        "gate_score": prediction.gate_score,
        "entropy": prediction.entropy,
        "disagreement": prediction.disagreement,
        **{f"weight_{h}": prediction.gate_weights.get(h, np.nan) for h in HEADS},
    }
    for head in HEADS:
        head_probs = prediction.head_probabilities.get(head) or [np.nan] * len(GRADE_NAMES)
        row.update({f"prob_{head}_grade_{g}": float(head_probs[g]) for g in range(len(GRADE_NAMES))})
    row["latency_ms"] = prediction.latency_ms.get("total", np.nan)
    row["error"] = path_text(prediction.error or "")
    return row
