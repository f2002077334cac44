"""Where the study's trials run (``quantum_study.backend``): joblib's loky processes on this
machine, or a Dask or Ray cluster, through joblib's own backend mechanism (``parallel_config``).

``quantum_study.cluster_address`` connects to a running cluster (a Dask scheduler address such as
``tcp://10.0.0.1:8786``, or a Ray address such as ``ray://10.0.0.1:10001`` or ``auto``); empty,
the run starts a local cluster of one single-threaded worker per core and stops it at the end.
Dask and Ray are optional extras; a missing one stops the study before any work.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator

from joblib import parallel_config

from qsight_pipeline.config.quantum_study import QuantumStudyParams
from qsight_pipeline.errors import UserError

logger = logging.getLogger(__name__)

# Per cluster backend: the packages it imports and the extra of pyproject.toml that installs them.
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "dask": (("dask", "distributed"), "cluster-dask"),
    "ray": (("ray",), "cluster-ray"),
}
# Ray's joblib backend is a multiprocessing pool, which cannot hand results back as they finish.
RETURN_AS = {"loky": "generator_unordered", "dask": "generator_unordered", "ray": "list"}


class ClusterUnavailableError(UserError, RuntimeError):
    """``quantum_study.backend`` names a cluster whose packages are not installed, or
    ``quantum_study.cluster_address`` one that cannot be reached."""


def check_backend(params: QuantumStudyParams) -> None:
    """The backend's packages can be imported; otherwise one line that names the extra."""
    if params.backend not in EXTRAS:
        return
    packages, extra = EXTRAS[params.backend]
    missing = [package for package in packages if importlib.util.find_spec(package) is None]
    if missing:
        raise ClusterUnavailableError(
            f"quantum_study.backend is {params.backend}, which needs {', '.join(missing)}: "
            f"install it with `pip install 'qsight_pipeline[{extra}]'`, or set "
            "quantum_study.backend: loky."
        )


@contextlib.contextmanager
def study_backend(params: QuantumStudyParams, workers: int) -> Iterator[int]:
    """Inside, joblib's ``Parallel`` runs on ``params.backend``; yields its ``n_jobs``.

    ``workers``: the local pool's size (loky's processes, or a local cluster's workers).
    """
    check_backend(params)
    if params.backend == "dask":
        with _dask_client(params.cluster_address, workers), parallel_config(backend="dask"):
            yield params.n_jobs  # -1: every thread of the cluster
    elif params.backend == "ray":
        with _ray_session(params.cluster_address, workers), parallel_config(backend="ray"):
            yield params.n_jobs
    else:
        with parallel_config(backend="loky"):
            yield workers


@contextlib.contextmanager
def _dask_client(address: str | None, workers: int) -> Iterator[None]:
    # lazy: optional dependency (the cluster-dask extra)
    from dask.distributed import Client, LocalCluster

    if address:
        try:
            client = Client(address)
        except OSError as error:
            raise _unreachable("Dask scheduler", address, error) from error
        logger.info("Quantum study: trials on the Dask cluster at %s", address)
        with client:
            yield
        return
    # One single-threaded worker process per trial slot, as loky's: torch gets one thread each.
    with (
        _environment_kept(),
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                     dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        logger.info("Quantum study: trials on a local Dask cluster of %d worker(s), dashboard %s",
                    workers, client.dashboard_link)
        yield


@contextlib.contextmanager
def _environment_kept() -> Iterator[None]:
    """Give this process back the environment variables it had on entry.

    Dask's nanny writes the variables its worker processes start with (``OMP_NUM_THREADS=1``,
    ``MKL_NUM_THREADS=1``, ``PYTHONHASHSEED``, ...) into the *starting* process's ``os.environ``
    and leaves them there. After the study every process this run starts (DDP workers, data
    loaders, a notebook's later runs) would get one torch thread, and different numbers.
    """
    before = dict(os.environ)
    try:
        yield
    finally:  # only what changed: the environment is never empty for the process's other threads
        for name in set(os.environ) - set(before):
            del os.environ[name]
        for name, value in before.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


@contextlib.contextmanager
def _ray_session(address: str | None, workers: int) -> Iterator[None]:
    # lazy: optional dependency (the cluster-ray extra)
    import ray
    from ray.util.joblib import register_ray

    register_ray()
    started = not ray.is_initialized()
    if started:
        # A running cluster has its own size; a local one gets one CPU per trial slot.
        try:
            ray.init(address=address, num_cpus=None if address else workers)
        except OSError as error:  # ConnectionError: no cluster at that address
            raise _unreachable("Ray cluster", address, error) from error
    logger.info("Quantum study: trials on Ray (%s)", address or f"local, {workers} CPU(s)")
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _unreachable(what: str, address: str | None, error: BaseException) -> ClusterUnavailableError:
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return ClusterUnavailableError(
        f"quantum_study.cluster_address: cannot reach the {what} at {address} ({reason}); start "
        "it, correct the address, or leave cluster_address empty for a local cluster."
    )
