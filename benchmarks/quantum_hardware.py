"""Images per second of the quantum head under a device snapshot's noise (``quantum_hardware``).

    .venv/bin/python benchmarks/quantum_hardware.py [--device fake_torino] [--qubits 4]
        [--shots 1024] [--images 1000] [--naive-images 20]

A 4-qubit head (reps 2, random weights) on ``--images`` random inputs, transpiled for the
device (preset pass manager, optimization level 3), evaluated with qiskit-ibm-runtime's
client-side ``executor_estimator.Estimator`` in local testing mode: every image's parameter set
in ONE primitive call, on an AerSimulator holding the snapshot's noise of the circuit's active
qubits only (the pipeline's path). ``--naive-images N`` also times the naive path (the full
transpiled circuit through the snapshot's own ``run`` with qiskit's ``BackendEstimatorV2``: all
of the device's qubits, the snapshot's own noise model) on N images. Set-up (snapshot,
transpilation, noise model) is timed separately from evaluation.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time

import numpy as np
import torch

from _smoke import parse_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="fake_torino")
    parser.add_argument("--qubits", type=int, default=4)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--shots", type=int, default=1024)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-images", type=int, default=0)
    args = parse_args(parser, shots=64, images=8, repeats=1)

    from qsight_pipeline.hardware import devices, estimation
    from qsight_pipeline.models.quantum.config import QuantumConfig
    from qsight_pipeline.models.quantum.head import QuantumHead

    torch.manual_seed(0)
    head = QuantumHead(16, QuantumConfig(n_qubits=args.qubits, reps=args.reps, standardize=False))
    rng = np.random.default_rng(0)
    angles = rng.uniform(-np.pi, np.pi, (args.images, args.qubits))
    weights = head.circuit_weights.detach().numpy().astype(np.float64)

    started = time.perf_counter()
    backend = devices.load_snapshot(args.device)
    prepared = devices.prepare_circuit(head.spec, backend, args.device)
    simulator = devices.simulator(devices.noise_model(prepared), prepared.reduced.num_qubits)
    values = estimation.parameter_values(prepared.reduced, head.spec, angles, weights)
    setup = time.perf_counter() - started

    times = []
    for repeat in range(args.repeats):
        started = time.perf_counter()
        estimator = estimation.make_estimator(simulator, args.shots, repeat + 1)
        result = estimator.run([(prepared.reduced, [list(prepared.reduced_observables)], values)]).result()
        times.append(time.perf_counter() - started)
        assert result[0].data.evs.shape == (args.images, args.qubits)
    best = min(times)
    stats = prepared.stats
    print(f"command: {' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}")
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"device {args.device} ({backend.num_qubits} qubits): head of {args.qubits} qubits -> "
          f"{stats['active_qubits']} active qubits {stats['physical_qubits']}, depth {stats['depth']}, "
          f"{stats['two_qubit_gates']} two-qubit gates")
    print(f"set-up (snapshot, transpile, noise model): {setup:.2f} s")
    print(f"{args.images} images at {args.shots} shots: best {best:.2f} s of {args.repeats} "
          f"-> {args.images / best:.0f} images/s (all: {', '.join(f'{t:.2f}' for t in times)} s)")

    record = {"device": args.device, "qubits": args.qubits, "shots": args.shots,
              "images": args.images, "images_per_s": args.images / best, "setup_s": setup}
    if args.naive_images:
        # The snapshot through its own run (what EstimatorV2's local mode did): the runtime's
        # estimator measures every qubit, which no simulator holds at 133 qubits.
        from qiskit.primitives import BackendEstimatorV2

        n = args.naive_images
        full = estimation.parameter_values(prepared.isa, head.spec, angles[:n], weights)
        estimator = BackendEstimatorV2(
            backend=backend, options={"default_precision": args.shots**-0.5}
        )
        started = time.perf_counter()
        estimator.run([(prepared.isa, [list(prepared.observables)], full)]).result()
        naive = time.perf_counter() - started
        print(f"naive (whole {backend.num_qubits}-qubit snapshot as the mode): {n} images in "
              f"{naive:.2f} s -> {n / naive:.1f} images/s")
        record["naive_images_per_s"] = n / naive
    print(json.dumps(record))


if __name__ == "__main__":
    main()
