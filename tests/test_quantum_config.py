"""QuantumConfig: defaults, the YAML block, and validation messages that name the parameter."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qsight_pipeline.models.quantum import QuantumConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_parameters_file_matches_the_documented_defaults() -> None:
    block = yaml.safe_load((REPO_ROOT / "conf/base/parameters_quantum.yml").read_text())
    assert list(block) == ["quantum"]
    config = QuantumConfig.from_params(block["quantum"])
    assert config == QuantumConfig()
    assert (config.enabled, config.n_qubits, config.reps) == (True, 4, 2)
    assert (config.entanglement, config.encoding, config.shots, config.executor) == (
        "linear",
        "angle",
        None,
        "torch",
    )


def test_from_params_accepts_partial_blocks_and_none() -> None:
    assert QuantumConfig.from_params(None) == QuantumConfig()
    config = QuantumConfig.from_params({"n_qubits": 6, "shots": 128, "executor": "qiskit"})
    assert (config.n_qubits, config.shots, config.executor, config.reps) == (6, 128, "qiskit", 2)


def test_from_params_names_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"(?s)quantum\.qubits: unknown key.*quantum\.shot: unknown"):
        QuantumConfig.from_params({"qubits": 4, "shot": 10, "reps": 1})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_qubits": 0}, "quantum.n_qubits: Input should be greater than or equal to 1, got 0"),
        ({"n_qubits": 17}, "quantum.n_qubits: Input should be less than or equal to 16, got 17"),
        ({"n_qubits": True}, "quantum.n_qubits: Input should be a valid integer, got True"),
        ({"n_qubits": "4"}, "quantum.n_qubits: Input should be a valid integer, got '4'"),
        ({"reps": 0}, "quantum.reps: Input should be greater than or equal to 1, got 0"),
        ({"entanglement": "ring"}, "quantum.entanglement: Input should be 'linear', 'reverse_linear'"),
        ({"encoding": "amplitude"}, "quantum.encoding: Input should be 'angle' or 'zz', got 'amplitude'"),
        (
            {"encoding": "zz", "n_qubits": 1},
            "quantum: n_qubits must be at least 2 for encoding 'zz'",
        ),
        ({"encoding_reps": 2}, "quantum: encoding_reps only applies to encoding 'zz'"),
        ({"angle_scale": 0}, "quantum.angle_scale: Input should be greater than 0, got 0"),
        ({"shots": 0}, "quantum.shots: Input should be greater than or equal to 1, got 0"),
        ({"shots": 10.5}, "quantum.shots: Input should be a valid integer, got 10.5"),
        ({"executor": "aer"}, "quantum.executor: Input should be 'torch' or 'qiskit', got 'aer'"),
        ({"torch_dtype": "float16"}, "quantum.torch_dtype: Input should be 'float64' or 'float32'"),
        ({"enabled": "yes"}, "quantum.enabled: Input should be a valid boolean, got 'yes'"),
        ({"seed": 1.5}, "quantum.seed: Input should be a valid integer, got 1.5"),
    ],
)
def test_invalid_values_are_rejected_with_the_parameter_name(params: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        QuantumConfig.from_params(params)
    assert message in str(error.value)


def test_every_invalid_value_is_reported_at_once() -> None:
    with pytest.raises(ValueError) as error:
        QuantumConfig.from_params({"n_qubits": 0, "executor": "aer", "qubits": 3})
    lines = str(error.value).splitlines()
    assert any(line.strip().startswith("quantum.n_qubits:") for line in lines)
    assert any(line.strip().startswith("quantum.executor:") for line in lines)
    assert any(line.strip().startswith("quantum.qubits: unknown key") for line in lines)
