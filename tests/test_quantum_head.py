"""QuantumHead: output against qiskit Statevector, executor swap, and missing dependencies."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from qsight_pipeline.models.quantum import (
    QuantumConfig,
    QuantumDependencyError,
    QuantumHead,
    build_quantum_head,
    quantum_dependencies_missing,
)


def _statevector_expectations(head: QuantumHead, angles: torch.Tensor) -> np.ndarray:
    """<Z_i> of the head's circuit, bound by hand and evaluated by qiskit.quantum_info."""
    from qiskit.quantum_info import Statevector

    spec = head.spec
    weights = head.circuit_weights.detach().double().numpy()
    rows = []
    for sample in angles.detach().double().numpy():
        binding = dict(zip(spec.input_params, sample, strict=True))
        binding |= dict(zip(spec.weight_params, weights, strict=True))
        state = Statevector(spec.circuit.assign_parameters(binding))
        rows.append([state.expectation_value(z).real for z in spec.observables])
    return np.array(rows)


@pytest.mark.parametrize("executor", ["torch", "qiskit"])
@pytest.mark.parametrize("encoding", ["angle", "zz"])
def test_head_output_matches_statevector_for_fixed_weights(executor: str, encoding: str) -> None:
    torch.manual_seed(3)
    config = QuantumConfig(n_qubits=3, reps=2, encoding=encoding, executor=executor)
    head = build_quantum_head(in_features=6, config=config, num_classes=5).double()
    with torch.no_grad():
        head.circuit_weights.copy_(torch.linspace(-2.5, 2.5, head.spec.num_weights))
    compressed = torch.randn(4, 6, dtype=torch.float64)

    angles = head.encode(compressed)
    assert angles.abs().max() <= math.pi
    expected_z = _statevector_expectations(head, angles)
    expected_logits = head.readout(torch.as_tensor(expected_z))

    logits = head(compressed)
    assert logits.shape == (4, 5)
    np.testing.assert_allclose(head.expectations(compressed).detach(), expected_z, atol=1e-6)
    np.testing.assert_allclose(logits.detach(), expected_logits.detach(), atol=1e-6)


def test_head_parameters_and_state_dict_do_not_depend_on_the_executor() -> None:
    torch.manual_seed(0)
    head = build_quantum_head(8, QuantumConfig(n_qubits=4, reps=2))
    keys = [
        "circuit_weights",
        "projection.weight",
        "projection.bias",
        "readout.weight",
        "readout.bias",
        "feature_mean",  # quantum.standardize (default true): the train mean and scale
        "feature_scale",
    ]
    assert sorted(head.state_dict()) == sorted(keys)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    head.set_executor("qiskit")
    assert head.executor_name == "qiskit"
    assert sorted(head.state_dict()) == sorted(keys)
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())
    assert head.circuit_weights.shape == (12,)  # real_amplitudes(4, reps=2): 4 * (2 + 1)


def test_a_head_trained_with_torch_runs_with_qiskit_and_gives_the_same_outputs() -> None:
    torch.manual_seed(1)
    compressed = torch.randn(6, 8)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    trained = build_quantum_head(8, QuantumConfig(n_qubits=3, reps=1, executor="torch"))
    optimiser = torch.optim.Adam(trained.parameters(), lr=0.05)
    for _ in range(5):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(trained(compressed), labels).backward()
        optimiser.step()

    reloaded = build_quantum_head(8, QuantumConfig(n_qubits=3, reps=1, executor="qiskit"))
    reloaded.load_state_dict(trained.state_dict())
    with torch.no_grad():
        torch_logits = trained(compressed)
        qiskit_logits = reloaded(compressed)
        trained.set_executor("qiskit")  # switching in place gives the same again
        swapped_logits = trained(compressed)
    np.testing.assert_allclose(qiskit_logits, torch_logits, atol=1e-5)
    np.testing.assert_allclose(swapped_logits, torch_logits, atol=1e-5)


def test_gradients_reach_every_parameter_through_both_executors() -> None:
    torch.manual_seed(2)
    compressed = torch.randn(3, 5)
    grads = {}
    for executor in ("torch", "qiskit"):
        torch.manual_seed(7)
        head = build_quantum_head(5, QuantumConfig(n_qubits=2, reps=1, executor=executor))
        head(compressed).square().sum().backward()
        grads[executor] = {name: p.grad.clone() for name, p in head.named_parameters()}
        assert all(g.abs().sum() > 0 for g in grads[executor].values())
    for name, grad in grads["torch"].items():
        np.testing.assert_allclose(grads["qiskit"][name], grad, atol=1e-5, err_msg=name)


def test_head_rejects_features_of_the_wrong_width() -> None:
    head = build_quantum_head(8, QuantumConfig(n_qubits=2, reps=1))
    with pytest.raises(ValueError, match=r"shape \(B, 8\), got \(2, 7\)"):
        head(torch.zeros(2, 7))


def test_head_survives_deepcopy_and_pickling() -> None:
    import copy
    import pickle

    head = build_quantum_head(4, QuantumConfig(n_qubits=2, reps=1))
    features = torch.randn(2, 4)
    expected = head(features)
    for clone in (copy.deepcopy(head), pickle.loads(pickle.dumps(head))):
        torch.testing.assert_close(clone(features), expected)


@pytest.mark.slow  # starts a Python subprocess
def test_importing_the_package_does_not_import_qiskit() -> None:
    code = (
        "import sys, qsight_pipeline.models.quantum as q; "
        "q.QuantumConfig(); "
        "print(sorted(m for m in sys.modules if m.startswith('qiskit')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_dependencies_are_reported_present_here() -> None:
    assert quantum_dependencies_missing() == []
    assert quantum_dependencies_missing("qiskit", shots=100) == []


@pytest.mark.parametrize(
    ("blocked", "executor", "shots", "missing"),
    [
        ("qiskit_machine_learning", "torch", None, []),  # the torch executor never uses it
        ("qiskit_machine_learning", "qiskit", None, ["qiskit-machine-learning"]),
        ("qiskit", "torch", None, ["qiskit"]),
        ("qiskit_aer", "qiskit", 100, ["qiskit-aer"]),
        ("qiskit_aer", "torch", 100, []),  # the torch executor samples shots itself
        ("qiskit_aer", "qiskit", None, []),  # exact qiskit runs without aer
    ],
)
def test_missing_dependencies_are_named_with_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, blocked: str, executor: str, shots: int | None, missing: list
) -> None:
    monkeypatch.setitem(sys.modules, blocked, None)  # makes `import blocked` raise ImportError
    assert quantum_dependencies_missing(executor, shots) == missing
    config = QuantumConfig(n_qubits=2, reps=1, executor=executor, shots=shots)
    if not missing:
        build_quantum_head(4, config)
        return
    with pytest.raises(ImportError) as error:
        build_quantum_head(4, config)
    assert isinstance(error.value, QuantumDependencyError)
    assert error.value.missing == missing
    assert f"pip install {missing[0]}" in str(error.value)
    assert "quantum.enabled: false" in str(error.value)
