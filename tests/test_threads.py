"""The thread policy (qsight_pipeline.threads): spin on an idle machine, sleep on a busy one."""

from __future__ import annotations

import sys

import pytest

from qsight_pipeline import threads
from qsight_pipeline.errors import ConfigError


@pytest.fixture
def before_torch(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)


@pytest.mark.parametrize(("others", "expected"), [(0.05, "spin"), (1.9, "passive")])
def test_auto_sleeps_only_when_other_work_keeps_the_cpus_busy(monkeypatch, before_torch,
                                                               others, expected):
    monkeypatch.setattr(threads, "busy_cpus", lambda window=0.1: others)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    environ: dict[str, str] = {}
    assert threads.configure(environ) == expected
    assert environ.get("OMP_WAIT_POLICY") == ("PASSIVE" if expected == "passive" else None)


def test_an_explicit_policy_or_the_users_openmp_setting_wins(before_torch):
    environ = {"QSIGHT_THREAD_POLICY": "passive"}
    assert threads.configure(environ) == "passive" and environ["OMP_WAIT_POLICY"] == "PASSIVE"
    environ = {"QSIGHT_THREAD_POLICY": "spin"}
    assert threads.configure(environ) == "spin" and "OMP_WAIT_POLICY" not in environ
    environ = {"QSIGHT_THREAD_POLICY": "passive", "OMP_WAIT_POLICY": "ACTIVE"}
    assert threads.configure(environ) == "user" and environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_a_bad_policy_names_the_variable(before_torch):
    with pytest.raises(ConfigError, match="QSIGHT_THREAD_POLICY='fast' is not a thread policy"):
        threads.configure({"QSIGHT_THREAD_POLICY": "fast"})


def test_busy_cpus_counts_other_processes_work():
    import hashlib
    import threading

    stop = threading.Event()

    def burn():
        while not stop.is_set():
            hashlib.sha256(bytes(1 << 20)).digest()

    worker = threading.Thread(target=burn)
    worker.start()
    try:
        busy = threads.busy_cpus(0.3)
    finally:
        stop.set()
        worker.join()
    if busy is None:
        pytest.skip("no /proc/stat on this system")
    assert busy > 0.5
