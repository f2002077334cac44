"""Per-batch latency of the model's parts (encoder, compression, heads, ensemble).

A :class:`LatencyTracker` is attached to a model (``model.latency = LatencyTracker()``); the model
then times each part per batch. With no tracker attached the model times nothing, so switching
latency tracking off removes its cost entirely rather than hiding it behind a flag check per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


class LatencyTracker:
    """Collects wall-clock milliseconds per component and summarises them."""

    def __init__(self) -> None:
        self.samples_ms: dict[str, list[float]] = {}

    def measure(self, component: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` and record how long it took under ``component``."""
        device = _first_tensor_device(args, kwargs)
        # CUDA kernels are asynchronous: without a sync the clock would stop before the work ends.
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        self.samples_ms.setdefault(component, []).append((time.perf_counter() - start) * 1000.0)
        return result

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

    def samples(self, limit: int | None = 2000) -> dict[str, list[float]]:
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


def _first_tensor_device(args: tuple, kwargs: dict) -> torch.device | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device
    return None


# Latency samples kept per component in a summary (for histograms).
LATENCY_SAMPLE_LIMIT = 2000


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
