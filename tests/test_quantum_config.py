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
    with pytest.raises(ValueError, match=r"quantum\.qubits.*quantum\.shot") as error:
        QuantumConfig.from_params({"qubits": 4, "shot": 10, "reps": 1})
    assert "n_qubits" in str(error.value)  # the known names are listed


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_qubits": 0}, "quantum.n_qubits must be between 1 and 16, got 0"),
        ({"n_qubits": 17}, "quantum.n_qubits must be between 1 and 16, got 17"),
        ({"n_qubits": True}, "quantum.n_qubits must be between 1 and 16, got True"),
        ({"n_qubits": "4"}, "quantum.n_qubits must be between 1 and 16, got '4'"),
        ({"reps": 0}, "quantum.reps must be between 1 and 20, got 0"),
        ({"entanglement": "ring"}, "quantum.entanglement must be one of linear, reverse_linear"),
        ({"encoding": "amplitude"}, "quantum.encoding must be one of angle, zz, got 'amplitude'"),
        (
            {"encoding": "zz", "n_qubits": 1},
            "quantum.n_qubits must be at least 2 for encoding 'zz'",
        ),
        ({"encoding_reps": 2}, "quantum.encoding_reps only applies to encoding 'zz'"),
        ({"angle_scale": 0}, "quantum.angle_scale must be a number in (0, 2]"),
        ({"shots": 0}, "quantum.shots must be null (exact) or a positive integer, got 0"),
        ({"shots": 10.5}, "quantum.shots must be null (exact) or a positive integer, got 10.5"),
        ({"executor": "aer"}, "quantum.executor must be one of torch, qiskit, got 'aer'"),
        ({"torch_dtype": "float16"}, "quantum.torch_dtype must be one of float64, float32"),
        ({"enabled": "yes"}, "quantum.enabled must be true or false, got 'yes'"),
        ({"seed": 1.5}, "quantum.seed must be null or an integer, got 1.5"),
    ],
)
def test_invalid_values_are_rejected_with_the_parameter_name(params: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        QuantumConfig.from_params(params)
    assert message in str(error.value)
