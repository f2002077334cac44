"""Training stops, saying where, on NaN/infinite or exploding losses; bad data is refused first."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from torch.utils.data import DataLoader

from qsight_pipeline.config import IngestionParams
from qsight_pipeline.data.guards import check_finite_features, grade_coverage
from qsight_pipeline.errors import ArtifactError, UserError
from qsight_pipeline.pipelines.ingestion.nodes import split_by_patient, summarise_ingestion
from qsight_pipeline.training.guards import LossGuard, TrainingDivergedError
from qsight_pipeline.training.trainer import train_stages
from tests.test_trainer import CLASSICAL, LesionImages, settings, tiny_model


def small_loaders(poison: bool = False):
    train_set = LesionImages(48, seed=1)
    if poison:
        train_set.images[:] = float("nan")
    return (DataLoader(train_set, batch_size=16, shuffle=False),
            DataLoader(LesionImages(16, seed=2), batch_size=16))


def test_a_nan_loss_stops_the_stage_at_its_first_batch_and_writes_no_checkpoint(tmp_path):
    train, val = small_loaders(poison=True)
    with pytest.raises(TrainingDivergedError) as info:
        train_stages(tiny_model(encoder_type="resnet", encoder_name="test_resnet"), [CLASSICAL],
                     train, val, settings(checkpoint_dir=str(tmp_path)))
    # Pinned: where training stopped (stage, epoch, batch) and why, as the user reads it.
    assert "Stage 'classical', epoch 1/2, batch 1: the loss is nan" in str(info.value)
    assert isinstance(info.value, UserError)
    assert list(tmp_path.iterdir()) == []


def test_a_huge_learning_rate_is_reported_as_divergence():
    train, val = small_loaders()
    stage = {**CLASSICAL, "learning_rate": 1e3, "num_epochs": 3}
    with pytest.raises(TrainingDivergedError) as info:
        train_stages(tiny_model(encoder_type="resnet", encoder_name="test_resnet"), [stage],
                     train, val, settings(grad_clip=0))
    message = str(info.value)
    assert "'classical'" in message and "batch" in message
    assert "diverging" in message or "nan" in message or "inf" in message
    assert "learning_rate" in message


def test_loss_guard_thresholds():
    guard = LossGuard("quantum")
    for batch, loss in enumerate([1.6, 1.5, 1.7, 40.0, 900.0], 1):
        guard.check("quantum 1/8", batch, loss, grad_norm=3.0)  # large but honest
    with pytest.raises(TrainingDivergedError, match=r"2/8.*6.*2e\+03"):  # epoch, batch, loss
        guard.check("quantum 2/8", 6, 2000.0)
    with pytest.raises(TrainingDivergedError, match=r"2/8.*7.*inf"):  # epoch, batch, norm
        LossGuard("quantum").check("quantum 2/8", 7, 1.0, grad_norm=float("inf"))


def test_non_finite_features_are_refused_before_training():
    features = np.zeros((6, 4), np.float32)
    features[[1, 4], 2] = np.nan
    with pytest.raises(ArtifactError) as info:
        check_finite_features({"train_features": features, "train_labels": np.zeros(6, np.int64)})
    assert "`train_features` holds 2 NaN/infinite value(s) in 2 row(s) (first rows: 1, 4)" in str(info.value)


def test_missing_grades_warn_and_a_single_grade_is_an_error(caplog):
    warnings = grade_coverage({"train": [0, 1, 2, 3, 4], "test": [0, 0, 2]})
    assert len(warnings) == 1 and "test split has no image of grade 1 (Mild), 3 (Severe), 4" in warnings[0]
    one_grade = pd.DataFrame({"image_id": [f"{i}_left" for i in range(20)],
                              "patient_id": [str(i) for i in range(20)], "eye": "left",
                              "grade": 0, "path": "x"})
    with pytest.raises(UserError, match="holds grade 0 \\(No DR\\) only"):
        split_by_patient(one_grade, IngestionParams(val_fraction=0.2, test_fraction=0.2), seed=0)


def test_the_ingestion_report_lists_missing_grades():
    manifest = pd.DataFrame({
        "image_id": list("abcdef"), "patient_id": list("abcdef"), "grade": [0, 1, 2, 3, 4, 0],
        "split": ["train"] * 5 + ["val"],
    })
    findings = {"root": "r", "dataset_type": "tanlikesmath"}
    report = summarise_ingestion(manifest, findings, [], IngestionParams(), 32, 0)
    assert any("val split has no image of grade 1 (Mild)" in w for w in report["warnings"])
    assert any("test split has no image" in w for w in report["warnings"])
