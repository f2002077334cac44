"""``kedro run --pipelines evaluate``: the trained model on another labelled data set (its node,
in process, with the smoke run's model)."""

from __future__ import annotations

import json

import pytest

from qsight_pipeline.config import EvaluateParams
from qsight_pipeline.errors import UserError
from qsight_pipeline.inference.loading import load_checkpoint_file
from qsight_pipeline.pipelines.evaluate.nodes import evaluate_external


def test_external_validation_reports_the_model_the_gate_and_the_screening_decision(smoke_project, make_sample):
    root = make_sample("sovitrath", patients=6, size=256)
    checkpoint = load_checkpoint_file(smoke_project.data("06_models/trained_model/complete_checkpoint.pth"))
    result, table = evaluate_external(checkpoint, EvaluateParams.model_validate(
        {"dataset": {"type": "sovitrath", "root": str(root)}}))
    json.dumps(result)  # plain data
    images = result["dataset"]["images"]
    assert images == len(table) >= 10 and result["dataset"]["unreadable"] == 0
    assert set(table["true_grade"]) <= set(range(5)) and "decision" in table and "gradable" in table
    assert result["model"]["n"] == images and 0.0 <= result["gate"]["pass_rate"] <= 1.0
    gated = int((table["decision"] == "refer for manual grading").sum())
    assert result["gate"]["referred_for_manual_grading"] == gated
    assert (result["graded"] is None) == (gated == images)
    # With the gate, a photograph sent to manual grading counts as referred: never less sensitive.
    screening, model = result["screening_with_gate"], result["model_referral"]
    if model["sensitivity"] is not None:
        assert screening["sensitivity"] >= model["sensitivity"]


def test_a_missing_external_root_names_the_setting(smoke_project, tmp_path):
    checkpoint = load_checkpoint_file(smoke_project.data("06_models/trained_model/complete_checkpoint.pth"))
    with pytest.raises(UserError, match="evaluate.dataset.root"):
        evaluate_external(checkpoint, EvaluateParams.model_validate(
            {"dataset": {"type": "sovitrath", "root": str(tmp_path / "none")}}))
