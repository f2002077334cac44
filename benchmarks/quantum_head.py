"""Forward+backward throughput of the quantum head's two executors on the same circuit.

Usage::

    .venv/bin/python benchmarks/quantum_head.py [--batch 256] [--threads N]

For 4 and 8 qubits (``real_amplitudes``, reps 2, linear entanglement, angle encoding, exact) it
times forward + backward (gradients for the inputs and the weights, as in training) of:

- the torch executor on batches of ``--batch`` samples, repeated for at least ``--min-seconds``
  (the median batch time is reported);
- the qiskit-ML reference (``EstimatorQNN`` + ``TorchConnector``) on a few samples only
  (``--qiskit-samples-4q`` / ``--qiskit-samples-8q``), because it costs about 0.1 s (4 qubits) to
  0.5 s (8 qubits) per sample; its samples/s is extrapolated from that per-sample time (its cost is
  linear in the batch: one set of parameter-shift circuits per sample).

It prints each throughput, the speedup, the largest differences between the executors' outputs
and gradients on the qiskit samples, and, as the last line, a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time

import torch

from _smoke import parse_args
from qsight_pipeline.models.quantum import QuantumConfig
from qsight_pipeline.models.quantum.circuit import build_circuit
from qsight_pipeline.models.quantum.qiskit_executor import QiskitExecutor
from qsight_pipeline.models.quantum.torch_executor import TorchStatevectorExecutor


def _inputs(n_qubits: int, n_weights: int, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    # float32, as the head's parameters are in training; the torch executor simulates in float64.
    generator = torch.Generator().manual_seed(seed)
    angles = (torch.rand(batch, n_qubits, generator=generator) * 2 - 1) * torch.pi
    weights = torch.randn(n_weights, generator=generator)
    upstream = torch.randn(batch, n_qubits, generator=generator)
    return angles, weights, upstream


def _forward_backward(executor, angles, weights, upstream):
    x = angles.clone().requires_grad_(True)
    w = weights.clone().requires_grad_(True)
    out = executor(x, w)
    (out * upstream).sum().backward()
    return out.detach(), x.grad, w.grad


def _time_torch(executor, angles, weights, upstream, min_seconds: float) -> float:
    """Median seconds per fwd+bwd batch."""
    for _ in range(5):
        _forward_backward(executor, angles, weights, upstream)
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds or len(times) < 20:
        tick = time.perf_counter()
        _forward_backward(executor, angles, weights, upstream)
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def benchmark(n_qubits: int, batch: int, qiskit_samples: int, min_seconds: float) -> dict:
    spec = build_circuit(QuantumConfig(n_qubits=n_qubits, reps=2, entanglement="linear"))
    torch_executor = TorchStatevectorExecutor(spec)
    qiskit_executor = QiskitExecutor(spec)
    angles, weights, upstream = _inputs(n_qubits, spec.num_weights, batch, seed=n_qubits)

    torch_seconds = _time_torch(torch_executor, angles, weights, upstream, min_seconds)
    torch_rate = batch / torch_seconds

    # Differences in float64 (the reference's TorchConnector still rounds its results to float32).
    subset = (
        angles[:qiskit_samples].double(),
        weights.double(),
        upstream[:qiskit_samples].double(),
    )
    _forward_backward(qiskit_executor, subset[0][:1], subset[1], subset[2][:1])  # warm-up
    tick = time.perf_counter()
    q_out, q_dx, q_dw = _forward_backward(qiskit_executor, *subset)
    qiskit_seconds = time.perf_counter() - tick
    qiskit_rate = qiskit_samples / qiskit_seconds

    t_out, t_dx, t_dw = _forward_backward(torch_executor, *subset)
    diff_forward = (t_out - q_out).abs().max().item()
    diff_grad = max((t_dx - q_dx).abs().max().item(), (t_dw - q_dw).abs().max().item())
    return {
        "n_qubits": n_qubits,
        "n_weights": spec.num_weights,
        "torch_samples_per_s": torch_rate,
        "torch_ms_per_batch": torch_seconds * 1e3,
        "qiskit_samples_per_s": qiskit_rate,
        "qiskit_samples_timed": qiskit_samples,
        "speedup": torch_rate / qiskit_rate,
        "max_abs_diff_forward": diff_forward,
        "max_abs_diff_grad": diff_grad,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--qiskit-samples-4q", type=int, default=16)
    parser.add_argument("--qiskit-samples-8q", type=int, default=4)
    parser.add_argument("--min-seconds", type=float, default=3.0, help="torch timing per size")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parse_args(parser, argv, batch=16, qiskit_samples_4q=2, qiskit_samples_8q=1, min_seconds=0.1)
    if args.threads:
        torch.set_num_threads(args.threads)

    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"command: {command}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"CUDA {'available' if torch.cuda.is_available() else 'not available'} (CPU timed)"
    )
    print(f"circuit: real_amplitudes reps=2 linear, angle encoding, exact; batch {args.batch}")
    results = {}
    for n_qubits, qiskit_samples in ((4, args.qiskit_samples_4q), (8, args.qiskit_samples_8q)):
        r = benchmark(n_qubits, args.batch, qiskit_samples, args.min_seconds)
        results[n_qubits] = r
        print(
            f"{n_qubits} qubits ({r['n_weights']} weights): "
            f"torch {r['torch_samples_per_s']:,.0f} samples/s "
            f"({r['torch_ms_per_batch']:.2f} ms per batch of {args.batch}); "
            f"qiskit-ML {r['qiskit_samples_per_s']:,.2f} samples/s "
            f"(timed on {r['qiskit_samples_timed']} samples, extrapolated per sample); "
            f"speedup {r['speedup']:,.0f}x; "
            f"max |diff| forward {r['max_abs_diff_forward']:.1e}, grad {r['max_abs_diff_grad']:.1e}"
        )
    summary = {
        "speedup_4q": results[4]["speedup"],
        "speedup_8q": results[8]["speedup"],
        "torch_samples_per_s_4q": results[4]["torch_samples_per_s"],
        "torch_samples_per_s_8q": results[8]["torch_samples_per_s"],
        "qiskit_samples_per_s_4q": results[4]["qiskit_samples_per_s"],
        "qiskit_samples_per_s_8q": results[8]["qiskit_samples_per_s"],
        "max_abs_diff_forward": max(r["max_abs_diff_forward"] for r in results.values()),
        "max_abs_diff_grad": max(r["max_abs_diff_grad"] for r in results.values()),
        "batch": args.batch,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
