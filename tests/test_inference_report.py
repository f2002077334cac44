"""The report's calibration section, from a real (smoke) training run."""

from __future__ import annotations

import json

import pytest
import torch

from qsight_pipeline.inference.loading import loaded_from_checkpoint
from tests.test_report import parse


@pytest.fixture(scope="module")
def run(smoke_project):
    output_dir = smoke_project.data("06_models/trained_model")
    summary = json.loads((output_dir / "training_summary.json").read_text())
    page = parse(smoke_project.data("08_reporting/report.html").read_text(encoding="utf-8"))
    return output_dir, summary, page


def test_the_report_shows_the_operating_point_with_wilson_intervals_and_the_ece(run):
    output_dir, summary, page = run
    calibration = summary["calibration"]
    test_point = calibration["test_operating_point"]
    assert page.texts["referral-threshold"] == f"{calibration['referral']['threshold']:.3f}"
    for measure in ("sensitivity", "specificity"):
        value = test_point[measure]
        assert page.texts[f"referral-test-{measure}"] == f"{100 * value:.1f}%"
        low, high = test_point[f"{measure}_ci95"]
        assert low <= value <= high
        assert page.texts[f"referral-test-{measure}-ci"] == f"{100 * low:.1f}% to {100 * high:.1f}%"
    ece = calibration["quality"]["test"]["ece"]["ensemble"]
    assert page.texts["ece-test-ensemble-before"] == f"{ece['before']:.3f}"
    assert page.texts["ece-test-ensemble-after"] == f"{ece['after']:.3f}"
    assert "figure-referral_roc.png" in page.texts
    assert "figure-calibration_reliability.png" in page.texts
    # The same operating point is saved with the model.
    model_info = json.loads((output_dir / "model_info.json").read_text())
    assert model_info["calibration"]["referral"] == calibration["referral"]
    assert model_info["preprocessing"]["image_size"] == 32


def test_predict_device_falls_back_to_cpu_with_a_warning_without_cuda(run, caplog):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    output_dir, _, _ = run
    checkpoint = torch.load(output_dir / "complete_checkpoint.pth", weights_only=True)
    loaded = loaded_from_checkpoint(checkpoint, "cuda")
    assert loaded.device.type == "cpu"
    assert "CUDA is not available" in caplog.text
