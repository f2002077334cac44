"""The quantum study under device noise (``quantum_study.hardware``).

The study trains every quantum setting exactly (torch executor). With ``quantum_study.hardware``
the heads of the CHOSEN rows (each setting at its learning rate chosen on validation, on the whole
training share, every seed) are then scored once more on the test split, with ``<Z_i>`` estimated
on a device snapshot: the circuit transpiled for it, its noise model, shots and mitigation. This is
the ``quantum_hardware`` pipeline's code path (``devices`` and ``estimation``), applied to the
study's heads, so the verdict against the classical twin can be stated under noise as well.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from qsight_pipeline.config.quantum_hardware import ZneParams
from qsight_pipeline.config.quantum_study import QuantumStudyParams, StudyHardwareParams
from qsight_pipeline.constants import NUM_GRADES
from qsight_pipeline.hardware import devices, estimation
from qsight_pipeline.hardware.checks import HardwareUnavailableError, missing_packages
from qsight_pipeline.models.estimators import circuit_spec, quantum_config
from qsight_pipeline.models.quantum import QuantumHead
from qsight_pipeline.study.trials import scores

logger = logging.getLogger(__name__)

NOISY_COLUMNS = ("noisy_test_qwk", "noisy_test_accuracy", "noisy_test_macro_f1",
                 "noisy_test_referable_auc", "noisy_depth", "noisy_two_qubit_gates")
KEY = "quantum_study.hardware.device"


def check_study_hardware(params: QuantumStudyParams) -> None:
    """Packages, the snapshot's name and its width against the widest setting (before any work)."""
    if params.hardware is None or "quantum" not in params.contenders:
        return

    missing = missing_packages()
    if missing:
        raise HardwareUnavailableError(
            f"quantum_study.hardware needs {', '.join(missing)}, which cannot be imported. Install "
            "it with `pip install 'qsight_pipeline[hardware]'`, or set quantum_study.hardware: null."
        )
    backend = devices.load_snapshot(params.hardware.device, KEY)
    devices.check_width(backend, max(params.n_qubits), KEY)


class DeviceScorer:
    """One snapshot: circuits transpiled once per circuit shape; ``<Z_i>`` of a trained head."""

    def __init__(self, hardware: StudyHardwareParams) -> None:
        self.hardware = hardware
        self.backend = devices.load_snapshot(hardware.device, KEY)
        self._prepared: dict[tuple, Any] = {}

    def _prepare(self, spec: Any, shape: tuple) -> tuple[Any, Any]:
        if shape not in self._prepared:
            prepared = devices.prepare_circuit(
                spec, self.backend, self.hardware.device,
                optimization_level=self.hardware.optimization_level,
                seed_transpiler=self.hardware.seed_transpiler,
            )
            simulator = devices.simulator(
                devices.noise_model(prepared, self.hardware.noise_scale),
                prepared.reduced.num_qubits,
            )
            self._prepared[shape] = (prepared, simulator)
        return self._prepared[shape]

    def expectations(self, head: Any, features: Any, shape: tuple, seed: int) -> tuple:
        """``(<Z_i> per image, prepared circuit)`` for ``head`` on standardised ``features``."""
        prepared, simulator = self._prepare(head.spec, shape)
        with torch.no_grad():
            angles = head.encode(torch.as_tensor(features, dtype=torch.float64)).numpy()
        weights = head.circuit_weights.detach().numpy().astype(np.float64)
        mitigation = self.hardware.mitigation
        zne = mitigation in ("zne", "readout_zne")
        readout = mitigation in ("readout", "readout_zne")
        zne_params = ZneParams()
        scales = list(zne_params.scale_factors) if zne else [1]
        values = estimation.parameter_values(prepared.reduced, head.spec, angles, weights)
        pubs = estimation.device_pubs(
            prepared.reduced, prepared.reduced_observables, values, scales,
            (prepared.reduced.num_qubits, prepared.measured) if readout else None,
        )
        result = estimation.sample_independently(
            simulator, pubs, self.hardware.shots,
            estimation.sampling_seed("study", self.hardware.device, *shape, seed),
        )
        raw, calibration = estimation.raw_and_calibration(result, scales, readout)
        return estimation.mitigated(raw, calibration, mitigation, zne_params.extrapolation), prepared


def _head_from_state(row: pd.Series, trained: dict[str, Any], n_features: int) -> Any:
    shape = (int(row["n_qubits"]), int(row["reps"]), row["entanglement"], row["encoding"])
    config = quantum_config(shape[0], shape[1], shape[2], shape[3], 1.0)
    head = QuantumHead(n_features, config, num_classes=NUM_GRADES, spec=circuit_spec(*shape))
    head.load_state_dict(trained["state"])
    head.double().eval()
    return head, shape


def score_under_noise(table: pd.DataFrame, results: list[dict[str, Any]], data: Any,
                      params: QuantumStudyParams) -> pd.DataFrame:
    """``table`` with ``noisy_test_*`` and the transpiled circuit's size on the chosen quantum
    rows of the whole training share (other rows empty)."""
    table = table.copy()
    for column in NOISY_COLUMNS:
        table[column] = np.nan
    full = max(params.train_fractions)
    rows = table.index[table["chosen"] & (table["contender"] == "quantum")
                       & (table["train_fraction"] == full)]
    if not len(rows):
        return table
    scorer = DeviceScorer(params.hardware)
    test = data.features["test"]
    logger.info("Quantum study: scoring %d trained quantum heads on %s at %d shots (%s "
                "mitigation)", len(rows), params.hardware.device, params.hardware.shots,
                params.hardware.mitigation)
    for index in rows:
        trained = results[index].get("trained_head")
        if trained is None:
            continue
        row = table.loc[index]
        head, shape = _head_from_state(row, trained, test.shape[1])
        standardised = (test - trained["scaler_mean"]) / trained["scaler_scale"]
        z, prepared = scorer.expectations(head, standardised, shape, int(row["seed"]))
        with torch.no_grad():
            logits = head.readout(torch.as_tensor(z, dtype=head.readout.weight.dtype))
            probabilities = torch.softmax(logits, dim=1).numpy()
        for metric, value in scores(data.grades["test"], probabilities).items():
            table.loc[index, f"noisy_test_{metric}"] = value
        table.loc[index, "noisy_depth"] = prepared.stats["depth"]
        table.loc[index, "noisy_two_qubit_gates"] = prepared.stats["two_qubit_gates"]
    return table
