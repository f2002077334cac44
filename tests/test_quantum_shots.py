"""Shot estimates: the torch sampler's statistics, straight-through gradients, and qiskit-aer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qsight_pipeline.models.quantum import QuantumConfig, build_quantum_head
from qsight_pipeline.models.quantum.circuit import build_circuit
from qsight_pipeline.models.quantum.qiskit_executor import QiskitExecutor, precision_for_shots
from qsight_pipeline.models.quantum.torch_executor import TorchStatevectorExecutor

SHOTS = 50
REPEATS = 4000  # identical rows: each is an independent SHOTS-shot estimate


@pytest.fixture(scope="module")
def circuit_and_point():
    spec = build_circuit(QuantumConfig(n_qubits=3, reps=2, entanglement="full"))
    angles = torch.tensor([[0.4, -1.3, 2.2]], dtype=torch.float64)
    weights = torch.linspace(-1.0, 1.5, spec.num_weights, dtype=torch.float64)
    return spec, angles, weights


def test_torch_shot_estimates_are_unbiased_with_binomial_variance(circuit_and_point) -> None:
    spec, angles, weights = circuit_and_point
    exact = TorchStatevectorExecutor(spec)(angles, weights)[0]
    sampler = TorchStatevectorExecutor(spec, shots=SHOTS, seed=0)
    estimates = sampler(angles.expand(REPEATS, -1), weights)

    # Each estimate is a mean of SHOTS outcomes of +-1.
    counts = (estimates * SHOTS + SHOTS) / 2
    np.testing.assert_allclose(counts, counts.round(), atol=1e-9)

    binomial_variance = (1 - exact**2) / SHOTS
    mean_error = (estimates.mean(0) - exact).abs()
    assert torch.all(mean_error <= 5 * torch.sqrt(binomial_variance / REPEATS)), mean_error
    ratio = estimates.var(0) / binomial_variance
    assert torch.all((ratio > 0.85) & (ratio < 1.15)), ratio


def test_torch_shots_sample_all_qubits_jointly(circuit_and_point) -> None:
    """Per-shot outcomes come from the joint distribution, so qubit estimates co-vary as on a device."""
    spec, angles, weights = circuit_and_point
    exact_executor = TorchStatevectorExecutor(spec)
    probabilities = exact_executor.probabilities(angles, weights)[0]
    signs = torch.as_tensor(exact_executor.plan.signs)
    z = probabilities @ signs
    zz = probabilities @ (signs[:, 1] * signs[:, 2])
    expected = (zz - z[1] * z[2]) / torch.sqrt((1 - z[1] ** 2) * (1 - z[2] ** 2))
    assert abs(expected) > 0.3  # the circuit correlates qubits 1 and 2

    estimates = TorchStatevectorExecutor(spec, shots=SHOTS, seed=1)(
        angles.expand(REPEATS, -1), weights
    )
    measured = torch.corrcoef(estimates[:, 1:].T)[0, 1]
    # Standard error of a sample correlation is about (1 - rho^2) / sqrt(REPEATS) ~ 0.012.
    assert abs(measured - expected) < 0.06, (measured, expected)


def test_torch_shots_are_seeded_and_gradients_are_exact(circuit_and_point) -> None:
    spec, angles, weights = circuit_and_point
    batch = angles.expand(8, -1)
    first = TorchStatevectorExecutor(spec, shots=SHOTS, seed=5)(batch, weights)
    second = TorchStatevectorExecutor(spec, shots=SHOTS, seed=5)(batch, weights)
    torch.testing.assert_close(first, second)

    grads = {}
    for shots in (None, SHOTS):
        x = batch.clone().requires_grad_(True)
        w = weights.clone().requires_grad_(True)
        out = TorchStatevectorExecutor(spec, shots=shots, seed=2)(x, w)
        out.sum().backward()
        grads[shots] = (out.detach(), x.grad, w.grad)
    assert not torch.allclose(grads[None][0], grads[SHOTS][0])  # forward is an estimate
    torch.testing.assert_close(grads[SHOTS][1], grads[None][1])  # gradients are exact
    torch.testing.assert_close(grads[SHOTS][2], grads[None][2])


def test_precision_for_shots_asks_the_estimator_for_exactly_that_many_shots() -> None:
    import math

    for shots in (1, 3, 10, 49, 100, 1000, 1024, 12345, 10**6):
        assert math.ceil(1 / precision_for_shots(shots) ** 2) == shots


def test_qiskit_executor_with_shots_samples_on_qiskit_aer(circuit_and_point) -> None:
    spec, angles, weights = circuit_and_point
    shots = 400
    exact = TorchStatevectorExecutor(spec)(angles, weights)[0]
    executor = QiskitExecutor(spec, shots=shots, seed=11)
    estimates = executor(angles.expand(2, -1), weights)
    counts = (estimates * shots + shots) / 2
    np.testing.assert_allclose(counts, counts.round(), atol=1e-3)  # float32 of k/shots
    assert not torch.allclose(estimates, exact.expand(2, -1).to(estimates.dtype), atol=1e-9)
    assert torch.all((estimates - exact).abs() <= 5 * torch.sqrt((1 - exact**2) / shots) + 1e-9)


def test_head_with_shots_builds_for_both_executors() -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 4)
    for executor in ("torch", "qiskit"):
        head = build_quantum_head(
            4, QuantumConfig(n_qubits=2, reps=1, shots=64, seed=3, executor=executor)
        )
        logits = head(features)
        assert logits.shape == (2, 5) and torch.isfinite(logits).all()
        logits.sum().backward()
        assert head.circuit_weights.grad is not None
