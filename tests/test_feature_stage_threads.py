"""The feature-cache stages of a small circuit run on one intra-op thread on a CPU."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from qsight_pipeline.training.devices import (
    SMALL_STATE_QUBITS,
    feature_stage_threads,
    intra_op_threads,
)


def _model(qubits: int | None):
    head = None if qubits is None else SimpleNamespace(config=SimpleNamespace(n_qubits=qubits))
    return SimpleNamespace(quantum_head=head)


def test_small_circuits_on_a_cpu_get_one_thread_and_large_ones_keep_all():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert feature_stage_threads(_model(4), cpu) == 1
    assert feature_stage_threads(_model(None), cpu) == 1  # classical-only ensemble stage
    assert feature_stage_threads(_model(SMALL_STATE_QUBITS + 2), cpu) is None
    assert feature_stage_threads(_model(4), gpu) is None


def test_the_thread_count_is_restored_after_the_block_even_on_error():
    before = torch.get_num_threads()
    seen = []
    try:
        with intra_op_threads(1):
            seen.append(torch.get_num_threads())
            raise RuntimeError("a failing stage")
    except RuntimeError:
        pass
    assert seen == [1]
    assert torch.get_num_threads() == before
    with intra_op_threads(None):
        assert torch.get_num_threads() == before
