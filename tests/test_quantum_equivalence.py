"""The torch executor against the reference qiskit-ML EstimatorQNN on the same circuit.

Cases are a cross-section of the axes (every value of each axis appears, not every combination):
2..8 qubits, reps 1..3, the four entanglements and none, both encodings. Batches are small because
the reference pays one parameter-shift circuit pair per parameter per sample.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qsight_pipeline.models.quantum import QuantumConfig
from qsight_pipeline.models.quantum.circuit import build_circuit
from qsight_pipeline.models.quantum.qiskit_executor import QiskitExecutor
from qsight_pipeline.models.quantum.torch_executor import TorchStatevectorExecutor

CASES = [
    # n_qubits, reps, entanglement, encoding, encoding_reps, batch
    (2, 1, "full", "angle", 1, 3),
    (2, 3, "linear", "zz", 2, 3),
    (3, 2, "circular", "zz", 1, 3),
    (3, 3, "reverse_linear", "angle", 1, 3),
    (4, 1, "reverse_linear", "zz", 1, 2),
    (4, 2, "linear", "angle", 1, 3),
    (5, 3, "full", "angle", 1, 2),
    (5, 1, "circular", "zz", 1, 2),
    (6, 2, "reverse_linear", "zz", 1, 1),
    (6, 1, "linear", "angle", 1, 2),
    (7, 3, "circular", "angle", 1, 1),
    (7, 1, "linear", "zz", 1, 1),
    (8, 2, "full", "angle", 1, 1),
    (8, 1, "reverse_linear", "zz", 1, 1),
    (3, 2, "none", "angle", 1, 3),  # the product-state circuit (the study's no_entanglement)
    (4, 1, "none", "zz", 2, 2),
]


def _ids(case: tuple) -> str:
    n, reps, entanglement, encoding, encoding_reps, _ = case
    return f"{n}q-reps{reps}-{entanglement}-{encoding}x{encoding_reps}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_torch_executor_matches_estimator_qnn(case: tuple) -> None:
    n, reps, entanglement, encoding, encoding_reps, batch = case
    config = QuantumConfig(
        n_qubits=n,
        reps=reps,
        entanglement=entanglement,
        encoding=encoding,
        encoding_reps=encoding_reps,
    )
    spec = build_circuit(config)
    generator = torch.Generator().manual_seed(n * 100 + reps)
    angles = (torch.rand(batch, n, generator=generator, dtype=torch.float64) * 2 - 1) * torch.pi
    weights = (torch.rand(spec.num_weights, generator=generator, dtype=torch.float64) * 2 - 1) * 3
    upstream = torch.randn(batch, n, generator=generator, dtype=torch.float64)

    results = {}
    for name, executor in (
        ("torch", TorchStatevectorExecutor(spec)),
        ("qiskit", QiskitExecutor(spec)),
    ):
        x = angles.clone().requires_grad_(True)
        w = weights.clone().requires_grad_(True)
        out = executor(x, w)
        (out * upstream).sum().backward()  # a random vector-Jacobian product
        results[name] = (out.detach(), x.grad, w.grad)

    (t_out, t_dx, t_dw), (q_out, q_dx, q_dw) = results["torch"], results["qiskit"]
    assert t_out.shape == q_out.shape == (batch, n)
    np.testing.assert_allclose(t_out, q_out, atol=1e-6, rtol=0)
    np.testing.assert_allclose(t_dx, q_dx, atol=1e-5, rtol=0)
    np.testing.assert_allclose(t_dw, q_dw, atol=1e-5, rtol=0)
    assert t_out.abs().max() <= 1 + 1e-12


def test_float32_simulation_agrees_to_single_precision() -> None:
    spec = build_circuit(QuantumConfig(n_qubits=5, reps=2, encoding="zz", entanglement="full"))
    angles = torch.rand(16, 5, dtype=torch.float64) * 6 - 3
    weights = torch.rand(spec.num_weights, dtype=torch.float64) * 6 - 3
    double = TorchStatevectorExecutor(spec, dtype="float64")(angles, weights)
    single = TorchStatevectorExecutor(spec, dtype="float32")(angles.float(), weights.float())
    assert single.dtype == torch.float32
    np.testing.assert_allclose(single.double(), double, atol=2e-5)
