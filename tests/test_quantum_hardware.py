"""``quantum_hardware``: the trained quantum head on device snapshots, offline.

Everything runs in qiskit-ibm-runtime's local testing mode with ``fake_provider`` snapshots; the
heads and caches are built here (2 qubits, a dozen images), except the one ``kedro run`` test.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

pytest.importorskip("qiskit_ibm_runtime")
pytest.importorskip("qiskit_aer")

from qsight_pipeline.config import validate_block  # noqa: E402
from qsight_pipeline.config.quantum_hardware import QuantumHardwareParams  # noqa: E402
from qsight_pipeline.errors import ConfigError, UserError  # noqa: E402
from qsight_pipeline.hardware import checks, devices, estimation, runtime  # noqa: E402
from qsight_pipeline.hardware.evaluate import HeadOnCache, evaluate_hardware  # noqa: E402
from qsight_pipeline.models.quantum.config import QuantumConfig  # noqa: E402
from qsight_pipeline.models.quantum.head import QuantumHead  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IN_FEATURES = 6


def tiny_head_and_cache(n_qubits: int = 2, images: int = 12, seed: int = 0):
    """A quantum head state (as quantum_head.pth holds it) and a feature cache's test split."""
    torch.manual_seed(seed)
    config = QuantumConfig(n_qubits=n_qubits, reps=1, standardize=False)
    head = QuantumHead(IN_FEATURES, config)
    with torch.no_grad():
        head.circuit_weights.uniform_(-1.5, 1.5)
    state = {
        "enabled": True, "quantum_config": config.to_dict(),
        "quantum_state": {k: v.detach().clone() for k, v in head.state_dict().items()},
        "lineage": {"classical_id": "c1"},
    }
    rng = np.random.default_rng(seed)
    cache = {
        "test_features": rng.normal(size=(images, IN_FEATURES)).astype(np.float32),
        "test_labels": rng.integers(0, 5, images),
        "test_logits_head_a": rng.normal(size=(images, 5)).astype(np.float32),
        "test_logits_head_b": rng.normal(size=(images, 5)).astype(np.float32),
        "metadata": {"lineage": {"classical_id": "c1"}},
    }
    return state, cache


def tiny_checkpoint() -> dict:
    from qsight_pipeline.models.hybrid import GatedEnsemble

    torch.manual_seed(1)
    ensemble = GatedEnsemble(IN_FEATURES, 4, 5)
    return {
        "model_config": {"compressed_dim": IN_FEATURES, "gate_hidden_dim": 4, "num_classes": 5},
        "model_info": {"quantum_enabled": True},
        "model_state": {f"ensemble.{k}": v for k, v in ensemble.state_dict().items()},
        "lineage": {"classical_id": "c1"},
    }


def small_params(**changes) -> QuantumHardwareParams:
    base = {"devices": ["fake_manila"], "shots": [512], "seeds": 2,
            "mitigation": ["none", "readout"], "zne": {"scale_factors": [1, 3]}}
    return validate_block(QuantumHardwareParams, {**base, **changes}, "quantum_hardware")


# --------------------------------------------------------------------------- configuration


def test_yaml_defaults_equal_the_model_defaults():
    text = (REPO / "conf/base/parameters_quantum_hardware.yml").read_text()
    loaded = QuantumHardwareParams.model_validate(yaml.safe_load(text)["quantum_hardware"])
    assert loaded == QuantumHardwareParams()
    assert "fake_torino" in QuantumHardwareParams().devices  # a current Heron-class snapshot


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"shots": [1024, 0]}, "quantum_hardware.shots"),
        ({"shots": [-5]}, "quantum_hardware.shots"),
        ({"mitigation": ["none", "mthree"]}, "quantum_hardware.mitigation"),
        ({"zne": {"scale_factors": [1, 2]}}, "quantum_hardware.zne.scale_factors"),
        ({"headline_device": "fake_fez", "devices": ["fake_torino"]}, "quantum_hardware.headline_device"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key(change, key):
    with pytest.raises(ConfigError) as error:
        validate_block(QuantumHardwareParams, change, "quantum_hardware")
    assert key in str(error.value)


def test_an_unknown_device_lists_the_available_snapshots():
    with pytest.raises(UserError) as error:
        checks.check_hardware(small_params(devices=["fake_nowhere"]), head_qubits=2)
    message = str(error.value)
    assert "quantum_hardware.devices" in message and "fake_nowhere" in message
    assert "fake_torino" in message and "fake_manila" in message


def test_a_head_wider_than_the_device_is_refused():
    with pytest.raises(UserError) as error:
        checks.check_hardware(small_params(devices=["fake_manila"]), head_qubits=6)
    assert re.search(r"\b6\b.*fake_manila.*\b5\b", str(error.value))  # the head's, the device's


def test_missing_packages_are_named_with_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "qiskit_ibm_runtime" else real(name, *a),
    )
    with pytest.raises(UserError) as error:
        checks.check_hardware(small_params(), head_qubits=2)
    assert "qiskit-ibm-runtime" in str(error.value)
    assert "qsight_pipeline[hardware]" in str(error.value)


def test_a_runtime_without_the_client_side_estimator_is_named(monkeypatch):
    """qiskit-ibm-runtime before 0.50 imports, but has only the deprecated EstimatorV2."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == checks.CLIENT_ESTIMATOR else real(name, *a),
    )
    with pytest.raises(UserError) as error:
        checks.check_hardware(small_params(), head_qubits=2)
    assert "qiskit-ibm-runtime>=0.51" in str(error.value)
    assert "qsight_pipeline[hardware]" in str(error.value)


def test_a_real_backend_without_an_account_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("QISKIT_IBM_TOKEN", "QISKIT_IBM_CHANNEL", "QISKIT_IBM_INSTANCE", "QISKIT_IBM_URL"):
        monkeypatch.delenv(name, raising=False)
    params = small_params(ibm_runtime={"backend": "ibm_torino"})
    with pytest.raises(UserError) as error:
        checks.check_hardware(params, head_qubits=2)
    message = str(error.value)
    assert "quantum_hardware.ibm_runtime.backend" in message and "save_account" in message


def test_the_pre_run_check_runs_for_the_pipeline():
    from qsight_pipeline.config import validate_parameters
    from qsight_pipeline.kedro_app.run_checks import check_pipelines

    parameters = validate_parameters({"quantum_hardware": {"devices": ["fake_manila"]}})
    head, _ = tiny_head_and_cache(n_qubits=7)

    class Catalog:
        def load(self, name):
            assert name == "quantum_head"
            return head

    with pytest.raises(UserError, match=r"fake_manila.*\b5\b"):
        check_pipelines(parameters, ["quantum_hardware"], Catalog())
    check_pipelines(parameters, ["quantum_study"], Catalog())  # other pipelines: not checked


# --------------------------------------------------------------------------- circuits and noise


def _prepared(n_qubits: int = 2, device: str = "fake_manila"):
    head, cache = tiny_head_and_cache(n_qubits)
    data = HeadOnCache(cache, head, max_images=4)
    backend = devices.load_snapshot(device)
    return data, devices.prepare_circuit(data.spec, backend, device)


def test_the_reduced_circuit_keeps_the_layout_and_the_device_statistics():
    data, prepared = _prepared(2, "fake_torino")
    assert prepared.isa.num_qubits == 133 and prepared.reduced.num_qubits == len(prepared.active)
    assert prepared.stats["two_qubit_gates"] >= 1
    assert 0.5 < prepared.stats["success_probability"] < 1.0
    assert prepared.stats["duration_s"] > 0
    # the reduced circuit gives the same exact <Z_i> as the head (noiseless simulator, many shots)
    values = estimation.parameter_values(prepared.reduced, data.spec, data.angles, data.weights)
    from qiskit.primitives import StatevectorEstimator

    exact = StatevectorEstimator().run(
        [(prepared.reduced, [list(prepared.reduced_observables)], values)]
    ).result()[0].data.evs
    np.testing.assert_allclose(exact, data.exact_z, atol=1e-8)


def test_folding_multiplies_two_qubit_gates_and_keeps_the_unitary():
    from qiskit.quantum_info import Operator

    data, prepared = _prepared(2)
    bound = prepared.reduced.assign_parameters(
        estimation.parameter_values(prepared.reduced, data.spec, data.angles, data.weights)[0, 0]
    )
    folded = devices.fold_two_qubit_gates(bound, 5)
    two = sum(1 for i in bound.data if i.operation.num_qubits == 2)
    assert sum(1 for i in folded.data if i.operation.num_qubits == 2 and i.operation.name != "barrier") == 5 * two
    assert Operator(folded.remove_final_measurements(inplace=False)).equiv(Operator(bound))


def test_extrapolation_recovers_the_zero_noise_value():
    scales = [1, 3, 5]
    quadratic = [0.8 - 0.05 * s - 0.002 * s * s for s in scales]
    assert estimation.extrapolate(scales, quadratic, "richardson") == pytest.approx(0.8)
    linear = [0.6 - 0.1 * s for s in scales]
    assert estimation.extrapolate(scales, linear, "linear") == pytest.approx(0.6)


def _noisy_z(prepared, data, scale: float, shots: int = 50_000, seed: int = 3, pubs_extra=()):
    model = devices.noise_model(prepared, scale)
    simulator = devices.simulator(model, prepared.reduced.num_qubits)
    values = estimation.parameter_values(prepared.reduced, data.spec, data.angles, data.weights)
    estimator = estimation.make_estimator(simulator, shots, seed)
    pubs = [(prepared.reduced, [list(prepared.reduced_observables)], values), *pubs_extra]
    return estimator.run(pubs).result()


def test_noisy_results_differ_from_exact_and_approach_it_as_the_noise_shrinks():
    data, prepared = _prepared(2, "fake_torino")
    errors = {
        scale: float(np.mean(np.abs(estimation.evs(_noisy_z(prepared, data, scale), 0) - data.exact_z)))
        for scale in (5.0, 1.0, 0.1)
    }
    assert errors[5.0] > errors[1.0] > errors[0.1]
    assert errors[1.0] > 0.01  # device noise is visible at 50k shots
    assert errors[0.1] < 0.01


def test_the_reduced_simulation_agrees_with_the_snapshot_itself():
    """Active qubits + our noise model against the whole snapshot run through its own ``run``
    (the snapshot's own noise model of the device: asymmetric readout, thermal relaxation).

    qiskit's ``BackendEstimatorV2`` calls ``backend.run``; the runtime's estimator with the
    snapshot as the mode would instead simulate qiskit-aer's ``NoiseModel.from_backend``, whose
    readout error is symmetric."""
    from qiskit.primitives import BackendEstimatorV2

    data, prepared = _prepared(2, "fake_manila")
    reduced = estimation.evs(_noisy_z(prepared, data, 1.0, shots=100_000), 0)
    values = estimation.parameter_values(prepared.isa, data.spec, data.angles, data.weights)
    estimator = BackendEstimatorV2(
        backend=prepared.backend, options={"default_precision": 100_000**-0.5, "seed_simulator": 11}
    )
    full = estimator.run([(prepared.isa, [list(prepared.observables)], values)]).result()[0].data.evs
    device_error = float(np.mean(np.abs(full - data.exact_z)))
    assert device_error > 0.01
    assert float(np.mean(np.abs(reduced - full))) < 0.3 * device_error  # measured: 0.005 vs 0.027


def _mitigation_errors(prepared, data, gate_scale, readout_scale, scales=(1, 3, 5)):
    """Mean |<Z> - exact| per mitigation, 2 images at 50,000 shots (one primitive call)."""
    model = devices.noise_model(prepared, gate_scale, readout_scale)
    simulator = devices.simulator(model, prepared.reduced.num_qubits)
    values = estimation.parameter_values(prepared.reduced, data.spec, data.angles[:2], data.weights)
    observables = [list(prepared.reduced_observables)]
    pubs = [(devices.fold_two_qubit_gates(prepared.reduced, s), observables, values) for s in scales]
    pubs += estimation.calibration_pubs(
        prepared.reduced.num_qubits, prepared.measured, prepared.reduced_observables
    )
    result = estimation.make_estimator(simulator, 50_000, 5).run(pubs).result()
    raw = {s: estimation.evs(result, k) for k, s in enumerate(scales)}
    calibration = estimation.readout_calibration(
        estimation.evs(result, len(scales)), estimation.evs(result, len(scales) + 1)
    )
    return {
        m: float(np.mean(np.abs(
            estimation.mitigated(raw, calibration, m, "richardson") - data.exact_z[:2]
        )))
        for m in ("none", "readout", "zne", "readout_zne")
    }


def test_each_pub_is_sampled_with_its_own_seed_and_the_same_seed_repeats_it():
    """The ZNE folds and the calibration circuits are not sampled with the circuit's own random
    numbers (the executor's local mode would seed every PUB of one job alike)."""
    data, prepared = _prepared(2, "fake_manila")
    simulator = devices.simulator(devices.noise_model(prepared), prepared.reduced.num_qubits)
    values = estimation.parameter_values(prepared.reduced, data.spec, data.angles, data.weights)
    pub = (prepared.reduced, [list(prepared.reduced_observables)], values)
    first, second = estimation.sample_independently(simulator, [pub, pub], 512, 9)
    assert not np.allclose(first.data.evs, second.data.evs)  # two independent samples
    (again,) = estimation.sample_independently(simulator, [pub], 512, 9)
    np.testing.assert_array_equal(again.data.evs, first.data.evs)


def test_the_estimator_is_the_runtimes_current_one_without_deprecation_warnings():
    import warnings

    from qiskit_ibm_runtime.executor_estimator import Estimator

    data, prepared = _prepared(2, "fake_manila")
    simulator = devices.simulator(devices.noise_model(prepared), prepared.reduced.num_qubits)
    values = estimation.parameter_values(prepared.reduced, data.spec, data.angles, data.weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        estimator = estimation.make_estimator(simulator, 256, 1)
        result = estimator.run([(prepared.reduced, [list(prepared.reduced_observables)], values)])
        z = estimation.evs(result.result(), 0)
    assert isinstance(estimator, Estimator) and estimator.options.resilience_level == 0
    assert z.shape == (4, 2) and np.all(np.abs(z) <= 1)


def test_mitigation_moves_the_noisy_expectations_toward_exact():
    data, prepared = _prepared(2, "fake_torino")
    # readout errors alone (the snapshot's): the calibrated inversion removes most of the bias
    readout_only = _mitigation_errors(prepared, data, 0.0, 1.0)
    assert readout_only["readout"] < 0.3 * readout_only["none"]
    # gate errors alone (10x the snapshot's): zero-noise extrapolation removes over 40% of the
    # bias (about 55% measured; Richardson on 1, 3, 5 also amplifies the shot noise)
    gates_only = _mitigation_errors(prepared, data, 10.0, 0.0)
    assert gates_only["zne"] < 0.6 * gates_only["none"]
    # both, as calibrated: both mitigations together beat none and readout alone
    both = _mitigation_errors(prepared, data, 1.0, 1.0)
    assert both["readout_zne"] < 0.5 * both["none"] and both["readout"] < both["none"]


# --------------------------------------------------------------------------- the table


def test_the_table_has_every_condition_and_the_same_seeds_give_the_same_table(caplog):
    head, cache = tiny_head_and_cache()
    params = small_params(shots=[256, 1024], devices=["fake_torino"])
    with caplog.at_level(logging.WARNING):
        first, context = evaluate_hardware(cache, head, params)
    warned = [r.getMessage() for r in caplog.records
              if r.name == "qsight_pipeline.hardware.evaluate" and r.levelno == logging.WARNING]
    assert len(warned) == 1 and "complete_checkpoint.pth" in warned[0]
    second, _ = evaluate_hardware(cache, head, params)
    columns = [c for c in first.columns if c != "seconds"]
    pd.testing.assert_frame_equal(first[columns], second[columns])
    # exact + ideal (2 shots x 2 seeds) + device (2 shots x 2 seeds x 2 mitigations)
    assert len(first) == 1 + 4 + 8
    exact = first[first["condition"] == "exact"].iloc[0]
    assert exact["agreement_with_exact"] == 1.0 and exact["z_mae"] == 0.0
    device = first[first["condition"] == "device"]
    assert (device["z_mae"] > 0).all() and device["ensemble_qwk"].isna().all()
    assert (device["qpu_seconds_per_1000_images"] > 0).all()
    assert set(device["depth"]) == {context["devices"]["fake_torino"]["depth"]}
    other_seeds, _ = evaluate_hardware(
        cache, head, small_params(shots=[256, 1024], devices=["fake_torino"], first_seed=5)
    )
    assert not np.allclose(
        other_seeds[other_seeds["condition"] == "device"]["z_mae"], device["z_mae"]
    )


def test_each_rows_seconds_are_its_own_share_and_add_up_to_no_more_than_the_run(monkeypatch):
    """One sampler call serves every mitigation of a shot count and seed: its time is shared out
    among their rows, not repeated in each, and a row's own mitigation work is its own."""
    real_estimator, real_mitigated = estimation.make_estimator, estimation.mitigated

    class SlowSampler:  # a sampler call of 0.4 s, like a bigger head's
        def __init__(self, *args):
            self.estimator = real_estimator(*args)

        def run(self, pubs):
            time.sleep(0.4)
            return self.estimator.run(pubs)

    def mitigated(raw, calibration, mitigation, extrapolation):
        if mitigation == "zne":  # 0.5 s of extrapolation work that only this row does
            time.sleep(0.5)
        return real_mitigated(raw, calibration, mitigation, extrapolation)

    monkeypatch.setattr(estimation, "make_estimator", SlowSampler)
    monkeypatch.setattr(estimation, "mitigated", mitigated)
    head, cache = tiny_head_and_cache()
    params = small_params(mitigation=["none", "readout", "zne", "readout_zne"], seeds=1,
                          ideal_shots=False)
    started = time.perf_counter()
    table, _ = evaluate_hardware(cache, head, params)
    wall = time.perf_counter() - started
    assert table["seconds"].sum() <= wall  # was 4 x 0.4 s of one 0.4 s call, and more
    seconds = table[table["condition"] == "device"].set_index("mitigation")["seconds"]
    assert (seconds >= 0.1).all()  # a quarter of the shared call each
    assert seconds["zne"] > seconds["none"] + 0.3 and seconds["zne"] > seconds["readout_zne"] + 0.3


def test_the_ensemble_columns_use_the_complete_checkpoint():
    head, cache = tiny_head_and_cache()
    table, context = evaluate_hardware(
        cache, head, small_params(mitigation=["none"], ideal_shots=False, seeds=1),
        complete_checkpoint=tiny_checkpoint(),
    )
    assert context["ensemble"] and table["ensemble_qwk"].notna().all()
    assert table["ensemble_referral_sensitivity"].notna().any()


def test_summary_headline_and_figures():
    from qsight_pipeline.hardware import summary

    head, cache = tiny_head_and_cache()
    params = small_params(mitigation=["none", "readout"], headline_mitigation="readout",
                          headline_shots=512)
    table, context = evaluate_hardware(cache, head, params)
    study = {"settings": [{"contender": "classical_twin", "n_qubits": 2, "label": "twin 2q",
                           "val_qwk": {"mean": 0.5}, "test": {"qwk": {"mean": 0.61}}}]}
    result = summary.summarise(table, context, params, study)
    assert result["headline"].startswith("On fake_manila at 512 shots with readout mitigation")
    assert "classical twin reaches 0.610" in result["headline"]
    figures = summary.figures(table, result)
    circuits = summary.circuit_figures(context["circuits"])
    assert set(figures) == {"qwk_vs_shots.png"} and set(circuits) == {"circuit_fake_manila.png"}
    import matplotlib.pyplot as plt

    for figure in [*figures.values(), *circuits.values()]:
        plt.close(figure)


# --------------------------------------------------------------------------- real devices, offline


def test_the_runtime_path_runs_in_local_testing_mode_with_a_snapshot(caplog):
    """The real-device path (Batch, the client-side estimator, job record) with the backend
    object swapped."""
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    head, cache = tiny_head_and_cache()
    data = HeadOnCache(cache, head, max_images=5)
    params = small_params(ibm_runtime={"backend": "fake_manila", "shots": 256,
                                       "mitigation": "readout_zne"})
    with caplog.at_level(logging.INFO, logger="qsight_pipeline.hardware.runtime"):
        record, job = runtime.submit(data, params, None, backend=FakeManilaV2())
    (told,) = [r for r in caplog.records if r.getMessage().startswith("Submitting")]
    assert told.args[2:4] == (256, "fake_manila") and told.args[4] > 0  # shots, device, seconds
    assert record["current"] == job.job_id() and len(record["jobs"]) == 1
    entry = record["jobs"][0]
    assert entry["local_testing_mode"] and entry["n_images"] == 5 and entry["scale_factors"] == [1, 3]
    rows = runtime.rows_from_result(data, job.result(), entry, params)
    assert {r["mitigation"] for r in rows} == {"none", "readout", "zne", "readout_zne"}
    assert all(r["condition"] == "hardware" and r["job_id"] == entry["job_id"] for r in rows)
    # the same circuit and images submitted again replace their record, not add one
    again, _ = runtime.submit(data, params, record, backend=FakeManilaV2())
    assert len(again["jobs"]) == 1


def test_a_rehearsal_on_a_full_size_snapshot_runs_on_the_circuits_active_qubits():
    """The runtime's estimator measures every qubit it is given: a 133-qubit snapshot as the mode
    cannot be simulated, so local testing mode runs the circuit on its active qubits."""
    head, cache = tiny_head_and_cache()
    data = HeadOnCache(cache, head, max_images=3)
    params = small_params(ibm_runtime={"backend": "fake_torino", "shots": 2048, "mitigation": "none"})
    record, job = runtime.submit(data, params, None)
    entry = record["jobs"][0]
    assert entry["local_testing_mode"] and len(entry["physical_qubits"]) == 2
    (row,) = runtime.rows_from_result(data, job.result(), entry, params)
    assert row["device"] == "fake_torino" and 0 < row["z_mae"] < 0.1


def test_the_nodes_submit_record_and_collect_a_job_on_a_snapshot():
    """The pipeline's nodes with ibm_runtime.backend naming a snapshot (local testing mode)."""
    from qsight_pipeline.pipelines.quantum_hardware import nodes

    head, cache = tiny_head_and_cache(images=6)
    for split in ("train", "val"):  # a whole feature cache, as the nodes check it
        for field in ("features", "labels", "logits_head_a", "logits_head_b"):
            cache[f"{split}_{field}"] = cache[f"test_{field}"]
    for split in ("train", "val", "test"):
        cache[f"{split}_image_ids"] = [f"img{i}" for i in range(6)]
    cache["post_compression_state"] = {}
    params = small_params(
        devices=["fake_manila"], shots=[256], seeds=1, mitigation=["none"], ideal_shots=False,
        ibm_runtime={"backend": "fake_manila", "shots": 256, "mitigation": "readout"},
    )
    record = nodes.submit_hardware_jobs(cache, head, params, None)
    assert record["current"] == record["jobs"][0]["job_id"]
    table, _, circuits = nodes.evaluate_quantum_hardware(cache, head, params, None, record)
    hardware = table[table["condition"] == "hardware"]
    assert list(hardware["mitigation"]) == ["none", "readout"]
    assert (hardware["job_id"] == record["current"]).all() and hardware["qwk"].notna().all()
    assert set(circuits) == {"circuit_fake_manila.png"}
    unchanged = nodes.submit_hardware_jobs(cache, head, small_params(), record)
    assert unchanged == record  # no backend named: the earlier record is kept as it was


# --------------------------------------------------------------------------- kedro run


@pytest.mark.slow
def test_kedro_run_quantum_hardware_needs_only_the_head_and_the_cache(smoke_copy):
    project = smoke_copy
    for folder in ("02_intermediate", "03_primary", "04_feature", "05_model_input"):
        shutil.rmtree(project.data(folder), ignore_errors=True)
        project.data(folder).mkdir()
    project.data("01_raw").unlink()  # the images are gone too (a link to the bundled sample)
    (project.data("06_models/trained_model") / "phase1_classical_model.pth").unlink()
    project.run("--env", "smoke", "--pipelines", "quantum_hardware")  # conf/smoke's small block

    table = pd.read_csv(project.data("08_reporting/quantum_hardware.csv"))
    assert set(table["condition"]) == {"exact", "ideal", "device"}
    assert len(table) == 1 + 2 * 2 + 2 * 2 * 3  # exact, ideal shots x seeds, device x mitigation
    assert table["ensemble_qwk"].notna().all()  # complete_checkpoint.pth of the smoke run
    # the exact row repeats the pipeline's own test evaluation (quantum head and ensemble)
    evaluation = json.loads(
        project.data("06_models/trained_model/training_summary.json").read_text()
    )["evaluation"]["test"]
    exact = table[table["condition"] == "exact"].iloc[0]
    assert exact["qwk"] == pytest.approx(evaluation["quantum_head"]["quadratic_weighted_kappa"])
    assert exact["ensemble_qwk"] == pytest.approx(evaluation["ensemble"]["quadratic_weighted_kappa"])
    assert exact["ensemble_referral_sensitivity"] == pytest.approx(
        evaluation["ensemble"]["referable_sensitivity"]
    )
    summary = json.loads(project.data("08_reporting/quantum_hardware_summary.json").read_text())
    assert summary["headline"].startswith("On fake_torino at 1,024 shots with readout_zne")
    assert project.data("08_reporting/quantum_hardware_figures/qwk_vs_shots.png").is_file()
    assert project.data("08_reporting/quantum_hardware_circuits/circuit_fake_torino.png").is_file()
    report = project.data("08_reporting/report.html").read_text(encoding="utf-8")
    assert 'id="quantum-hardware"' in report and 'id="metrics-test"' in report

    (project.path / "conf/smoke/parameters_quantum_hardware.yml").write_text(
        "quantum_hardware:\n  devices: [fake_nowhere]\n"
    )
    bad = project.run("--env", "smoke", "--pipelines", "quantum_hardware", check=False)
    output = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "Error: " in output
    assert "unknown device snapshot 'fake_nowhere'" in output and "fake_torino" in output
    assert "Completed node" not in output


def test_tables_with_nullable_integers_can_be_logged_to_wandb():
    """The hardware table's shots/seed (and the study's n_qubits) are Int64 with <NA>."""
    wandb = pytest.importorskip("wandb")
    from qsight_pipeline.kedro_app.hooks import _wandb_frame

    frame = pd.DataFrame({"shots": pd.array([None, 256], dtype="Int64"), "qwk": [0.5, 0.4]})
    with pytest.raises(TypeError):
        wandb.Table(dataframe=frame)
    table = wandb.Table(dataframe=_wandb_frame(frame))
    assert len(table.data) == 2


def test_the_report_section_is_added_and_replaced():
    from qsight_pipeline.hardware import summary
    from qsight_pipeline.reporting.html import HARDWARE_START, add_hardware_section

    head, cache = tiny_head_and_cache()
    params = small_params(seeds=1, mitigation=["none"])
    table, context = evaluate_hardware(cache, head, params)
    result = summary.summarise(table, context, params)
    page = add_hardware_section(None, result)
    assert 'id="quantum-hardware"' in page and result["headline"] in page.replace("&#x27;", "'")
    report = "<html><body><h1>report</h1></body></html>"
    once = add_hardware_section(report, result)
    twice = add_hardware_section(once, result)
    assert once.count(HARDWARE_START) == 1 and twice.count(HARDWARE_START) == 1
    assert twice.index("<h1>report</h1>") < twice.index(HARDWARE_START)


def test_the_outputs_are_tracked_through_the_catalog():
    from qsight_pipeline.kedro_app.tracked_outputs import track_kind_of

    catalog = yaml.safe_load((REPO / "conf/base/catalog_quantum_hardware.yml").read_text())
    kinds = {name: track_kind_of(entry.get("metadata"), name) for name, entry in catalog.items()}
    assert kinds["quantum_hardware_table"] == "table"
    assert kinds["quantum_hardware_summary"] == "json"
    assert kinds["quantum_hardware_figures"] == kinds["quantum_hardware_circuits"] == "figures"
    assert catalog["quantum_hardware_jobs"]["staged"] is False  # survives a stopped run


def test_the_ensemble_columns_fuse_the_heads_as_the_saved_model_does(smoke_project):
    """A model that fuses by the mean of its calibrated heads (its gate did not beat that mean on
    validation) is evaluated on hardware by that mean, not by its gate."""
    import copy

    from qsight_pipeline.files.safe_files import safe_torch_load
    from qsight_pipeline.files.safe_pickle import safe_load
    from qsight_pipeline.inference.calibration import calibrated_probs

    folder = smoke_project.data("06_models/trained_model")
    cache = safe_load(folder / "quantum_training_data.pkl")
    head = safe_torch_load(folder / "quantum_head.pth")
    checkpoint = safe_torch_load(folder / "complete_checkpoint.pth")
    # The same weights saved with either rule (the smoke run's own choice may be either: on its
    # near-chance model the gate and the mean are within noise of each other).
    saved = {}
    for rule in ("gated", "mean"):
        saved[rule] = copy.deepcopy(checkpoint)
        saved[rule]["model_info"]["fusion"]["rule"] = rule
    gated = HeadOnCache(cache, head, complete_checkpoint=saved["gated"])
    assert gated.fusion == "gated"
    data = HeadOnCache(cache, head, complete_checkpoint=saved["mean"])
    assert data.fusion == "mean"
    temperatures = checkpoint["model_info"]["calibration"]["temperatures"]
    quantum_logits = np.log(data.predict(data.exact_z))  # log-softmax: the same calibrated probs
    expected = np.mean([calibrated_probs(data.classical_logits["head_a"], temperatures["head_a"]),
                        calibrated_probs(data.classical_logits["head_b"], temperatures["head_b"]),
                        calibrated_probs(quantum_logits, temperatures["quantum_head"])], axis=0)
    fused = data.ensemble_probabilities(data.exact_z)
    assert fused.shape == (len(data.labels), 5)
    np.testing.assert_allclose(fused, expected, atol=1e-5)
    assert not np.allclose(fused, gated.ensemble_probabilities(gated.exact_z), atol=1e-3)
