"""The ``referral`` block: the screening operating point chosen on validation after training."""

from __future__ import annotations

from pydantic import Field, field_validator

from qsight_pipeline.config.base import ParamsBlock


class ReferralParams(ParamsBlock):
    """How the referral threshold and the review flag are chosen on the validation split.

    ``target_sensitivity``: the threshold on P(grade >= 2) is the highest one whose validation
    sensitivity reaches this value. ``review_fraction``: an image needs review when its
    uncertainty (entropy of the calibrated ensemble) is above the validation quantile
    ``1 - review_fraction``, i.e. about that fraction of validation images would be reviewed.
    """

    target_sensitivity: float = 0.90
    review_fraction: float = Field(0.10)

    @field_validator("target_sensitivity")
    @classmethod
    def _sensitivity_in_range(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError(
                f"referral.target_sensitivity must be in (0, 1] (e.g. 0.90), got {value!r}"
            )
        return float(value)

    @field_validator("review_fraction")
    @classmethod
    def _fraction_in_range(cls, value: float) -> float:
        if not 0.0 <= value < 1.0:
            raise ValueError(
                f"referral.review_fraction must be in [0, 1) (e.g. 0.10 for the 10% most "
                f"uncertain images; 0 reviews none), got {value!r}"
            )
        return float(value)
