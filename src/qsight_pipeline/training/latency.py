"""Per-batch latency of the model's parts (encoder, compression, heads, ensemble).

Timing wraps the model from the outside: :func:`track_latency` registers a forward pre-hook and a
forward hook on each part for the duration of a ``with`` block and removes them afterwards. The
model knows nothing about it, and with tracking off no hook exists, so it costs nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from qsight_pipeline.constants import MODEL_PARTS

# Latency samples kept per component in a stage summary (for histograms).
LATENCY_SAMPLE_LIMIT = 2000


class LatencyTracker:
    """Collects wall-clock milliseconds per component and summarises them."""

    def __init__(self) -> None:
        self.samples_ms: dict[str, list[float]] = {}
        # Start times per (component, thread): DataParallel runs replicas in threads at once.
        self._started: dict[tuple[str, int], float] = {}

    def start(self, component: str, inputs: tuple) -> None:
        """Mark the start of one call of ``component`` (``inputs``: its positional arguments)."""
        _synchronize(inputs)
        self._started[(component, threading.get_ident())] = time.perf_counter()

    def stop(self, component: str, inputs: tuple) -> None:
        """Record the time since the matching :meth:`start`."""
        # CUDA kernels are asynchronous: without a sync the clock would stop before the work ends.
        _synchronize(inputs)
        started = self._started.pop((component, threading.get_ident()), None)
        if started is not None:
            elapsed = (time.perf_counter() - started) * 1000.0
            self.samples_ms.setdefault(component, []).append(elapsed)

    def position(self) -> dict[str, int]:
        """A bookmark: how many samples each component has now (for :meth:`summary` ``since``)."""
        return {component: len(values) for component, values in self.samples_ms.items()}

    def summary(self, since: dict[str, int] | None = None) -> dict[str, dict[str, float]]:
        """``{component: {"mean", "p50", "p95", "count"}}`` in ms, over samples after ``since``."""
        since = since or {}
        result: dict[str, dict[str, float]] = {}
        for component, values in self.samples_ms.items():
            window = values[since.get(component, 0) :]
            if not window:
                continue
            array = np.asarray(window, dtype=np.float64)
            result[component] = {
                "mean": float(array.mean()),
                "p50": float(np.percentile(array, 50)),
                "p95": float(np.percentile(array, 95)),
                "count": int(array.size),
            }
        return result

    def samples(self, limit: int | None = LATENCY_SAMPLE_LIMIT) -> dict[str, list[float]]:
        """The most recent ``limit`` samples per component (for histograms)."""
        return {
            component: list(values if limit is None else values[-limit:])
            for component, values in self.samples_ms.items()
        }

    def state_dict(self) -> dict[str, list[float]]:
        return {component: list(values) for component, values in self.samples_ms.items()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self.samples_ms = {
            component: [float(v) for v in values] for component, values in state.items()
        }

    def clear(self) -> None:
        self.samples_ms.clear()


@contextmanager
def track_latency(
    model: nn.Module, tracker: LatencyTracker | None, parts: Sequence[str] = MODEL_PARTS
) -> Iterator[None]:
    """Time every call of ``model``'s ``parts`` into ``tracker`` inside the ``with`` block.

    Parts the model lacks (e.g. a disabled quantum head) are skipped; ``tracker=None`` does
    nothing. The hooks are removed on exit, also when the block raises.
    """
    if tracker is None:
        yield
        return
    handles = []
    for part in parts:
        module = getattr(model, part, None)
        if isinstance(module, nn.Module):
            handles.append(module.register_forward_pre_hook(_pre_hook(tracker, part)))
            handles.append(module.register_forward_hook(_post_hook(tracker, part)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _pre_hook(tracker: LatencyTracker, component: str) -> Any:
    def hook(_module: nn.Module, inputs: tuple) -> None:
        tracker.start(component, inputs)

    return hook


def _post_hook(tracker: LatencyTracker, component: str) -> Any:
    def hook(_module: nn.Module, inputs: tuple, _output: Any) -> None:
        tracker.stop(component, inputs)

    return hook


def _synchronize(inputs: tuple) -> None:
    for value in inputs:
        if isinstance(value, torch.Tensor):
            if value.device.type == "cuda":
                torch.cuda.synchronize(value.device)
            return


def latency_statistics(stages: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Per-component p50/p95/mean/count over every stage's latency samples, and the samples
    themselves (the last ``LATENCY_SAMPLE_LIMIT`` per component, for histograms)."""
    samples: dict[str, list[float]] = {}
    for stage in stages:
        for component, values in (stage.get("latency_samples_ms") or {}).items():
            samples.setdefault(component, []).extend(float(v) for v in values)
    stats = {
        component: {
            "p50": float(np.percentile(values, 50)),
            "p95": float(np.percentile(values, 95)),
            "mean": float(np.mean(values)),
            "count": len(values),
        }
        for component, values in samples.items()
        if values
    }
    trimmed = {c: v[-LATENCY_SAMPLE_LIMIT:] for c, v in samples.items()}
    return stats, trimmed
