"""The base of every parameter block."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ParamsBlock(BaseModel):
    """A parameter block: unknown keys are errors, values are checked strictly, no coercion of
    ``true`` to 1 or ``"3"`` to 3, and every error of the block is reported at once."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)
