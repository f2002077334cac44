"""The trained quantum head under every configured condition: one tidy table, a summary, figures.

Kedro-free: ``evaluate_hardware(cache, quantum_head, params)`` works from a notebook too.

Conditions (columns ``condition``, ``device``, ``shots``, ``mitigation``, ``seed``):

- ``exact``: the torch executor's exact ``<Z_i>`` (the reference; one row, no seed);
- ``ideal``: noiseless sampling at each shot count (qiskit-aer through the runtime's Estimator);
- ``device``: each snapshot x shot count x mitigation, the circuit transpiled for the device.

Sampled conditions repeat over the sampling seeds. Per device, shot count and seed, one PUB per
ZNE fold carries every image's parameter set, and two more the readout calibration; each is
sampled with its own seed (``estimation.sample_independently``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score

from qsight_pipeline.config.quantum_hardware import QuantumHardwareParams
from qsight_pipeline.constants import NUM_GRADES, REFERABLE_GRADE
from qsight_pipeline.data import feature_cache
from qsight_pipeline.files import lineage
from qsight_pipeline.hardware import devices, estimation
from qsight_pipeline.models.fusion_rules import MEAN, saved_fusion
from qsight_pipeline.models.hybrid import GatedEnsemble
from qsight_pipeline.models.quantum.config import QuantumConfig
from qsight_pipeline.models.quantum.head import QuantumHead
from qsight_pipeline.training.metrics import quadratic_weighted_kappa

logger = logging.getLogger(__name__)

METRIC_COLUMNS = (
    "qwk", "accuracy", "macro_f1", "agreement_with_exact", "z_mae",
    "ensemble_qwk", "ensemble_referral_sensitivity", "ensemble_referral_specificity",
)
CIRCUIT_COLUMNS = (
    "depth", "two_qubit_gates", "active_qubits", "physical_qubits", "success_probability",
    "circuit_duration_us", "qpu_seconds_per_1000_images",
)
COLUMNS = (
    "condition", "device", "shots", "mitigation", "seed", "noise_scale", "n_images",
    *METRIC_COLUMNS, *CIRCUIT_COLUMNS, "job_id", "seconds",
)


# --------------------------------------------------------------------------- the trained head


class HeadOnCache:
    """The trained quantum head, its inputs on one split, and the exact reference outputs."""

    def __init__(
        self, cache: dict[str, Any], quantum_head: dict[str, Any], split: str = "test",
        max_images: int | None = None, complete_checkpoint: dict[str, Any] | None = None,
    ) -> None:
        config = QuantumConfig.from_params(
            {**dict(quantum_head.get("quantum_config") or {}), "executor": "torch", "shots": None}
        )
        features = feature_cache.split_features(cache, split)
        labels = feature_cache.split_labels(cache, split)
        if max_images is not None:
            features, labels = features[:max_images], labels[:max_images]
        self.split = split
        self.labels = np.asarray(labels, dtype=np.int64)
        self.head = QuantumHead(features.shape[1], config)
        self.head.load_state_dict(quantum_head["quantum_state"])
        self.head.eval()
        self.spec = self.head.spec
        self.features = torch.as_tensor(np.asarray(features), dtype=torch.float64)
        with torch.no_grad():
            self.head.double()
            angles = self.head.encode(self.features)
            self.angles = angles.numpy()
            self.weights = self.head.circuit_weights.detach().numpy().astype(np.float64)
            self.exact_z = self.head.executor(angles, self.head.circuit_weights).numpy()
        self.exact_pred = self.predict(self.exact_z).argmax(axis=1)
        self.ensemble = _ensemble_from_checkpoint(complete_checkpoint, cache)
        # The model fuses its heads as it was saved to (gated, or the mean of the calibrated
        # heads when its gate did not beat that mean on validation): the same here.
        self.fusion, self.head_temperatures = _fusion_from_checkpoint(complete_checkpoint)
        self.classical_logits = {
            head: np.asarray(cache[f"{split}_logits_{head}"])[: len(self.labels)]
            for head in ("head_a", "head_b")
        }

    @property
    def n_qubits(self) -> int:
        return self.spec.num_qubits

    def predict(self, z: np.ndarray) -> np.ndarray:
        """Grade probabilities ``(images, 5)`` of the head from its ``<Z_i>``."""
        with torch.no_grad():
            logits = self.head.readout(torch.as_tensor(z, dtype=self.head.readout.weight.dtype))
            return torch.softmax(logits, dim=1).numpy()

    def ensemble_probabilities(self, z: np.ndarray) -> np.ndarray | None:
        """The fused probabilities with the quantum head's logits computed from ``z``."""
        if self.ensemble is None:
            return None

        with torch.no_grad():
            quantum_logits = self.head.readout(
                torch.as_tensor(z, dtype=self.head.readout.weight.dtype)
            ).float()
            logits = {
                "head_a": torch.as_tensor(self.classical_logits["head_a"]).float(),
                "head_b": torch.as_tensor(self.classical_logits["head_b"]).float(),
                "quantum_head": quantum_logits,
            }
            if self.fusion == MEAN:
                return torch.stack([
                    torch.softmax(logits[head] / self.head_temperatures.get(head, 1.0), dim=1)
                    for head in ("head_a", "head_b", "quantum_head")
                ]).mean(dim=0).numpy()
            out = self.ensemble(self.features.float(), logits, (True, True, True))
            return out["fused_probs"].numpy()

    def metrics(self, z: np.ndarray) -> dict[str, Any]:
        """The head's test metrics from ``<Z_i>`` (and the ensemble's, with those outputs).

        scikit-learn's metrics, called directly: the project's ``grading_metrics`` also builds
        confusion matrices, per-grade recalls and AUCs, which cost ~0.2 s per row here.
        """
        grades = self.predict(z).argmax(axis=1)
        row: dict[str, Any] = {
            "qwk": quadratic_weighted_kappa(self.labels, grades),
            "accuracy": float(accuracy_score(self.labels, grades)),
            "macro_f1": float(f1_score(self.labels, grades, labels=list(range(NUM_GRADES)),
                                       average="macro", zero_division=0)),
            "agreement_with_exact": float(np.mean(grades == self.exact_pred)),
            "z_mae": float(np.mean(np.abs(np.asarray(z) - self.exact_z))),
        }
        fused = self.ensemble_probabilities(z)
        if fused is not None:
            row.update(ensemble_metrics(self.labels, fused.argmax(axis=1)))
        return row


def ensemble_metrics(labels: np.ndarray, grades: np.ndarray) -> dict[str, Any]:
    """The ensemble's QWK and referable-DR (grade >= 2) sensitivity and specificity."""
    truth, referred = labels >= REFERABLE_GRADE, grades >= REFERABLE_GRADE
    return {
        "ensemble_qwk": quadratic_weighted_kappa(labels, grades),
        "ensemble_referral_sensitivity": float((referred & truth).sum() / truth.sum())
        if truth.any() else None,
        "ensemble_referral_specificity": float((~referred & ~truth).sum() / (~truth).sum())
        if (~truth).any() else None,
    }


def _fusion_from_checkpoint(checkpoint: dict[str, Any] | None) -> tuple[str, dict[str, float]]:
    """The saved fusion rule of ``complete_checkpoint.pth`` and its heads' temperatures."""
    info = (checkpoint or {}).get("model_info") or {}
    temperatures = ((info.get("calibration") or {}).get("temperatures")) or {}
    return saved_fusion(info), {head: float(t) for head, t in temperatures.items()}


def _ensemble_from_checkpoint(checkpoint: dict[str, Any] | None, cache: dict[str, Any]) -> Any:
    """The fine-tuned ensemble gate of ``complete_checkpoint.pth``, or ``None`` (with a warning)."""
    if checkpoint is None:
        logger.warning(
            "complete_checkpoint.pth is absent: the ensemble columns (ensemble_qwk, referral "
            "sensitivity/specificity) are left empty. Run `kedro run --pipelines ensemble` to fill "
            "them."
        )
        return None

    cache_id = ((cache.get("metadata") or {}).get(lineage.LINEAGE_KEY) or {}).get("classical_id")
    checkpoint_id = (checkpoint.get(lineage.LINEAGE_KEY) or {}).get("classical_id")
    if cache_id is None or cache_id != checkpoint_id:
        logger.warning(
            "complete_checkpoint.pth was not trained on this feature cache (classical_id %s, "
            "cache %s): the ensemble columns are left empty.", checkpoint_id, cache_id,
        )
        return None
    if not (checkpoint.get("model_info") or {}).get("quantum_enabled"):
        logger.warning("complete_checkpoint.pth has no quantum head: ensemble columns left empty.")
        return None
    config = checkpoint["model_config"]
    ensemble = GatedEnsemble(config["compressed_dim"], config["gate_hidden_dim"], config["num_classes"])
    ensemble.load_state_dict(
        {k.removeprefix("ensemble."): v for k, v in checkpoint["model_state"].items()
         if k.startswith("ensemble.")}
    )
    return ensemble.eval()


# --------------------------------------------------------------------------- conditions


def _ideal_circuit(spec: Any) -> Any:
    # lazy: optional dependency
    from qiskit.transpiler import generate_preset_pass_manager

    # The runtime's client-side estimator takes parametrised one-qubit gates only as rz (or rx).
    manager = generate_preset_pass_manager(optimization_level=1, basis_gates=["rz", "sx", "x", "cx"])
    return manager.run(spec.circuit)


def evaluate_hardware(
    cache: dict[str, Any],
    quantum_head: dict[str, Any],
    params: QuantumHardwareParams,
    complete_checkpoint: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The tidy table (one row per condition x seed) and a context for the summary."""
    data = HeadOnCache(cache, quantum_head, params.split, params.max_images, complete_checkpoint)
    n_images = len(data.labels)
    seeds = list(range(params.first_seed, params.first_seed + params.seeds))
    base = {"n_images": n_images, "noise_scale": params.noise_scale}
    rows: list[dict[str, Any]] = [
        {**base, "condition": "exact", "device": "exact", "shots": None, "mitigation": "none",
         "seed": None, **data.metrics(data.exact_z), "seconds": 0.0},
    ]
    if params.ideal_shots:
        rows += _ideal_rows(data, params, seeds, base)
    circuits: dict[str, Any] = {}
    for device in params.devices:
        circuits[device], device_rows = _device_rows(data, params, seeds, base, device)
        rows += device_rows
    context = {
        "n_qubits": data.n_qubits, "n_images": n_images, "circuits": circuits,
        "ensemble": data.ensemble is not None, "split": params.split,
        "devices": {
            device: {**prepared.stats, "num_qubits": prepared.backend.num_qubits}
            for device, prepared in circuits.items()
        },
    }
    return _tidy_table(rows), context


def _ideal_rows(
    data: HeadOnCache, params: QuantumHardwareParams, seeds: list[int], base: dict[str, Any]
) -> list[dict[str, Any]]:
    """Noise-free sampling of the logical circuit at each shot count and seed."""

    circuit = _ideal_circuit(data.spec)
    values = estimation.parameter_values(circuit, data.spec, data.angles, data.weights)
    observables = [list(data.spec.observables)]
    rows = []
    for shots in params.shots:
        for seed in seeds:
            started = time.perf_counter()
            seed_value = estimation.sampling_seed("ideal", shots, seed)
            estimator = estimation.make_estimator(
                devices.simulator(None, data.n_qubits), shots, seed_value
            )
            result = estimator.run([(circuit, observables, values)]).result()
            z = estimation.evs(result, 0)
            rows.append({**base, "condition": "ideal", "device": "ideal", "shots": shots,
                         "mitigation": "none", "seed": seed, **data.metrics(z),
                         "seconds": time.perf_counter() - started})
    return rows


def _device_rows(
    data: HeadOnCache, params: QuantumHardwareParams, seeds: list[int], base: dict[str, Any],
    device: str,
) -> tuple[Any, list[dict[str, Any]]]:
    """The circuit transpiled for ``device``'s snapshot, and one row per shot count, seed and
    mitigation under the snapshot's noise (the mitigations share each run's raw results)."""

    need_zne = any(m in ("zne", "readout_zne") for m in params.mitigation)
    need_readout = any(m in ("readout", "readout_zne") for m in params.mitigation)
    scales = list(params.zne.scale_factors) if need_zne else [1]
    backend = devices.load_snapshot(device)
    prepared = devices.prepare_circuit(
        data.spec, backend, device,
        optimization_level=params.optimization_level, seed_transpiler=params.seed_transpiler,
    )
    stats = prepared.stats
    simulator = devices.simulator(
        devices.noise_model(prepared, params.noise_scale), prepared.reduced.num_qubits
    )
    values = estimation.parameter_values(prepared.reduced, data.spec, data.angles, data.weights)
    pubs = estimation.device_pubs(
        prepared.reduced, prepared.reduced_observables, values, scales,
        (prepared.reduced.num_qubits, prepared.measured) if need_readout else None,
    )
    logger.info(
        "%s: %d active qubits (physical %s), depth %d, %d two-qubit gates, estimated success "
        "probability %.3f", device, stats["active_qubits"], stats["physical_qubits"],
        stats["depth"], stats["two_qubit_gates"], stats["success_probability"],
    )
    rows = []
    for shots in params.shots:
        for seed in seeds:
            started = time.perf_counter()
            seed_value = estimation.sampling_seed(device, shots, seed, params.noise_scale)
            result = estimation.sample_independently(simulator, pubs, shots, seed_value)
            raw, calibration = estimation.raw_and_calibration(result, scales, need_readout)
            sampled = SampledRun(raw, calibration, scales, time.perf_counter() - started)
            for row in _mitigation_rows(data, params, stats, shots, sampled):
                rows.append({**base, "condition": "device", "device": device, "shots": shots,
                             "seed": seed, **row})
    return prepared, rows


@dataclass(frozen=True)
class SampledRun:
    """One sampler call's raw results, shared by every mitigation, and how long it took."""

    raw: Any
    calibration: Any
    scales: list[float]
    seconds: float


def _mitigation_rows(
    data: HeadOnCache, params: QuantumHardwareParams, stats: dict[str, Any], shots: int,
    sampled: SampledRun,
) -> list[dict[str, Any]]:
    """One row per mitigation of one sampler call.

    A row's ``seconds`` is its own share of the wall time: its mitigation and metrics, plus an
    equal share of the sampler call all the mitigations read, so the rows add up to the call.
    """
    shared = sampled.seconds / len(params.mitigation)
    rows = []
    for mitigation in params.mitigation:
        started = time.perf_counter()
        z = estimation.mitigated(
            sampled.raw, sampled.calibration, mitigation, params.zne.extrapolation
        )
        used_scales = sampled.scales if mitigation in ("zne", "readout_zne") else [1]
        cost = devices.qpu_seconds_per_1000(
            stats, shots, used_scales,
            (params.overhead_seconds_per_circuit, params.overhead_seconds_per_job),
            calibration_circuits=2 if mitigation in ("readout", "readout_zne") else 0,
        )
        rows.append({
            "mitigation": mitigation, **data.metrics(z), **_circuit_columns(stats),
            "qpu_seconds_per_1000_images": cost,
            "seconds": shared + time.perf_counter() - started,
        })
    return rows


def _tidy_table(rows: list[dict[str, Any]]) -> Any:
    """The rows as the table's columns, in order, with integer shots and seeds."""

    table = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in table:
            table[column] = None
    table = table[list(COLUMNS)]
    for column in ("shots", "seed"):
        table[column] = table[column].astype("Int64")
    return table


def _circuit_columns(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "depth": stats["depth"],
        "two_qubit_gates": stats["two_qubit_gates"],
        "active_qubits": stats["active_qubits"],
        "physical_qubits": " ".join(str(q) for q in stats["physical_qubits"]),
        "success_probability": stats["success_probability"],
        "circuit_duration_us": stats["duration_s"] * 1e6,
    }
