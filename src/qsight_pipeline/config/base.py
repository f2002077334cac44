"""The base of every parameter block, and the one formatter of validation errors."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class ParamsBlock(BaseModel):
    """A parameter block: unknown keys are errors, values are checked strictly (no coercion of
    ``true`` to 1 or ``"3"`` to 3), and every error of the block is reported at once."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (for summaries, checkpoints and trackers)."""
        return self.model_dump(mode="json")

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping-style read, so code written for the plain-dict block keeps working."""
        return getattr(self, key, default)


def _describe(error: dict[str, Any]) -> str:
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        return "unknown key (check its spelling; docs/configuration.md lists every key)"
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if error["type"] not in ("missing",) and "input" in error and not isinstance(
        error["input"], dict | list
    ) and ", got " not in message:  # our own validators already say what they got
        message += f", got {error['input']!r}"
    return message


def format_validation_error(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem: ``full.key: what is wrong, got <value>``."""
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"] if part != "__root__")
        key = ".".join(part for part in (prefix, location) if part) or prefix or "parameters"
        described = _describe(item)
        # Our own validators start with the full key already; pydantic's name nothing.
        lines.append(described if described.startswith(f"{key} ") else f"{key}: {described}")
    return lines
