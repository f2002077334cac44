"""The ``referral`` block: the screening operating point chosen on validation after training."""

from __future__ import annotations

from pydantic import Field

from qsight_pipeline.config.base import ParamsBlock


class ReferralParams(ParamsBlock):
    """How the referral threshold and the review flag are chosen on the validation split.

    ``target_sensitivity``: the threshold on P(grade >= 2) is the highest one whose validation
    sensitivity reaches this value. ``review_fraction``: an image needs review when its
    uncertainty (entropy of the calibrated ensemble) is above the validation quantile
    ``1 - review_fraction``, i.e. about that fraction of validation images would be reviewed.
    """

    target_sensitivity: float = Field(0.90, gt=0.0, le=1.0)
    review_fraction: float = Field(0.10, ge=0.0, lt=1.0)
