"""Writes a run can prove it made: journaled temporary files, atomic renames, run transactions.

Three guarantees, for every file the project writes through here (every Kedro dataset of the
project, the epoch checkpoints, the API's ``save_model``):

- **Atomic.** A file is written to a temporary sibling (``.<stem>.qsight-<8 hex>.tmp<suffix>``)
  and renamed into place, so it is either the old version or the complete new one.
- **Journaled.** Before a temporary file is created, its absolute path is appended to this
  process's journal (``$QSIGHT_STATE_DIR/journal``, by default ``~/.local/state/qsight``); when
  it is renamed or removed, that is appended too; as soon as the file exists, its identity
  (device and inode, from the exclusive create) is appended as well. A process killed in between
  leaves a journal that names exactly the temporary files it left, and :func:`recover` removes
  those and nothing else: a file QSight did not list, or one that is no longer the very file the
  journal recorded (replaced, a link), is never deleted, whatever its name. (The proof is the
  file's identity, not a content hash, because a killed write has no finished content to hash.)
- **Committed together.** Inside :func:`transaction`, the writes under the transaction's folders
  are *staged*: they stay under their temporary names (readers of the same run find them through
  :func:`readable_path`) until :meth:`Transaction.commit` renames them all into place. A run that
  fails (a full disk, a bad input, SIGTERM) rolls back and leaves the previous run's files as
  they were, never a mix. A kill during the commit is rolled forward by the next
  :func:`recover`, from the commit record written before the first rename.

A write that fails because the disk is full raises :class:`DiskFullError`, one line naming the
file, instead of the writer's own error (torch's is hundreds of lines long).

This module imports neither Kedro nor torch (but for :func:`atomic_torch_save`).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from qsight_pipeline.errors import UserError

logger = logging.getLogger(__name__)

STATE_DIR_ENV = "QSIGHT_STATE_DIR"
# `.<stem>.qsight-<8 hex>.tmp<suffix>`: the only temporary names this project creates.
TEMP_NAME = re.compile(r"^\..*\.qsight-[0-9a-f]{8}\.tmp(\.[A-Za-z0-9]+)?$")
# wandb's own run folders, recorded in the journal by the W&B hook when it starts a run.
WANDB_RUN_DIR = re.compile(r"^(offline-)?run-\d{8}_\d{6}-[a-z0-9]+$")


class DiskFullError(UserError, OSError):
    """A write failed because the disk (or the user's quota) is full."""


def state_dir() -> Path:
    base = os.environ.get(STATE_DIR_ENV)
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "qsight"


# --------------------------------------------------------------------------- the journal


class _Journal:
    """This process's append-only record of the temporary files it creates and ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid: int | None = None
        self.path: Path | None = None
        self.pending: set[str] = set()

    def _ensure_open(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            return
        # New process (first use, or a fork): a journal of its own.
        folder = state_dir() / "journal"
        folder.mkdir(parents=True, exist_ok=True)
        self._pid = os.getpid()
        self.pending = set()
        self.path = folder / f"{socket.gethostname()}-{self._pid}-{secrets.token_hex(4)}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._append({"op": "open", "pid": self._pid, "host": socket.gethostname()})

    def _append(self, record: dict[str, Any]) -> None:
        assert self._fd is not None
        # One write(2) per record on an O_APPEND descriptor: it is in the kernel once this
        # returns, so it survives SIGKILL of this process.
        os.write(self._fd, (json.dumps(record) + "\n").encode())

    def record(self, op: str, **fields: Any) -> None:
        with self._lock:
            self._ensure_open()
            self._append({"op": op, **fields})
            path = fields.get("path")
            if op in ("tmp", "dir") and path:
                self.pending.add(path)
            elif op == "end" and path:
                self.pending.discard(path)

    def close(self) -> None:
        """At exit: a journal with nothing pending is removed; otherwise :func:`recover` reads it."""
        if self._fd is None or self._pid != os.getpid():
            return
        os.close(self._fd)
        self._fd = None
        if not self.pending and self.path is not None:
            self.path.unlink(missing_ok=True)


_JOURNAL = _Journal()
atexit.register(_JOURNAL.close)


def _identity(stat_result: os.stat_result) -> list[int]:
    return [stat_result.st_dev, stat_result.st_ino]


def _record_made(tmp: Path, stat_result: os.stat_result | None = None) -> None:
    """Record the identity (device, inode) of a temporary file this process created: the proof
    :func:`recover` asks for before it removes or renames that file after a kill."""
    try:
        stat_result = stat_result or os.lstat(tmp)
    except OSError:
        return
    if stat.S_ISREG(stat_result.st_mode):
        _JOURNAL.record("made", path=str(Path(tmp).resolve()), id=_identity(stat_result))


def journal_directory(path: str | os.PathLike) -> None:
    """Record a folder another library creates for this run (wandb's run folder), so that a
    killed run's folder is removed by :func:`recover`; :func:`end_directory` when it is complete."""
    _JOURNAL.record("dir", path=str(Path(path).resolve()))
    with contextlib.suppress(OSError):
        found = os.lstat(path)
        if stat.S_ISDIR(found.st_mode):
            _JOURNAL.record("made", path=str(Path(path).resolve()), id=_identity(found))


def end_directory(path: str | os.PathLike) -> None:
    _JOURNAL.record("end", path=str(Path(path).resolve()))


# --------------------------------------------------------------------------- transactions


@dataclass
class Transaction:
    """Writes under ``folders`` are staged until :meth:`commit` (see the module docstring)."""

    folders: tuple[Path, ...]
    exclude: tuple[Path, ...] = ()
    staged: dict[Path, Path] = field(default_factory=dict)  # target -> staged temporary file
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def covers(self, target: Path) -> bool:
        return _inside(target, self.folders) and not _inside(target, self.exclude)

    def stage(self, target: Path, temporary: Path) -> None:
        previous = self.staged.pop(target, None)
        if previous is not None:  # written twice in one run: the first version is superseded
            _remove_temp(previous)
        self.staged[target] = temporary

    def commit(self) -> list[Path]:
        """Rename every staged file into place; returns the targets."""
        if not self.staged:
            for action in self.after_commit:
                action()
            self.after_commit.clear()
            return []
        pairs = [[str(tmp), str(target)] for target, tmp in self.staged.items()]
        _JOURNAL.record("commit", pairs=pairs)
        for tmp, target in pairs:
            os.replace(tmp, target)
            _JOURNAL.record("end", path=tmp)
        _JOURNAL.record("committed")
        targets = list(self.staged)
        self.staged.clear()
        for action in self.after_commit:
            action()
        self.after_commit.clear()
        return targets

    def rollback(self) -> list[Path]:
        """Remove every staged file; the targets keep their previous versions. Returns them."""
        targets = list(self.staged)
        for tmp in self.staged.values():
            _remove_temp(tmp)
        self.staged.clear()
        self.after_commit.clear()
        return targets


_ACTIVE: Transaction | None = None


def _resolved(folders: Iterable[str | os.PathLike | None]) -> tuple[Path, ...]:
    return tuple(Path(f).resolve() for f in folders if f)


def begin(
    folders: Iterable[str | os.PathLike | None], exclude: Iterable[str | os.PathLike | None] = ()
) -> Transaction:
    """Start staging the writes under ``folders`` but not under ``exclude`` (one transaction per
    process at a time)."""
    global _ACTIVE
    if _ACTIVE is not None:
        _ACTIVE.rollback()
    _ACTIVE = Transaction(_resolved(folders), _resolved(exclude))
    return _ACTIVE


def when_committed(action: Callable[[], None]) -> None:
    """Run ``action`` once this run's outputs are committed (at once when there is no
    transaction); it is dropped when the run rolls back."""
    if _ACTIVE is None:
        action()
    else:
        _ACTIVE.after_commit.append(action)


def end(commit: bool) -> list[Path]:
    """Commit (or roll back) the active transaction and stop staging; returns the targets."""
    global _ACTIVE
    active, _ACTIVE = _ACTIVE, None
    if active is None:
        return []
    return active.commit() if commit else active.rollback()


@contextlib.contextmanager
def transaction(folders: Iterable[str | os.PathLike | None]) -> Iterator[Transaction]:
    """Stage the writes under ``folders``; commit them together on success, else roll back."""
    if _ACTIVE is not None:  # inside a run's transaction already: join it
        yield _ACTIVE
        return
    active = begin(folders)
    try:
        yield active
    except BaseException:
        end(commit=False)
        raise
    end(commit=True)


def readable_path(target: str | os.PathLike) -> Path:
    """Where to read ``target`` from: this run's staged version when there is one."""
    target = Path(target)
    if _ACTIVE is not None and _ACTIVE.staged:
        staged = _ACTIVE.staged.get(target.resolve())
        if staged is not None:
            return staged
    return target


# --------------------------------------------------------------------------- writing


def temp_path(target: Path) -> Path:
    stem, suffix = (target.stem, target.suffix) if target.suffix else (target.name, "")
    return target.with_name(f".{stem}.qsight-{secrets.token_hex(4)}.tmp{suffix}")


@contextlib.contextmanager
def writing(path: str | os.PathLike, staged: bool = True) -> Iterator[Path]:
    """A journaled temporary path beside ``path`` to write to; on success it replaces ``path``
    (or is staged, inside a transaction, unless ``staged`` is false), on failure it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    _JOURNAL.record("tmp", path=str(tmp.resolve()))
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"the writer of {target} did not create {tmp}")
        _record_made(tmp)
        _place(tmp, target.resolve(), staged)
    except BaseException as error:
        _remove_temp(tmp)
        if is_disk_full(error, target.parent):
            raise DiskFullError(disk_full_message(target)) from error
        raise


def _place(tmp: Path, target: Path, staged: bool = True) -> None:
    if staged and _ACTIVE is not None and _ACTIVE.covers(target):
        _ACTIVE.stage(target, tmp.resolve())
        return
    os.replace(tmp, target)
    _JOURNAL.record("end", path=str(tmp.resolve()))


def _remove_temp(tmp: Path) -> None:
    tmp.unlink(missing_ok=True)
    _JOURNAL.record("end", path=str(Path(tmp).resolve()))


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO[bytes]], None], staged: bool = True
) -> Path:
    """Call ``write(fileobj)`` on a journaled temporary file beside ``path``, then move it into
    place (see :func:`writing`)."""
    with writing(path, staged) as tmp:
        # O_EXCL: never write through a file (or link) that someone else put at that name.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        _record_made(tmp, os.fstat(fd))  # before any byte: a kill mid-write is provably ours
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike, staged: bool = True) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    # lazy: kept out of kedro start-up
    import torch

    return atomic_write(path, lambda handle: torch.save(obj, handle), staged)


# --------------------------------------------------------------------------- proven removal


def is_plain_name(name: Any) -> bool:
    """Whether ``name`` names a file directly inside a folder: no separator, not ``.``/``..``."""
    return (isinstance(name, str) and name not in ("", ".", "..")
            and not any(c in name for c in ("/", "\\", "\0")))


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of a regular file at ``path`` (not followed if it is a link), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        digest = hashlib.sha256()
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_proven(folder: Path, recorded: dict[str, str | None]) -> list[Path]:
    """Remove each ``folder/<name>`` whose content still has the SHA-256 recorded when the
    project wrote it; every other entry (not a plain name, no hash, changed, replaced by a link
    or a folder) is left alone and logged. Returns the removed files."""
    removed, kept = [], []
    for name, digest in sorted(recorded.items()):
        path = Path(folder) / name
        if not is_plain_name(name) or not path.exists() and not path.is_symlink():
            continue
        if digest is not None and file_sha256(path) == digest:
            path.unlink()
            removed.append(path)
        else:
            kept.append(name)
    if kept:
        logger.warning(
            "Left %d file(s) in %s that an earlier save listed but that cannot be proven to be "
            "the files the project wrote (changed since, or no hash recorded): %s",
            len(kept), folder, ", ".join(kept[:5]) + (" ..." if len(kept) > 5 else ""))
    return removed


# --------------------------------------------------------------------------- full disks


_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_disk_full(error: BaseException | None, folder: Path | None = None) -> bool:
    """Whether ``error`` (or an error in its chain) is a full disk or quota."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFullError):
            return True
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            return True
        if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
            return True
        error = error.__cause__ or error.__context__
    # torch's zip writer reports "file write failed" without the errno.
    if folder is not None:
        with contextlib.suppress(OSError):
            return shutil.disk_usage(folder).free < 64 * 1024
    return False


def disk_full_message(path: Path) -> str:
    return (
        f"No space left on device while writing {path}. Free some space on that disk, or point "
        "`run.output_dir` (and `run.checkpoint_dir`) at another one, and run again. This run's unfinished "
        "files were removed; the complete files of earlier runs are unchanged."
    )


# --------------------------------------------------------------------------- recovery


@dataclass
class Recovery:
    """What :func:`recover` did: temporary files removed, staged files rolled forward."""

    removed: list[Path] = field(default_factory=list)
    rolled_forward: list[Path] = field(default_factory=list)


def _inside(path: Path, folders: Iterable[Path]) -> bool:
    resolved = Path(path).resolve()
    return any(resolved == f or resolved.is_relative_to(f) for f in folders)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_journal(path: Path) -> list[dict[str, Any]]:
    records = []
    with contextlib.suppress(OSError):
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
    return records


def _finished_by_dead_process(records: list[dict[str, Any]]) -> bool:
    head = records[0] if records else {}
    pid = head.get("pid")
    if head.get("op") != "open" or not isinstance(pid, int):
        return False
    if head.get("host") != socket.gethostname():
        return False  # a process on another machine sharing this folder: not ours to judge
    return pid != os.getpid() and not _pid_alive(pid)


def recover(folders: Iterable[str | os.PathLike | None]) -> Recovery:
    """Clean up after killed QSight processes, only inside ``folders``.

    Reads the journals of dead processes on this machine. A commit that was interrupted is
    finished (the staged files it lists are renamed into place); every other temporary file or
    run folder the journal lists as unfinished is removed, provided it still has QSight's own
    temporary name (or wandb's run-folder name) and lies inside ``folders``. Entries outside
    ``folders`` stay in the journal for a later run that covers them.
    """
    scope = tuple(Path(f).resolve() for f in folders if f and Path(f).exists())
    report = Recovery()
    folder = state_dir() / "journal"
    if not scope or not folder.is_dir():
        return report
    for journal in sorted(folder.glob("*.jsonl")):
        if journal == _JOURNAL.path:
            continue
        records = _read_journal(journal)
        if not _finished_by_dead_process(records):
            continue
        leftover = _recover_journal(records, scope, report)
        if leftover:
            _rewrite_journal(journal, records[0], leftover)
        else:
            journal.unlink(missing_ok=True)
    if report.removed:
        logger.info(
            "Removed %d unfinished file(s) that killed QSight runs left: %s",
            len(report.removed), ", ".join(str(p) for p in report.removed[:5]),
        )
    if report.rolled_forward:
        logger.warning(
            "Finished the commit of a run killed while committing: %s",
            ", ".join(str(p) for p in report.rolled_forward),
        )
    return report


def _recover_journal(
    records: list[dict[str, Any]], scope: tuple[Path, ...], report: Recovery
) -> list[dict[str, Any]]:
    pending: dict[str, dict[str, Any]] = {}
    made: dict[str, list[int]] = {}
    commit: list[list[str]] | None = None
    for record in records:
        op, path = record.get("op"), record.get("path")
        if op in ("tmp", "dir") and isinstance(path, str):
            pending[path] = record
        elif op == "made" and isinstance(path, str) and isinstance(record.get("id"), list):
            made[path] = record["id"]
        elif op == "end" and isinstance(path, str):
            pending.pop(path, None)
        elif op == "commit":
            commit = record.get("pairs") or []
        elif op == "committed":
            commit = None
    leftover: list[dict[str, Any]] = []
    for tmp, target in commit or []:
        if tmp in pending and _inside(Path(target), scope) and _is_our_temp(Path(tmp), made):
            os.replace(tmp, target)
            pending.pop(tmp)
            report.rolled_forward.append(Path(target))
    for path, record in pending.items():
        candidate = Path(path)
        if not _inside(candidate, scope):
            if candidate.exists():
                leftover.append(record)
                if path in made:
                    leftover.append({"op": "made", "path": path, "id": made[path]})
            continue
        if record["op"] == "tmp" and _is_our_temp(candidate, made):
            candidate.unlink()
            report.removed.append(candidate)
        elif record["op"] == "dir" and candidate.is_dir() and not candidate.is_symlink() \
                and WANDB_RUN_DIR.match(candidate.name) \
                and made.get(path) == _identity(os.lstat(candidate)):
            shutil.rmtree(candidate)
            report.removed.append(candidate)
    return leftover


def _is_our_temp(path: Path, made: dict[str, list[int]]) -> bool:
    """A temporary file the dead process provably created: its name is QSight's temporary name
    and it is still the very file (device, inode) the journal recorded at its creation. A file
    put at that name later, or a link, is not."""
    if not TEMP_NAME.match(path.name):
        return False
    try:
        found = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(found.st_mode) and made.get(str(path)) == _identity(found)


def _rewrite_journal(journal: Path, head: dict[str, Any], leftover: list[dict[str, Any]]) -> None:
    lines = [json.dumps(head), *(json.dumps(r) for r in leftover)]
    replacement = journal.with_name(journal.name + ".new")
    replacement.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(replacement, journal)
