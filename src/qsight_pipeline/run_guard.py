"""One run at a time per project, and no leftovers of killed runs.

``data/03_primary`` and ``data/05_model_input`` (the manifest and image caches) are shared by
every run of a project, whatever its ``output_dir``. Two runs at once would overwrite each
other's intermediates midway, so :class:`RunLock` takes an exclusive lock on
``data/.qsight_run.lock`` for the whole run: a second ``kedro run`` started meanwhile is refused
at once with the first one's pid, start time and command. The lock is an OS file lock
(``flock``), which the kernel drops when its process dies, even on SIGKILL; a lock file whose
recorded process is dead is stale and is taken over.

At the start of each run, holding the lock: :func:`remove_stale_temp_files` deletes the
temporary files that interrupted atomic writes left (``storage.atomic_write`` and
``datasets.AtomicDataset``), and :func:`close_stale_mlflow_runs` marks FAILED the MLflow runs
that a dead process left RUNNING.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from qsight_pipeline.errors import UserError

logger = logging.getLogger(__name__)

LOCK_NAME = ".qsight_run.lock"
PID_TAG = "qsight.pid"
# `.<name>.<random>.tmp` (storage.atomic_write) and `.<stem>.<8 hex>.tmp<suffix>` (AtomicDataset).
_TEMP_FILE = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$")
# Raw data is the user's; never look for leftovers there.
_SKIP_DIRS = frozenset({"01_raw"})
# Locks this process holds, by path: a session that ended without its after-run hook (refused by
# another hook) must not lock out the next session of the same process.
_HELD: dict[str, int] = {}


class RunLockedError(UserError):
    """Another run of this project is in progress."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """An exclusive, process-lifetime lock on a project's data folder."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, command: str) -> None:
        """Take the lock, or raise :class:`RunLockedError` naming the run that holds it."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        if key in _HELD:
            _unlock(_HELD.pop(key))
        for attempt in (1, 2):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = self.holder()
                if attempt == 1 and _is_dead(holder):
                    # A child the dead run forked may still hold the old file; start a new one.
                    logger.warning("Removing the stale run lock of dead process %s", holder.get("pid"))
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunLockedError(_locked_message(self.path, holder)) from None
            break
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        _HELD[key] = fd

    def release(self) -> None:
        if self._fd is None:
            return
        _HELD.pop(str(self.path.resolve()), None)
        _unlock(self._fd)
        self._fd = None

    def holder(self) -> dict[str, Any]:
        try:
            record = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            record = {}
        return record if isinstance(record, dict) else {}


def _unlock(fd: int) -> None:
    import fcntl

    try:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _is_dead(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    same_host = holder.get("host") in (None, socket.gethostname())
    return isinstance(pid, int) and same_host and not pid_alive(pid)


def _locked_message(path: Path, holder: dict[str, Any]) -> str:
    who = (
        f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')} UTC: "
        f"`{holder.get('command')}`"
        if holder
        else "a run that is just starting"
    )
    return (
        f"Another run of this project is in progress ({who}). Runs share data/03_primary and "
        f"data/05_model_input, so a second one at the same time would overwrite its manifest and "
        f"caches. Wait for it to finish, or stop it; the lock ({path}) is released when that "
        "process exits."
    )


def current_command() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"


def remove_stale_temp_files(folders: Iterable[str | os.PathLike | None]) -> list[Path]:
    """Delete the temporary files of interrupted atomic writes under ``folders``; returns them."""
    removed: list[Path] = []
    seen: set[Path] = set()
    for folder in folders:
        if not folder or not Path(folder).is_dir():
            continue
        for root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")]
            for name in files:
                path = Path(root) / name
                if _TEMP_FILE.match(name) and path.is_file() and path.resolve() not in seen:
                    seen.add(path.resolve())
                    path.unlink(missing_ok=True)
                    removed.append(path)
    if removed:
        logger.info(
            "Removed %d temporary file(s) left by an interrupted run: %s",
            len(removed), ", ".join(str(p) for p in removed[:5]),
        )
    return removed


def close_stale_mlflow_runs() -> list[str]:
    """Mark FAILED every RUNNING MLflow run of a dead process; returns their run ids.

    Called while holding the run lock, so no other run of this project can be live. The run
    the MLflow hook just opened for this process is tagged with its pid and kept.
    """
    mlflow = sys.modules.get("mlflow")  # the MLflow hook imported and configured it, or no MLflow
    if mlflow is None:
        return []
    active = mlflow.active_run()
    client = mlflow.tracking.MlflowClient()
    if active is not None:
        client.set_tag(active.info.run_id, PID_TAG, str(os.getpid()))
    try:
        experiments = [e.experiment_id for e in client.search_experiments()]
        running = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")
    except Exception as error:  # a tracking store we cannot query must not stop the run
        logger.warning("Could not look for unfinished MLflow runs: %s", error)
        return []
    closed = []
    for run in running:
        if active is not None and run.info.run_id == active.info.run_id:
            continue
        pid = run.data.tags.get(PID_TAG)
        if pid and pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue
        client.set_terminated(run.info.run_id, status="FAILED")
        closed.append(run.info.run_id)
    if closed:
        logger.warning(
            "Marked %d MLflow run(s) left RUNNING by a killed process as FAILED: %s",
            len(closed), ", ".join(closed),
        )
    return closed


class RunGuardHook:
    """Takes the project's run lock before anything else of a run, and cleans up leftovers."""

    def __init__(self) -> None:
        self._project: Path = Path.cwd()
        self._lock: RunLock | None = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._project = Path(context.project_path)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._lock = RunLock(self._project / "data")
        try:
            self._lock.acquire(current_command())
        except RunLockedError as error:
            # No MLflow run is open yet: the MLflow hook opens it after this hook (settings.HOOKS).
            logger.error("Run refused: %s", error)
            self._lock = None
            raise
        parameters = catalog.load("parameters") if "parameters" in catalog else {}
        remove_stale_temp_files(
            [self._project / "data", parameters.get("output_dir"), parameters.get("checkpoint_dir")]
        )
        # Stale MLflow runs are closed by the MLflow hook once it has opened this run's.
        self._check_lineage(pipeline, catalog, parameters)

    def _check_lineage(self, pipeline: Any, catalog: Any, parameters: dict[str, Any]) -> None:
        """Artifacts this run reads from disk must belong together (lineage.py)."""
        from qsight_pipeline import lineage

        cache: dict[str, Any] = {}  # the feature cache is read once for two pairs

        def load(name: str) -> Any:
            if name not in cache:
                cache[name] = catalog.load(name)
            return cache[name]

        try:
            lineage.check_pipeline_inputs(pipeline.inputs(), load, parameters.get("output_dir"))
        except Exception as error:  # unreadable, unsafe or mismatched: no node may start
            logger.error("Run refused: %s", error)
            self._release()
            raise

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
