"""Checks of ``quantum_hardware`` before the first node (called by ``run_checks.py``).

The typed block has already checked shapes and ranges; this checks what needs the packages, the
device snapshots, the trained head and the user's account: every failure names the key.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from qsight_pipeline.config.quantum_hardware import QuantumHardwareParams
from qsight_pipeline.errors import ConfigError
from qsight_pipeline.hardware import devices, runtime

REQUIRED = (("qiskit", "qiskit"), ("qiskit_aer", "qiskit-aer"),
            ("qiskit_ibm_runtime", "qiskit-ibm-runtime"))
# The runtime's client-side estimator; older runtimes (before 0.50) have only EstimatorV2.
CLIENT_ESTIMATOR = "qiskit_ibm_runtime.executor_estimator"


class HardwareUnavailableError(ConfigError):
    """A package that the quantum_hardware pipeline needs cannot be imported."""


def missing_packages() -> list[str]:
    missing = [package for module, package in REQUIRED if not _importable(module)]
    if "qiskit-ibm-runtime" not in missing and not _importable(CLIENT_ESTIMATOR):
        missing.append("qiskit-ibm-runtime>=0.51 (the installed one has no executor_estimator)")
    return missing


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def check_hardware(params: QuantumHardwareParams, head_qubits: int | None = None) -> None:
    """Packages, device names, head width and (for a real device) the account."""
    missing = missing_packages()
    if missing:
        raise HardwareUnavailableError(
            "`kedro run --pipelines quantum_hardware` (quantum_hardware.devices and "
            f"quantum_hardware.mitigation) needs {', '.join(missing)}, which cannot be imported. "
            "Install it with `pip install 'qsight_pipeline[hardware]'`."
        )

    for name in params.devices:
        backend = devices.load_snapshot(name)
        if head_qubits is not None:
            devices.check_width(backend, head_qubits)
    ibm = params.ibm_runtime
    if ibm.backend is not None:
        backend, _ = runtime.resolve_backend(ibm)
        if head_qubits is not None:
            devices.check_width(backend, head_qubits, runtime.KEY)


def head_width(quantum_head: Any) -> int | None:
    """The trained head's qubit count from ``quantum_head.pth`` (``None`` if it has none)."""
    if not isinstance(quantum_head, dict) or not quantum_head.get("enabled"):
        return None
    return (quantum_head.get("quantum_config") or {}).get("n_qubits")
