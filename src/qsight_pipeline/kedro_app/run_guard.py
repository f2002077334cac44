"""The mechanisms that keep runs apart: run locks, leftovers of killed runs, clean stops.

The hooks that use them, one job each, are in :mod:`qsight_pipeline.kedro_app.run_hooks`.

``data/03_primary`` and ``data/05_model_input`` (the manifest and image caches) are shared by
every run of a project, and an ``output_dir`` may be shared by several projects (an absolute
path). :class:`RunLock` takes an exclusive lock on ``data/.qsight_run.lock`` and on
``<output_dir>/.qsight_run.lock`` (and on ``checkpoint_dir``'s) for the whole run: a second run
that would write to either is refused at once with the first one's pid, start time and command.
The locks are OS file locks (``flock``), which the kernel drops when the process dies, even on
SIGKILL; a lock file whose recorded process is dead is stale and is taken over.

At the start of each run, holding the locks, :func:`storage.recover` removes the unfinished
temporary files that killed QSight processes listed in their journals (nothing else), and the
MLflow hook marks FAILED the MLflow runs that a dead process left RUNNING.

The output transaction (:func:`storage.begin`, :func:`storage.end`) stages this run's outputs in
``output_dir``, ``data/07_model_output`` and ``data/08_reporting`` and commits them together when
the pipeline ends well, or rolls them back when it fails (see :mod:`qsight_pipeline.files.storage`).

:class:`StopSignals` turns SIGTERM and SIGINT into :class:`RunInterrupted`, so that a scheduler
stopping the job (Slurm, Kubernetes, systemd send SIGTERM first) ends it like any failure: one
line saying where it stopped, the MLflow run ended KILLED, the locks released, this run's staged
outputs rolled back, and the epoch checkpoints left as the last complete epoch wrote them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import signal
import socket
import stat
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from qsight_pipeline.errors import UserError

logger = logging.getLogger(__name__)

LOCK_NAME = ".qsight_run.lock"
PID_TAG = "qsight.pid"
# Locks this process holds, by path: a session that ended without its after-run hook (refused by
# another hook) must not lock out the next session of the same process.
_HELD: dict[str, int] = {}


class RunLockedError(UserError):
    """Another run of this project is in progress."""


class LockPathError(UserError):
    """Something that is not a QSight run lock is at the lock's path: it is never touched."""


# The key that marks a lock file's record as QSight's (older releases wrote the same record
# without it, and left an empty file once released).
LOCK_TAG = {"lock": "qsight-run"}
_LOCK_KEYS = {"pid", "host", "started", "command"}


def is_qsight_lock(content: bytes) -> bool:
    """Whether a lock file's bytes are a QSight run lock: empty (released, or just created by
    a run that has not written its record yet) or a record QSight writes."""
    if not content.strip(b"\0 \n\t"):
        return True
    try:
        record = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(record, dict) and (
        record.get("lock") == LOCK_TAG["lock"] or ("pid" in record and set(record) <= _LOCK_KEYS))


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        if key in _HELD:
            _unlock(_HELD.pop(key))
        for attempt in (1, 2):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                opened = os.fstat(fd)
                os.close(fd)
                holder = self.holder()
                if attempt == 1 and _is_dead(holder):
                    # A child the dead run forked may still hold the old file; start a new one.
                    logger.warning("Removing the stale run lock of dead process %s", holder.get("pid"))
                    _unlink_if_same(self.path, opened)
                    continue
                raise RunLockedError(_locked_message(self.path, holder)) from None
            break
        record = {
            **LOCK_TAG,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        _HELD[key] = fd

    def _open(self) -> int:
        """A descriptor of the lock file: created exclusively, or an existing QSight lock.

        Links are never followed, and a file at the path that is not a QSight lock (a user's
        file, a link, a folder, a file with other hard links) is refused, untouched.
        """
        flags = os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        try:
            fd = os.open(self.path, flags | getattr(os, "O_NONBLOCK", 0))
        except OSError as error:
            kind = "a symbolic link" if os.path.islink(self.path) else (
                "a folder" if os.path.isdir(self.path) else f"not a lock file ({error.strerror})")
            raise LockPathError(_not_a_lock_message(self.path, kind)) from None
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:
            os.close(fd)
            kind = "a file with other hard links" if stat.S_ISREG(found.st_mode) else "not a file"
            raise LockPathError(_not_a_lock_message(self.path, kind))
        if not is_qsight_lock(os.pread(fd, 1 << 16, 0)):
            os.close(fd)
            raise LockPathError(_not_a_lock_message(self.path, "its content is not a lock record"))
        return fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        key = str(self.path.resolve())
        if fd is not None and _HELD.get(key) == fd:  # not released already (release_all_locks)
            del _HELD[key]
            _unlock(fd)

    def holder(self) -> dict[str, Any]:
        try:
            record = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            record = {}
        return record if isinstance(record, dict) else {}


def _unlink_if_same(path: Path, opened: os.stat_result) -> None:
    """Remove ``path`` only if it is still the lock file that was opened and checked."""
    with contextlib.suppress(FileNotFoundError):
        found = os.lstat(path)
        if (found.st_dev, found.st_ino) == (opened.st_dev, opened.st_ino):
            path.unlink()


def _unlock(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _is_dead(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    same_host = holder.get("host") in (None, socket.gethostname())
    return isinstance(pid, int) and same_host and not pid_alive(pid)


def _not_a_lock_message(path: Path, kind: str) -> str:
    return (
        f"{path} is not a QSight run lock ({kind}), and QSight needs that path for the lock of "
        f"the folder it writes. It was left untouched: move or rename it, or give this run "
        "another folder (`run.output_dir` or `run.checkpoint_dir`)."
    )


def _locked_message(path: Path, holder: dict[str, Any]) -> str:
    who = (
        f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')} UTC: "
        f"`{holder.get('command')}`"
        if holder
        else "a run that is just starting"
    )
    if path.parent.name == "data" and (path.parent.parent / "conf").is_dir():
        what = (
            "Another run of this project is in progress", "Runs share data/03_primary and "
            "data/05_model_input, so a second one at the same time would overwrite its manifest "
            "and caches",
        )
    else:
        what = (
            f"Another run is writing to {path.parent}", "A second run writing to the same "
            "folder would overwrite its artifacts with its own; give this run another "
            "`run.output_dir` (or `run.checkpoint_dir`)",
        )
    return (
        f"{what[0]} ({who}). {what[1]}. Wait for it to finish, or stop it; the lock ({path}) is "
        "released when that process exits."
    )


def current_command() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"


# MLflow's local artifact store stages each upload as `.artifact.uploading.<random>` and
# reserves that prefix (an artifact may not be named so), so such a file in the artifact folder of
# a run our dead process opened is an upload that process never finished.
MLFLOW_STAGING_PREFIX = ".artifact.uploading."


def remove_mlflow_staging_files(artifact_uri: str | None) -> list[Path]:
    """Remove the unfinished uploads in a local MLflow run's artifact folder; returns them."""
    parsed = urlparse(artifact_uri or "")
    if parsed.scheme not in ("", "file"):
        return []  # a remote artifact store cleans up after itself
    folder = Path(unquote(parsed.path))
    if not folder.is_dir():
        return []
    removed = [path for path in folder.rglob(f"{MLFLOW_STAGING_PREFIX}*")
               if path.is_file() and not path.is_symlink()]
    for path in removed:
        path.unlink()
    if removed:
        logger.info("Removed %d unfinished MLflow upload(s) of a killed run in %s",
                    len(removed), folder)
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
        if pid:  # a QSight run (tagged with its pid): its interrupted artifact uploads are ours
            remove_mlflow_staging_files(run.info.artifact_uri)
    if closed:
        logger.warning(
            "Marked %d MLflow run(s) left RUNNING by a killed process as FAILED: %s",
            len(closed), ", ".join(closed),
        )
    return closed


class RunInterrupted(UserError):
    """The run was stopped by SIGTERM or SIGINT."""


class StopSignals:
    """While installed, SIGTERM and SIGINT raise :class:`RunInterrupted` in the main thread.

    Only this process reacts: a DataLoader worker forked from it gets the default action back.
    A second signal while the first is being handled is ignored, so the clean-up can finish.
    """

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._owner = os.getpid()
        self._stopping = False
        self.where = "before the first node"

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals are delivered to the main thread only; Kedro's runner is there
        self._owner = os.getpid()
        self._stopping = False
        for name in self.SIGNALS:
            number = getattr(signal, name)
            self._previous[number] = signal.signal(number, self._handle)

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: Any) -> None:
        if os.getpid() != self._owner:  # a forked worker: die as the signal says
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)
            return
        if self._stopping:
            return
        self._stopping = True
        name = signal.Signals(number).name
        raise RunInterrupted(
            f"Stopped by {name} {self.where}. Nothing of this run was committed to output_dir; "
            "the complete files of earlier runs are unchanged. With `run.checkpoint_dir` set, the "
            "same command resumes from the last complete epoch."
        )


def release_all_locks() -> None:
    """Release every run lock this process holds (a run refused after it took them)."""
    while _HELD:
        _unlock(_HELD.popitem()[1])
