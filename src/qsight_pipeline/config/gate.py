"""The ``gate`` block: how the gradability and out-of-distribution gate is fitted after training."""

from __future__ import annotations

from pydantic import Field

from qsight_pipeline.config.base import ParamsBlock


class GateParams(ParamsBlock):
    """Fitting the gate on the training split (ensemble pipeline), saved with the model.

    ``quantile``: each gradability bound starts at this quantile of the training split's values
    (``1 - quantile`` for an upper bound) and is widened by ``margin`` times their spread.
    ``ood_pass_rate``: the share of new in-distribution photographs the out-of-distribution
    threshold lets pass, promised with probability ``ood_confidence`` over the draw of the
    validation split (a split-conformal rank of the validation distances; ``ood_confidence:
    null`` promises it on average only). A small validation split needs a high rank, up to its
    largest distance.
    ``evaluate``: measure the gate on the clean test split, corrupted copies of it and generated
    non-fundus pictures (AUROC and pass rates in ``training_summary["gate"]`` and the report),
    with at most ``evaluation_images`` test images.
    """

    quantile: float = Field(0.01, ge=0.0, lt=0.5)
    margin: float = Field(0.25, ge=0.0)
    ood_pass_rate: float = Field(0.95, gt=0.0, le=1.0)
    ood_confidence: float | None = Field(0.9, ge=0.0, lt=1.0)
    evaluate: bool = True
    evaluation_images: int = Field(64, ge=1)
