"""The torch executor from 8 to 20 qubits: forward + backward samples/s and peak memory.

The statevector has 2**n amplitudes per sample, so the cost grows about twofold per qubit; this
shows where a device runs out of room or speed for wider heads. The circuit is the project's
(``real_amplitudes``, reps 2, linear entanglement, angle encoding, exact), timed as training uses
it (gradients for the inputs and the weights), on ``--device`` (``cuda`` on a lent GPU; the suite
in ``gpu_suite.sh`` runs it there).

    .venv/bin/python benchmarks/quantum_executor_scaling.py --device cpu --qubits 8 12
    python benchmarks/quantum_executor_scaling.py --device cuda --qubits 8 12 16 20

The batch shrinks as the state grows (``--amplitudes`` per batch, default 2**24), so every size
fits in memory; the figure is samples per second either way. Prints one line per size and, last,
a JSON object with the figures and the command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time

import torch

from _smoke import parse_args
from qsight_pipeline.models.quantum import QuantumConfig
from qsight_pipeline.models.quantum.circuit import build_circuit
from qsight_pipeline.models.quantum.torch_executor import TorchStatevectorExecutor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_size(n_qubits: int, device: torch.device, amplitudes: int, min_seconds: float) -> dict:
    spec = build_circuit(QuantumConfig(n_qubits=n_qubits, reps=2, entanglement="linear"))
    executor = TorchStatevectorExecutor(spec)  # runs where its inputs are
    batch = max(1, min(1024, amplitudes >> n_qubits))
    generator = torch.Generator().manual_seed(n_qubits)
    angles = ((torch.rand(batch, n_qubits, generator=generator) * 2 - 1) * torch.pi).to(device)
    weights = torch.randn(spec.num_weights, generator=generator).to(device)

    def step() -> None:
        x = angles.clone().requires_grad_(True)
        w = weights.clone().requires_grad_(True)
        executor(x, w).sum().backward()

    for _ in range(3):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds or len(times) < 5:
        tick = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - tick)
    seconds = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"n_qubits": n_qubits, "batch": batch, "samples_per_s": batch / seconds,
            "ms_per_batch": seconds * 1e3, "peak_mib": peak}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--qubits", type=int, nargs="+", default=[8, 12, 16, 20])
    parser.add_argument("--amplitudes", type=int, default=1 << 24)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    args = parse_args(parser, argv, qubits=[4], amplitudes=1 << 10, min_seconds=0.1)
    device = torch.device(args.device)
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"command: {command}\ndevice: {name}, torch {torch.__version__}")
    rows = []
    for n_qubits in args.qubits:
        row = time_size(n_qubits, device, args.amplitudes, args.min_seconds)
        rows.append(row)
        peak = f", peak {row['peak_mib']:.0f} MiB" if row["peak_mib"] is not None else ""
        print(f"{n_qubits:2d} qubits: {row['samples_per_s']:12,.1f} samples/s "
              f"(batch {row['batch']}, {row['ms_per_batch']:.1f} ms{peak})", flush=True)
    result = {"command": command, "device": name, "rows": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
