"""How the CPU thread pool waits, chosen once per run before torch starts its threads.

PyTorch's CPU kernels run on an OpenMP pool whose idle threads spin for a while before they sleep
(``OMP_WAIT_POLICY=ACTIVE``-like, libgomp's default). On an idle machine that is the fastest way
to run the many small parallel regions of a small model. On a machine whose cores are already
busy (a shared server, a notebook beside other jobs, a cluster node) a spinning thread burns the
time slice that the thread it waits for needs, and a run takes many times its fair share
(benchmarks/shared_machine.py measures it).

:func:`configure` picks the policy before torch is imported (Kedro's ``after_context_created``;
torch loads only when a node needs it):

- ``QSIGHT_THREAD_POLICY=spin``: leave the OpenMP default (spin, then sleep);
- ``QSIGHT_THREAD_POLICY=passive``: ``OMP_WAIT_POLICY=PASSIVE``, idle threads sleep at once;
- ``QSIGHT_THREAD_POLICY=auto`` (the default): ``passive`` when the CPUs this process may use are
  already busy with other work at the start (measured over 0.1 s from ``/proc/stat``), else
  ``spin``.

An ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` the user set is always kept.
This module imports nothing heavy, and neither Kedro nor torch.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from qsight_pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

POLICY_ENV = "QSIGHT_THREAD_POLICY"
POLICIES = ("auto", "spin", "passive")
# Other work that keeps more than this many CPUs busy counts as a busy machine.
BUSY_CPUS = 0.5


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [float(x) for x in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cpus(window: float = 0.1) -> float | None:
    """How many CPUs other processes kept busy over ``window`` seconds (None if unknown).

    Measured while this process sleeps, so it counts only the others' work.
    """
    start = _cpu_times()
    time.sleep(window)
    end = _cpu_times()
    if start is None or end is None or end[1] <= start[1]:
        return None
    cpus = os.cpu_count() or 1
    return cpus * (end[0] - start[0]) / (end[1] - start[1])


def configure(environ: dict[str, str] | None = None) -> str:
    """Choose the wait policy for this process and its children; returns what was chosen."""
    environ = os.environ if environ is None else environ
    requested = (environ.get(POLICY_ENV) or "auto").strip().lower()
    if requested not in POLICIES:
        raise ConfigError(
            f"{POLICY_ENV}={requested!r} is not a thread policy; use one of {', '.join(POLICIES)}."
        )
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return "user"
    if "torch" in sys.modules:
        return "too late"  # the pool exists already (a notebook); its policy cannot change
    policy = requested
    if requested == "auto":
        others = busy_cpus()
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        policy = "passive" if others is not None and others > BUSY_CPUS and available > 1 else "spin"
        if policy == "passive":
            logger.info(
                "Other processes keep %.1f CPU(s) busy: idle torch threads will sleep instead of "
                "spinning (OMP_WAIT_POLICY=PASSIVE; %s=spin keeps the default)", others, POLICY_ENV,
            )
    if policy == "passive":
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return policy
