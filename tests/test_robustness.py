"""Robustness on the report: the share of test grades that change under benign photograph changes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from qsight_pipeline.constants import NUM_GRADES
from qsight_pipeline.inference.loading import LoadedModel, preprocessing_metadata
from qsight_pipeline.inference.robustness import (
    brightness_5_percent,
    jpeg_quality_90,
    measure_robustness,
    resize_2_percent,
)
from qsight_pipeline.reporting.html import add_robustness_section

SIZE = 32


class BrightnessGrader(nn.Module):
    """Grade 2 (referred) when a picture's mean level is above ``level``, else grade 0."""

    def __init__(self, preprocessing: dict, level: float) -> None:
        super().__init__()
        self.mean = torch.tensor(preprocessing["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocessing["std"]).view(1, 3, 1, 1)
        self.level = level

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        levels = ((images * self.std + self.mean) * 255).mean(dim=(1, 2, 3))
        grades = torch.where(levels > self.level, 2, 0)
        ensemble = nn.functional.one_hot(grades, NUM_GRADES).float()
        batch = images.shape[0]
        heads = ensemble.unsqueeze(1).repeat(1, 3, 1)
        return (ensemble, heads, torch.full((batch, 3), 1 / 3), torch.zeros(batch),
                torch.zeros(batch), ensemble[:, 2:].sum(dim=1), torch.zeros(batch, 4))


def loaded_grader(level: float) -> LoadedModel:
    preprocessing = preprocessing_metadata(SIZE)
    grader = BrightnessGrader(preprocessing, level)
    return LoadedModel(model=grader, graph=grader, model_info={}, training_summary={},
                       preprocessing=preprocessing, temperatures={},
                       referral={"threshold": 0.5}, device=torch.device("cpu"))


def grey(levels: list[int]) -> np.ndarray:
    return np.stack([np.full((SIZE, SIZE, 3), level, np.uint8) for level in levels])


def test_the_three_changes_are_benign_and_real():
    rng = np.random.default_rng(0)
    picture = np.clip(rng.normal(120, 30, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    for change in (jpeg_quality_90, resize_2_percent):
        changed = change(picture)
        assert changed.shape == picture.shape and changed.dtype == np.uint8
        difference = np.abs(changed.astype(float) - picture)
        assert 0 < difference.mean() < 40
    brighter = brightness_5_percent(picture)
    assert brighter.mean() / picture.mean() == pytest.approx(1.05, abs=0.01)


def test_a_model_whose_grades_flip_says_so_in_words():
    # Levels 99-101 sit just under the grader's threshold: 5% brighter crosses it, while a
    # flat picture survives JPEG at quality 90 and a 2% resize unchanged.
    result = measure_robustness(loaded_grader(102.5), grey([96, 99, 100, 101, 60, 150]))

    brighter = result["changes"]["brightness_5_percent"]
    assert result["images"] == 6
    assert brighter["grades_changed"] == 3 and brighter["grade_changed"] == pytest.approx(0.5)
    assert brighter["referral_changed"] == pytest.approx(0.5)
    assert result["changes"]["jpeg_quality_90"]["grades_changed"] == 0
    assert result["changes"]["resize_2_percent"]["grades_changed"] == 0
    assert result["grades_flip"]
    assert result["verdict"].startswith("Grades flip under benign changes to the photograph: "
                                        "3 of 6 (50.0%) when made 5% brighter.")
    json.dumps(result)  # training_summary-ready: plain data only


def test_a_stable_model_says_so_and_the_report_shows_the_shares():
    result = measure_robustness(loaded_grader(102.5), grey([40, 60, 150, 200]))
    assert not result["grades_flip"]
    assert result["verdict"] == ("Stable: none of the 4 test photographs changed grade when "
                                 "re-saved as JPEG at quality 90, resized by 2% or made 5% brighter.")

    flipping = measure_robustness(loaded_grader(102.5), grey([100, 150]))
    page = add_robustness_section("<html><body><h1>report</h1></body></html>", flipping)
    assert page.index("<h1>report</h1>") < page.index('id="robustness-verdict"')
    assert 'id="robustness-brightness_5_percent-grade">50.0%<' in page
    assert 'id="robustness-jpeg_quality_90-count">0<' in page
    again = add_robustness_section(page, result)  # a second run replaces the section
    assert again.count('id="robustness"') == 1 and "Stable: none of the 4" in again


def test_no_test_pictures_is_said_not_measured():
    result = measure_robustness(loaded_grader(100), None)
    assert result["images"] == 0 and "not measured" in result["verdict"]


@pytest.mark.slow
def test_the_default_run_reports_robustness(smoke_project):
    robustness = json.loads(smoke_project.data("08_reporting/robustness.json").read_text())
    report = smoke_project.data("08_reporting/report.html").read_text(encoding="utf-8")
    assert set(robustness["changes"]) == {"jpeg_quality_90", "resize_2_percent", "brightness_5_percent"}
    assert robustness["images"] > 0 and robustness["verdict"] in report
    assert report.index('id="gate"') < report.index('id="robustness"')
