"""Freed C-heap memory goes back to the OS during long passes (glibc), so peaks stay flat."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from qsight_pipeline.training import host_memory
from qsight_pipeline.training.host_memory import PeriodicTrim, release_free_memory


def _anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_blocks_between_survivors_are_handed_back():
    # Freeing an mmapped block makes glibc raise its mmap threshold: the next blocks of the same
    # size come from the heap, as batch tensors do after the first batches of an epoch.
    first = np.ones(2**18)  # 2 MiB
    del first
    blocks = [np.ones(2**16) for _ in range(400)]  # 512 KiB each, 200 MiB
    survivors = blocks[::20]  # a few live blocks pin the heap, as a pass's kept outputs do
    del blocks
    before = _anon_mib()
    assert release_free_memory() is True
    assert before - _anon_mib() > 100, "malloc_trim should return most of the 190 MiB freed"
    assert len(survivors) == 20


def test_periodic_trim_calls_every_n_batches_only(monkeypatch):
    calls = []
    monkeypatch.setattr(host_memory, "release_free_memory", lambda: calls.append(1) or True)
    trim = PeriodicTrim(every=4)
    for _ in range(10):
        trim.step()
    assert len(calls) == 2  # after batches 4 and 8
    short = PeriodicTrim(every=4)
    for _ in range(3):  # a short pass (the demo's, the feature-cache stages') pays nothing
        short.step()
    assert len(calls) == 2
