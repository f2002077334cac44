"""Timing shared by the benchmarks (not a benchmark itself: the leading underscore keeps it out of
the test that runs every script)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path


def images_per_second(decode: Callable[[Path, int], object], paths: Sequence[Path], size: int,
                      repeats: int) -> float:
    """Photographs per second of ``decode(path, size)`` over ``paths``: the best of ``repeats``
    passes, so that a pass slowed by another process on the machine does not count."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            decode(path, size)
        best = min(best, time.perf_counter() - start)
    return len(paths) / best
