"""The ``gate`` block: what a gradable photograph is, and how the out-of-distribution check is fitted."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from qsight_pipeline.config.base import ParamsBlock


class GradabilityBounds(ParamsBlock):
    """``gate.gradability``: absolute bounds on the image-quality measures of a fundus photograph
    (:mod:`qsight_pipeline.inference.gradability`). They hold for any fundus camera and are not
    fitted on the training photographs; docs/grading.md, "Gradable?" says where each comes from.
    A photograph outside any bound is referred for manual grading, with the reason.
    """

    field_fraction_min: float = Field(0.05, ge=0.0, le=1.0)  # share of the frame lit by the field
    field_side_height_max: float = Field(0.7, gt=0.0, le=1.0)  # a round edge at left and right
    field_roundness_min: float = Field(0.8, ge=0.0, le=1.0)  # IoU with its disc, cut top and bottom
    brightness_min: float = Field(30.0, ge=0.0, le=255.0)  # mean luminance of the field
    brightness_max: float = Field(170.0, ge=0.0, le=255.0)
    dark_fraction_max: float = Field(0.25, ge=0.0, le=1.0)  # share of the field below luminance 15
    burnt_out_fraction_max: float = Field(0.25, ge=0.0, le=1.0)  # share with green clipped
    illumination_evenness_min: float = Field(0.5, ge=0.0, le=1.0)  # darker half / brighter half
    blur_max: float = Field(0.6, gt=0.0, le=1.0)  # Crété-Roffet blur effect (0 sharp, 1 blurred)
    noise_max: float = Field(10.0, gt=0.0)  # noise standard deviation, grey levels
    resolution_min: float = Field(200.0, ge=0.0)  # pixels across the fundus field


class GateParams(ParamsBlock):
    """The gate saved with the model (ensemble pipeline).

    ``gradability``: the absolute image-quality bounds (:class:`GradabilityBounds`).
    ``ood_detector``: the out-of-distribution score the gate uses (all four are fitted where
    their inputs allow, and compared in the evaluation): ``mahalanobis``, ``knn``, ``energy``
    or ``vim`` (the last two need the heads' logits). The default is the one that did best on
    sets the tests never use (``benchmarks/ood_detectors.py``, docs/grading.md, "Like the training photographs?").
    ``ood_pass_rate``: the share of new in-distribution photographs the out-of-distribution
    threshold lets pass, promised with probability ``ood_confidence`` over the draw of the
    validation split (a split-conformal rank of the validation scores; ``ood_confidence:
    null`` promises it on average only). A small validation split needs a high rank, up to its
    largest score.
    ``evaluate``: measure the gate on the clean test split, corrupted copies of it and
    non-fundus pictures (AUROC and pass rates in ``training_summary["gate"]`` and the report),
    with at most ``evaluation_images`` test images.
    """

    gradability: GradabilityBounds = Field(default_factory=GradabilityBounds)
    ood_detector: Literal["mahalanobis", "knn", "energy", "vim"] = "mahalanobis"
    ood_pass_rate: float = Field(0.95, gt=0.0, le=1.0)
    ood_confidence: float | None = Field(0.9, ge=0.0, lt=1.0)
    evaluate: bool = True
    evaluation_images: int = Field(64, ge=1)
