"""The torch executor on circuits beyond the head's own: every gate kind and plan step it has."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qsight_pipeline.models.quantum.circuit import QuantumCircuitSpec
from qsight_pipeline.models.quantum.torch_executor import TorchStatevectorExecutor


def _mixed_circuit(n: int) -> QuantumCircuitSpec:
    """Uneven prefixes, batched layers in the middle, non-polynomial angles, a trailing block."""
    from qiskit.circuit import ParameterVector, QuantumCircuit
    from qiskit.quantum_info import SparsePauliOp

    x = ParameterVector("x", n)
    w = ParameterVector("w", 2 * n)
    qc = QuantumCircuit(n)
    qc.rx(x[0], 0)
    qc.rx(w[0], 0)  # merged with the rx above
    qc.h(1)
    qc.rz(x[1] * w[1] + 0.3, 1)
    qc.ry(x[2].sin(), 2)  # non-polynomial: evaluated by the sympy-to-torch fallback
    qc.cx(0, 1)
    qc.cx(1, 2)
    for q in range(n):
        qc.ry(x[q] * 0.5 + w[q], q)  # a layer whose matrices differ per sample
        qc.sx(q)  # transpiled into the basis
    qc.u(w[n], w[n + 1], x[0], n - 1)
    for q in range(n - 1):
        qc.cz(q, q + 1)
        qc.rzz(w[n + q] * x[q + 1], q, q + 1)  # transpiles to cx-rz-cx: a phase block
    qc.x(0)
    qc.p(w[2 * n - 1] ** 2, 1)
    qc.swap(0, n - 1)  # trailing permutations are folded into the readout
    observables = tuple(
        SparsePauliOp.from_sparse_list([("Z", [q], 1.0)], num_qubits=n) for q in range(n)
    )
    return QuantumCircuitSpec(qc, tuple(x), tuple(w), observables)


def _statevector(
    spec: QuantumCircuitSpec, angles: torch.Tensor, weights: torch.Tensor
) -> np.ndarray:
    from qiskit.quantum_info import Statevector

    rows = []
    for sample in angles.detach().numpy():
        binding = dict(zip(spec.input_params, sample, strict=True))
        binding |= dict(zip(spec.weight_params, weights.detach().numpy(), strict=True))
        state = Statevector(spec.circuit.assign_parameters(binding))
        rows.append([state.expectation_value(z).real for z in spec.observables])
    return np.array(rows)


@pytest.mark.parametrize("n", [3, 7])  # 7 qubits: two kron groups, batched bmm paths
def test_mixed_gate_circuit_matches_statevector_and_gradcheck(n: int) -> None:
    spec = _mixed_circuit(n)
    executor = TorchStatevectorExecutor(spec)
    assert executor.plan.is_complex
    assert executor.plan.prefix.columns is None  # uneven prefixes take the per-qubit path
    generator = torch.Generator().manual_seed(n)
    angles = torch.rand(3, n, dtype=torch.float64, generator=generator) * 4 - 2
    weights = torch.rand(2 * n, dtype=torch.float64, generator=generator) * 4 - 2

    np.testing.assert_allclose(
        executor(angles, weights), _statevector(spec, angles, weights), atol=1e-10
    )
    if n == 3:
        assert torch.autograd.gradcheck(
            executor, (angles.requires_grad_(True), weights.requires_grad_(True))
        )


def test_executor_keeps_the_input_dtype_and_rejects_wrong_shapes() -> None:
    spec = _mixed_circuit(3)
    executor = TorchStatevectorExecutor(spec)
    out = executor(torch.zeros(2, 3), torch.zeros(6))
    assert out.dtype == torch.float32 and out.shape == (2, 3)
    with pytest.raises(ValueError, match=r"angles of shape \(B, 3\)"):
        executor(torch.zeros(2, 4), torch.zeros(6))
    with pytest.raises(ValueError, match="Expected 6 circuit weights"):
        executor(torch.zeros(2, 3), torch.zeros(5))
