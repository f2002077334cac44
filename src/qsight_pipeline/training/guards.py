"""Training that has gone wrong stops, saying where, instead of shipping a broken model.

- :class:`LossGuard` watches every training batch: a non-finite loss or gradient norm, or a loss
  grown by :data:`DIVERGENCE_FACTOR` over the stage's first batches, raises
  :class:`TrainingDivergedError` with the stage, epoch and batch. The node fails, so no model
  artifact is written.

The checks of the data before training (NaN features, grade coverage) are ``data.guards``.

This module never imports Kedro.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from qsight_pipeline.errors import UserError

# A loss this many times its reference is divergence: cross-entropy at chance is ln(5) = 1.6,
# so even the worst honest batch stays far below 1e3 times that.
DIVERGENCE_FACTOR = 1e3
# The reference is the stage's first batch, before any update of this stage (later batches may
# already be diverging), and never below this floor (a stage that starts near zero loss must not
# flag an ordinary fluctuation).
REFERENCE_FLOOR = 1.0
FIX_HINT = (
    "Lower the stage's learning_rate (in the stage schedule), keep grad_clip > 0, or check the "
    "input data; no model was written."
)


class TrainingDivergedError(UserError):
    """A training stage produced a non-finite or exploding loss or gradient."""


class LossGuard:
    """Checks each training batch of one stage (see the module docstring)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._reference: float | None = None

    def check(self, where: str, batch: int, loss: float, grad_norm: float | None = None) -> None:
        """``where`` is the epoch's progress label (``"classical 3/12"``); ``batch`` counts from 1."""
        if not math.isfinite(loss):
            self._fail(where, batch, f"the loss is {loss}")
        if grad_norm is not None and not math.isfinite(grad_norm):
            self._fail(where, batch, f"the gradient norm is {grad_norm} (loss {loss:.4g})")
        if self._reference is None:
            self._reference = max(loss, REFERENCE_FLOOR)
            return
        reference = self._reference
        if loss > DIVERGENCE_FACTOR * reference:
            self._fail(
                where, batch,
                f"the loss reached {loss:.3g}, over {DIVERGENCE_FACTOR:g} times its value at the "
                f"start of the stage ({reference:.3g}): training is diverging",
            )

    def check_step(
        self, where: str, batch: int, loss: Any, parameters: Sequence[Any],
        clipped_norm: Any = None, amp: bool = False,
    ) -> None:
        """:meth:`check` after ``backward()``, before the optimiser step. Under AMP the gradient
        scaler itself skips steps with infinite gradients, so only the loss is checked."""
        grad = None
        if not amp:
            grad = float(clipped_norm) if clipped_norm is not None else gradient_norm(parameters)
        self.check(where, batch, float(loss), grad)

    def _fail(self, where: str, batch: int, what: str) -> None:
        epoch = where.split(" ")[-1] if where else "?"
        raise TrainingDivergedError(
            f"Stage {self.stage!r}, epoch {epoch}, batch {batch}: {what}. {FIX_HINT}"
        )


def gradient_norm(parameters: Sequence[Any]) -> float:
    """The global L2 norm of the parameters' gradients (0 when none has a gradient)."""
    norms = [p.grad.detach().float().norm() for p in parameters if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
