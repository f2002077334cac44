"""The ``distributed`` parameter block: DistributedDataParallel workers and their rendezvous.

With ``nproc_per_node * nnodes > 1`` the ``classical`` node (and, on the first machine, the
feature export) start their own worker processes with PyTorch's elastic launcher, one per device;
Kedro still sees one node with one output. See docs/distributed.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from qsight_pipeline.config.base import ParamsBlock


class DistributedParams(ParamsBlock):
    """``distributed:`` in ``conf/base/parameters_distributed.yml`` (the defaults live here).

    Attributes:
        nproc_per_node: worker processes on this machine; ``auto`` = one per visible GPU
            (one process on a machine without a GPU).
        nnodes: machines taking part; each runs the same command with its own ``node_rank``.
        node_rank: this machine's index, ``0`` .. ``nnodes - 1``; machine 0 writes the artifacts.
        rdzv_endpoint: ``host:port`` of machine 0, where the workers meet (several machines only;
            one machine picks a free local port by itself).
        rdzv_backend: ``c10d`` (PyTorch's default) or ``static`` (ranks follow ``node_rank``).
        backend: ``auto`` = NCCL on CUDA, Gloo on CPU; or name one.
        max_restarts: how often the launcher restarts a failed worker group (0: fail at once).
        timeout_s: how long a worker waits for the others (rendezvous, collectives) before the
            run fails instead of hanging.
        data_parallel: legacy fallback: ``multi_gpu`` uses ``nn.DataParallel`` in one process.
    """

    nproc_per_node: int | Literal["auto"] = 1
    nnodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    rdzv_endpoint: str = "127.0.0.1:29400"
    rdzv_backend: Literal["c10d", "static"] = "c10d"
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    max_restarts: int = Field(0, ge=0)
    timeout_s: int = Field(600, ge=10)
    # Legacy: the guide's multi_gpu as nn.DataParallel in one process instead of DDP.
    data_parallel: bool = False

    @field_validator("nproc_per_node")
    @classmethod
    def _positive_procs(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be an integer >= 1 or 'auto' (one worker per visible GPU)")
        return value

    @field_validator("rdzv_endpoint")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port of machine 0, e.g. 10.0.0.1:29400")
        return value

    @model_validator(mode="after")
    def _rank_within_nodes(self) -> DistributedParams:
        if self.node_rank >= self.nnodes:
            raise ValueError(
                f"node_rank must be in 0..{self.nnodes - 1} (distributed.nnodes is "
                f"{self.nnodes}), got {self.node_rank}"
            )
        return self
