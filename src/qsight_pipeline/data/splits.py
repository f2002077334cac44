"""Patient-grouped, grade-stratified train/val/test split.

Every patient goes to exactly one split, so both eyes of a patient never sit on both sides of an
evaluation. Patients are stratified by their worst grade: within each grade, patients are shuffled
with the seed and shared out by largest remainder, so every grade is split in the requested
proportions (to within one patient) and the result depends only on the seed and the data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qsight_pipeline.constants import SPLITS
from qsight_pipeline.errors import UserError


class SplitError(UserError, ValueError):
    """The split parameters or the data cannot give the requested split."""


def split_fractions(val_fraction: float, test_fraction: float) -> dict[str, float]:
    """``{"train": .., "val": .., "test": ..}``, validated."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise SplitError(f"ingestion.{name} must be in [0, 1), got {value!r}.")
    train = 1.0 - val_fraction - test_fraction
    if train <= 0:
        raise SplitError(
            f"ingestion.val_fraction + ingestion.test_fraction must be below 1 "
            f"(got {val_fraction} + {test_fraction})."
        )
    return {"train": train, "val": val_fraction, "test": test_fraction}


def assign_splits(
    records: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int
) -> pd.Series:
    """The split name of each row of ``records`` (columns ``patient_id``, ``grade``).

    Raises:
        SplitError: a split with a positive fraction would be empty.
    """
    fractions = split_fractions(val_fraction, test_fraction)
    patient_grade = records.groupby("patient_id", sort=True)["grade"].max()
    rng = np.random.default_rng(seed)
    split_of_patient: dict[str, str] = {}
    for grade in sorted(patient_grade.unique()):
        patients = patient_grade.index[patient_grade == grade].to_numpy()
        patients = patients[rng.permutation(len(patients))]
        counts = _largest_remainder(len(patients), fractions, rng)
        start = 0
        for split in SPLITS:
            for patient in patients[start : start + counts[split]]:
                split_of_patient[patient] = split
            start += counts[split]

    splits = records["patient_id"].map(split_of_patient)
    present = set(splits)
    empty = [s for s in SPLITS if fractions[s] > 0 and s not in present]
    if empty:
        raise SplitError(
            f"The {', '.join(empty)} split would be empty: {len(patient_grade)} patients are too "
            f"few for val_fraction={val_fraction}, test_fraction={test_fraction}. Use more images "
            "or larger fractions."
        )
    return splits.rename("split")


def _largest_remainder(total: int, fractions: dict[str, float], rng: np.random.Generator) -> dict:
    quotas = {split: total * fraction for split, fraction in fractions.items()}
    counts = {split: int(np.floor(quota)) for split, quota in quotas.items()}
    left = total - sum(counts.values())
    # Ties (common for tiny strata) are broken at random, so no split is always favoured.
    tie_break = rng.random(len(SPLITS))
    order = sorted(SPLITS, key=lambda s: (-(quotas[s] - counts[s]), tie_break[SPLITS.index(s)]))
    for split in order[:left]:
        counts[split] += 1
    return counts


def split_rows(manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    """The manifest's rows of one split, in the order of its image cache (``cache_index``)."""
    return manifest[manifest["split"] == split].sort_values("cache_index")


def split_grades(manifest: pd.DataFrame, split: str) -> np.ndarray:
    """Grades of one split in the order of its image cache."""
    return split_rows(manifest, split)["grade"].to_numpy(dtype=np.int64)


def split_image_ids(manifest: pd.DataFrame, split: str) -> list[str]:
    """Image ids of one split in the order of its image cache."""
    return split_rows(manifest, split)["image_id"].astype(str).tolist()
