"""The patient-grouped, grade-stratified split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qsight_pipeline.data.splits import SplitError, assign_splits


def patients_table(patients: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    worst = rng.choice(5, size=patients, p=[0.6, 0.1, 0.15, 0.075, 0.075])
    rows = []
    for patient, grade in enumerate(worst):
        other = max(0, grade - int(rng.integers(2)))
        rows += [(f"{patient}_left", str(patient), grade), (f"{patient}_right", str(patient), other)]
    return pd.DataFrame(rows, columns=["image_id", "patient_id", "grade"])


def test_both_eyes_of_a_patient_share_a_split():
    records = patients_table()
    split = assign_splits(records, 0.15, 0.15, seed=3)
    per_patient = records.assign(split=split).groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()


def test_fractions_hold_within_every_grade():
    records = patients_table(400)
    split = assign_splits(records, 0.2, 0.1, seed=0)
    patients = records.assign(split=split).groupby("patient_id").agg(
        grade=("grade", "max"), split=("split", "first")
    )
    shares = pd.crosstab(patients["grade"], patients["split"], normalize="index")
    sizes = patients["grade"].value_counts()
    for grade, row in shares.iterrows():
        tolerance = 1.5 / sizes[grade]  # largest remainder: within one patient per split
        assert row["val"] == pytest.approx(0.2, abs=tolerance)
        assert row["test"] == pytest.approx(0.1, abs=tolerance)


def test_same_seed_same_split_other_seed_other_split():
    records = patients_table()
    first = assign_splits(records, 0.15, 0.15, seed=7)
    assert first.equals(assign_splits(records, 0.15, 0.15, seed=7))
    # Row order does not matter either.
    shuffled = records.sample(frac=1, random_state=1)
    assert assign_splits(shuffled, 0.15, 0.15, seed=7).sort_index().equals(first)
    assert not first.equals(assign_splits(records, 0.15, 0.15, seed=8))


def test_too_few_patients_is_an_error_not_an_empty_split():
    with pytest.raises(SplitError, match="would be empty: 2 patients are too few"):
        assign_splits(patients_table(2), 0.15, 0.15, seed=0)


@pytest.mark.parametrize(
    ("val", "test", "message"),
    [(-0.1, 0.1, "val_fraction must be in"), (0.5, 0.5, "must be below 1"), (0.1, 1.0, "test_fraction")],
)
def test_bad_fractions(val, test, message):
    with pytest.raises(SplitError, match=message):
        assign_splits(patients_table(20), val, test, seed=0)
