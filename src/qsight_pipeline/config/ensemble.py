"""The ``ensemble`` block: how the heads are fused, chosen on validation after training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from qsight_pipeline.config.base import ParamsBlock


class EnsembleParams(ParamsBlock):
    """The gate against its baselines (ensemble pipeline); the choice is saved with the model.

    ``fusion``: ``auto`` keeps the learned gate only when it beats the mean of the heads'
    calibrated probabilities on validation (the interval of the paired QWK difference over the
    gate's ``seeds`` lies above 0) and fuses by that mean otherwise; ``gated`` or ``mean`` force
    one (the comparison is still made and reported). ``seeds``: how many times the gate is fitted,
    each from a fresh start through the schedule's ensemble stage (seeds ``run.seed``,
    ``run.seed + 1``, ...; the first is the model's own); 1 compares the model's own gate alone.
    ``confidence``: of the t-intervals across those seeds.
    """

    fusion: Literal["auto", "gated", "mean"] = "auto"
    seeds: int = Field(5, ge=1, le=50)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
