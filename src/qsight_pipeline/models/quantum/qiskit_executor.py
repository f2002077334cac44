"""Reference executor: qiskit-machine-learning ``EstimatorQNN`` + ``TorchConnector``.

This is the path to real backends and the yardstick for the torch executor. It is slow (one
circuit per sample and parameter-shift gradients), so it is not the training default.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from .availability import require_quantum_dependencies
from .circuit import QuantumCircuitSpec

logger = logging.getLogger(__name__)


def precision_for_shots(shots: int) -> float:
    """The V2-estimator precision whose shot count ``ceil(1 / precision**2)`` is exactly ``shots``."""
    precision = 1.0 / math.sqrt(shots)
    # 1/sqrt(N) squared can round to a hair below 1/N, which would ask for N + 1 shots.
    while math.ceil(1.0 / precision**2) > shots:
        precision = math.nextafter(precision, math.inf)
    return precision


def _build_estimator(shots: int | None, seed: int | None) -> Any:
    """Exact ``StatevectorEstimator``, or a shot-sampling estimator on qiskit-aer's simulator.

    With shots we use ``BackendEstimatorV2`` on ``AerSimulator``: it runs ``ceil(1/precision**2)``
    real measurement shots per expectation value. (qiskit-aer's own ``EstimatorV2`` only adds
    Gaussian noise of width ``precision`` to the exact value, which is not a shot estimate.)
    """
    if shots is None:
        # lazy: optional dependency
        from qiskit.primitives import StatevectorEstimator

        return StatevectorEstimator(default_precision=0.0, seed=seed)
    # lazy: optional dependency
    from qiskit.primitives import BackendEstimatorV2
    from qiskit_aer import AerSimulator

    return BackendEstimatorV2(
        backend=AerSimulator(seed_simulator=seed),
        options={"default_precision": precision_for_shots(shots), "seed_simulator": seed},
    )


class QiskitExecutor:
    """Maps ``(angles (B, n), weights (W,))`` to ``<Z_i>`` ``(B, n)`` through qiskit-ML.

    The ``TorchConnector`` owns a weight parameter of its own. To keep the head's ``state_dict``
    the same whichever executor runs it, the connector is *not* a submodule of the head: each call
    swaps the head's ``circuit_weights`` into it with ``torch.func.functional_call``, so gradients
    land on the head's parameter and the connector's own copy is never used.
    """

    name = "qiskit"

    def __init__(self, spec: QuantumCircuitSpec, shots: int | None = None, seed: int | None = None):
        require_quantum_dependencies("qiskit", shots)
        # lazy: optional dependency
        from qiskit_machine_learning.connectors import TorchConnector
        from qiskit_machine_learning.neural_networks import EstimatorQNN

        self.spec = spec
        self.shots = shots
        estimator = _build_estimator(shots, seed)
        # EstimatorQNN's own default precision (1/64) would add noise even to an exact estimator.
        precision = 0.0 if shots is None else precision_for_shots(shots)
        self.qnn = EstimatorQNN(
            circuit=spec.circuit,
            estimator=estimator,
            observables=list(spec.observables),
            input_params=list(spec.input_params),
            weight_params=list(spec.weight_params),
            input_gradients=True,
            default_precision=precision,
        )
        self.connector = TorchConnector(self.qnn, initial_weights=[0.0] * spec.num_weights)
        logger.debug(
            "qiskit executor: %d qubits, %d weights, %s",
            spec.num_qubits,
            spec.num_weights,
            "exact" if shots is None else f"{shots} shots on qiskit-aer",
        )

    def __call__(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Expectation values ``(B, n)`` in ``angles``' dtype and device (computed on the CPU)."""
        values = torch.func.functional_call(self.connector, {"weight": weights}, (angles,))
        return values.to(dtype=angles.dtype)
