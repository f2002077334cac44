"""DistributedDataParallel inside a node: plan the workers, launch them, and what a worker needs.

A node that trains on images calls :func:`launch` with a top-level worker function; PyTorch's
elastic launcher (the engine behind ``torchrun``) starts ``nproc_per_node`` processes on this
machine and meets the other machines' workers at the rendezvous. Kedro still sees one node with
one output: the writer (machine 0, local worker 0) returns the result, everybody else returns
``None``. Inside a worker, :func:`init_worker` joins the process group and the trainer picks the
rest up from :func:`current_rank`: it wraps the model in DDP per stage, shards the training data
with a ``DistributedSampler`` and gathers the epoch statistics of all ranks.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from qsight_pipeline.data.loaders import worker_context
from qsight_pipeline.errors import ConfigError, UserError
from qsight_pipeline.training.devices import parse_device_ids

logger = logging.getLogger(__name__)


class DistributedWorkerError(UserError):
    """A distributed worker failed; the message names its rank and what it raised."""


@dataclass(frozen=True)
class WorkerPlan:
    """How many workers, where they meet, and on which devices (all plain data: it is pickled
    into every worker)."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str = "127.0.0.1:29400"
    rdzv_backend: str = "c10d"
    backend: str = "gloo"
    max_restarts: int = 0
    timeout_s: int = 600
    device_ids: tuple[int, ...] | None = None  # GPUs of the local ranks (None: CPU)

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def local_only(self) -> WorkerPlan:
        """The same workers on this machine alone (for the feature export, which machine 0 runs)."""
        return WorkerPlan(
            nproc_per_node=self.nproc_per_node,
            backend=self.backend,
            timeout_s=self.timeout_s,
            device_ids=self.device_ids,
        )


def plan_workers(
    params: Any,
    device: str = "auto",
    multi_gpu: bool = False,
    device_ids: Sequence[int] | str | int | None = None,
) -> WorkerPlan:
    """Turn the ``distributed`` block (and the guide's ``multi_gpu``/``device_ids``) into a plan.

    ``nproc_per_node: auto`` means one worker per visible GPU (one on a CPU machine). The guide's
    ``multi_gpu: true`` means DDP over ``device_ids`` (all visible GPUs when null) unless
    ``nproc_per_node`` is set; on a machine without CUDA it stays one process, with a warning.
    """
    cuda = torch.cuda.is_available() and not str(device).lower().startswith("cpu")
    gpus = list(range(torch.cuda.device_count())) if cuda else []
    wanted = parse_device_ids(device_ids) if device_ids is not None else None
    if wanted is not None and cuda:
        gpus = [g for g in wanted if g < torch.cuda.device_count()]
    nproc = params.nproc_per_node
    if nproc == "auto":
        nproc = max(1, len(gpus))
    elif nproc == 1 and multi_gpu:
        if len(gpus) >= 2:
            nproc = len(gpus)
        else:
            logger.warning(
                "`multi_gpu` is true but %s; training in one process (set "
                "distributed.nproc_per_node to run several CPU workers).",
                "CUDA is not available" if not cuda else "fewer than two GPUs are usable",
            )
    if cuda and nproc > len(gpus):
        raise ConfigError(
            f"distributed.nproc_per_node is {nproc} but only {len(gpus)} GPU(s) are usable "
            f"({gpus}); lower it, use `auto`, or set device: cpu to run CPU workers."
        )
    backend = params.backend if params.backend != "auto" else ("nccl" if cuda else "gloo")
    return WorkerPlan(
        nproc_per_node=int(nproc),
        nnodes=params.nnodes,
        node_rank=params.node_rank,
        rdzv_endpoint=params.rdzv_endpoint,
        rdzv_backend=params.rdzv_backend,
        backend=backend,
        max_restarts=params.max_restarts,
        timeout_s=params.timeout_s,
        device_ids=tuple(gpus[:nproc]) if cuda else None,
    )


def per_rank_batch_size(batch_size: int, world_size: int) -> int:
    """The configured ``batch_size`` is the global batch; each rank takes an equal share."""
    if batch_size % world_size:
        raise ConfigError(
            f"run.batch_size {batch_size} is the global batch and must divide evenly over the "
            f"{world_size} workers (distributed.nproc_per_node x distributed.nnodes); use a "
            f"multiple of {world_size}."
        )
    return batch_size // world_size


# --------------------------------------------------------------------------- launching


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(plan: WorkerPlan, worker: Callable[..., Any], *args: Any) -> Any:
    """Run ``worker(plan, *args)`` in ``plan.nproc_per_node`` processes; return the writer's result.

    ``worker`` must be a top-level function (it is pickled into the worker processes). On
    machines other than 0 the result is ``None``. A failed worker ends the launch at once (the
    launcher stops the others) with :class:`DistributedWorkerError` naming the rank.
    """
    single_machine = plan.nnodes == 1
    endpoint = f"127.0.0.1:{_free_port()}" if single_machine else plan.rdzv_endpoint
    rdzv_configs: dict[str, Any] = {"join_timeout": plan.timeout_s}
    if plan.rdzv_backend == "static":
        rdzv_configs["rank"] = plan.node_rank
    config = LaunchConfig(
        min_nodes=plan.nnodes,
        max_nodes=plan.nnodes,
        nproc_per_node=plan.nproc_per_node,
        run_id=f"qsight-{uuid.uuid4().hex[:8]}" if single_machine else "qsight",
        rdzv_backend=plan.rdzv_backend,
        rdzv_endpoint=endpoint,
        rdzv_configs=rdzv_configs,
        max_restarts=plan.max_restarts,
        monitor_interval=0.1,
        start_method=_start_method(worker),
    )
    logger.info(
        "Starting %d DDP worker(s) on this machine (machine %d of %d, backend %s, endpoint %s)",
        plan.nproc_per_node,
        plan.node_rank,
        plan.nnodes,
        plan.backend,
        endpoint,
    )
    with tempfile.TemporaryDirectory(prefix="qsight-ddp-failures-") as failures:
        try:
            results = elastic_launch(config, _run_recorded)(failures, worker, plan, *args)
        except ChildFailedError as error:
            message = _reported_failure(Path(failures)) or _describe_failure(error)
            raise DistributedWorkerError(message) from None
    found = [value for _rank, value in sorted(results.items()) if value is not None]
    return found[0] if found else None


def _start_method(worker: Callable[..., Any]) -> str:
    """``forkserver`` where the platform has one (Linux, macOS), else ``spawn`` (Windows).

    The workers are never forked from this process, which may hold threads, a CUDA context or
    OpenMP's thread pool. A fork server is a fresh interpreter that imports ``worker``'s module
    once, the first time this process launches workers, and forks every worker of this and
    later launches from there: with ``spawn`` each worker imported torch, timm and the project
    itself, about 15 s of CPU on a 2-core machine, and the feature export paid it again after
    the classical training. The server lives as long as this process.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    module = getattr(worker, "__module__", None)
    if module and module != "__main__":
        # Read when the server starts; a server already running keeps what it imported.
        multiprocessing.get_context("forkserver").set_forkserver_preload([module])
    return "forkserver"


def _run_recorded(failures: str, worker: Callable[..., Any], plan: WorkerPlan, *args: Any) -> Any:
    """The spawned entry point: a worker that fails for a reason of its own says so in a file.

    The launcher stops the other workers as soon as it sees one exit, and that one may be a rank
    that only lost its connection to the failing one; the file names the cause.
    """
    try:
        return record(worker)(plan, *args)
    except Exception as error:
        text = f"{type(error).__name__}: {error}"
        if not any(sign in text for sign in _CONSEQUENCES):
            rank = os.environ.get("RANK", "?")
            (Path(failures) / f"rank_{rank}.txt").write_text(text)
        raise


def _reported_failure(failures: Path) -> str | None:
    reports = sorted(failures.glob("rank_*.txt"), key=lambda path: path.stat().st_mtime)
    if not reports:
        return None
    rank = reports[0].stem.split("_", 1)[1]
    lines = reports[0].read_text().strip().splitlines() or ["(no message)"]
    return (
        f"distributed worker rank {rank} failed: {lines[-1]}. The run was stopped; fix the cause "
        "and re-run (with checkpoint_dir set it resumes)."
    )


# What a worker raises when another worker died under it: it is a consequence, not the cause.
_CONSEQUENCES = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "DistBackendError",
    "DistNetworkError",
    "timed out",
    "Timed out",
    "aborted",
    "terminated by signal",
)


def _failure_text(failure: Any) -> str:
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", "")
    return str(message or "").strip()


def _describe_failure(error: Any) -> str:
    """Name the rank that failed first for a reason of its own, and what it raised."""

    def order(item: tuple[int, Any]) -> tuple[bool, bool, int, int]:
        rank, failure = item
        text = _failure_text(failure)
        consequence = not text or any(sign in text for sign in _CONSEQUENCES)
        return (consequence, failure.exitcode < 0, failure.timestamp, rank)

    rank, failure = min(error.failures.items(), key=order)
    text = _failure_text(failure)
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1].strip() if lines else f"exit code {failure.exitcode}"
    others = sorted(set(error.failures) - {rank})
    return (
        f"distributed worker rank {rank} failed: {last}"
        + (f" (rank(s) {others} stopped with it)" if others else "")
        + ". The run was stopped; fix the cause and re-run (with checkpoint_dir set it resumes)."
    )


# --------------------------------------------------------------------------- inside a worker


@dataclass(frozen=True)
class RankInfo:
    """This worker's place: global rank, world size, local rank and machine."""

    rank: int
    world_size: int
    local_rank: int
    node_rank: int
    device: torch.device

    @property
    def is_writer(self) -> bool:
        """Machine 0's first worker alone writes artifacts, checkpoints and tracking."""
        return self.node_rank == 0 and self.local_rank == 0


_CURRENT: RankInfo | None = None


def current_rank() -> RankInfo | None:
    """This process's :class:`RankInfo` inside a worker, ``None`` in an ordinary process."""
    return _CURRENT


def init_worker(plan: WorkerPlan) -> RankInfo:
    """Join the process group the launcher prepared (env ``RANK``, ``WORLD_SIZE``, ...)."""
    global _CURRENT
    local_rank = int(os.environ["LOCAL_RANK"])
    if plan.device_ids:
        device = torch.device("cuda", plan.device_ids[local_rank])
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        # Share the machine's cores between the workers instead of oversubscribing them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // plan.nproc_per_node))
    # A new worker has no logging set up; the writer logs progress, the others warnings.
    writer = plan.node_rank == 0 and local_rank == 0
    logging.basicConfig(
        level=logging.INFO if writer else logging.WARNING,
        format=f"[rank {os.environ.get('RANK', '?')}] %(levelname)s %(name)s: %(message)s",
    )
    dist.init_process_group(plan.backend, timeout=timedelta(seconds=plan.timeout_s))
    _CURRENT = RankInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        node_rank=plan.node_rank,
        device=device,
    )
    return _CURRENT


def close_worker() -> None:
    global _CURRENT
    _CURRENT = None
    if dist.is_initialized():
        with contextlib.suppress(Exception):  # a broken group must not hide the real error
            dist.destroy_process_group()


def wrap_model(model: nn.Module, rank: RankInfo) -> nn.Module:
    """DDP over the parameters that currently require gradients (so: once per stage)."""
    device_ids = [rank.device.index] if rank.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def sharded_loader(
    dataset: Dataset, batch_size: int, *, seed: int, **loader_args: Any
) -> DataLoader:
    """The training loader of one rank: a shuffled ``DistributedSampler`` shard of ``dataset``,
    ``batch_size`` per rank (the trainer calls ``set_epoch`` every epoch)."""
    rank = current_rank()
    assert rank is not None, "sharded_loader is for DDP workers"
    sampler = DistributedSampler(
        dataset, num_replicas=rank.world_size, rank=rank.rank, shuffle=True, seed=seed
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=False,
        multiprocessing_context=worker_context(loader_args.get("num_workers", 0)),
        **loader_args,
    )


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)


def gather(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (plain Python/numpy objects)."""
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def shard_range(length: int, rank: RankInfo) -> range:
    """A contiguous, nearly equal slice of ``range(length)`` for ``rank`` (no padding)."""
    start = length * rank.rank // rank.world_size
    stop = length * (rank.rank + 1) // rank.world_size
    return range(start, stop)
