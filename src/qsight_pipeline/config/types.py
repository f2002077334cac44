"""Value types that several blocks share, each defined once, with their rules as pydantic metadata."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, Field

# The quantum head's circuit (``quantum``, and the grid of ``quantum_study``).
# ``none``: no entangling gates at all, a product-state circuit (the study's no_entanglement).
Entanglement = Literal["linear", "reverse_linear", "circular", "full", "none"]
NO_ENTANGLEMENT = "none"
Encoding = Literal["angle", "zz"]
Executor = Literal["torch", "qiskit"]
TorchDtype = Literal["float64", "float32"]
# Error mitigation of a noisy or real device (``quantum_hardware``, ``quantum_study.hardware``).
Mitigation = Literal["none", "readout", "zne", "readout_zne"]

ENTANGLEMENTS: tuple[str, ...] = get_args(Entanglement)
ENCODINGS: tuple[str, ...] = get_args(Encoding)
EXECUTORS: tuple[str, ...] = get_args(Executor)
TORCH_DTYPES: tuple[str, ...] = get_args(TorchDtype)
MITIGATIONS: tuple[str, ...] = get_args(Mitigation)


def _no_repeats(values: list[Any]) -> list[Any]:
    repeated = sorted({value for value in values if values.count(value) > 1}, key=str)
    if repeated:
        raise ValueError(f"lists {', '.join(map(repr, repeated))} more than once")
    return values


def distinct(item: Any) -> Any:
    """A non-empty list of ``item`` values without repeats (a grid axis, a list of conditions)."""
    return Annotated[list[item], Field(min_length=1), AfterValidator(_no_repeats)]
