"""Which optional quantum packages an executor needs, and whether they import.

Nothing here imports qiskit at module import time: the rest of the project must import (and run
classical-only) on a machine without the ``quantum`` extra.
"""

from __future__ import annotations

import importlib
import logging

from qsight_pipeline.errors import UserError

logger = logging.getLogger(__name__)

# import name -> pip name
_PIP_NAMES: dict[str, str] = {
    "qiskit": "qiskit",
    "qiskit_machine_learning": "qiskit-machine-learning",
    "qiskit_aer": "qiskit-aer",
}


class QuantumDependencyError(UserError, ImportError):
    """A package the quantum head needs cannot be imported."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = list(missing)
        names = ", ".join(self.missing)
        super().__init__(
            f"The quantum head needs {names}, which cannot be imported. Install it with "
            f'`pip install {" ".join(self.missing)}` (or `pip install -e ".[quantum]"`), '
            "or set quantum.enabled: false to train classical-only."
        )


def required_modules(executor: str = "torch", shots: int | None = None) -> list[str]:
    """Import names that an executor needs.

    The circuit is always built with qiskit. The torch executor needs nothing else: it compiles
    the circuit itself and samples shots itself. The qiskit executor (the reference) runs through
    qiskit-machine-learning's EstimatorQNN, and its shot estimates through qiskit-aer; switching a
    head to it (``set_executor("qiskit")``) checks those then.
    """
    modules = ["qiskit"]
    if executor == "qiskit":
        modules.append("qiskit_machine_learning")
        if shots is not None:
            modules.append("qiskit_aer")
    return modules


def quantum_dependencies_missing(executor: str = "torch", shots: int | None = None) -> list[str]:
    """Pip names of the packages that the executor needs and that fail to import; ``[]`` if usable.

    The import is really attempted (not only looked up), so a broken install counts as missing,
    and a test can simulate absence with ``sys.modules["qiskit_machine_learning"] = None``.
    """
    missing: list[str] = []
    for module in required_modules(executor, shots):
        try:
            importlib.import_module(module)
        except Exception as error:  # a broken install is as unusable as a missing one
            logger.debug("Cannot import %s: %s", module, error)
            missing.append(_PIP_NAMES[module])
    return missing


def require_quantum_dependencies(executor: str = "torch", shots: int | None = None) -> None:
    """Raise :class:`QuantumDependencyError` naming each missing package (and the pip command)."""
    missing = quantum_dependencies_missing(executor, shots)
    if missing:
        raise QuantumDependencyError(missing)
