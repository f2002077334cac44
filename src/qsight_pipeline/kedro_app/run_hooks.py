"""The hooks that guard a run, one job each, in the order they run (``settings.HOOKS``).

At ``before_pipeline_run``:

1. :class:`RunLockHook` takes the locks of the project's data folder, ``output_dir`` and
   ``checkpoint_dir``, or refuses the run, naming the run that holds them; then the run checks
   (:mod:`qsight_pipeline.kedro_app.run_checks`) look at the parameters, the pipelines and the
   folders;
2. :class:`LeftoverCleanupHook` removes the unfinished temporary files that killed runs listed in
   their journals, and nothing else;
3. :class:`LineageCheckHook` refuses artifacts on disk that do not belong together;
4. :class:`OutputTransactionHook` starts staging this run's outputs;
5. :class:`StopSignalsHook` turns SIGTERM and SIGINT into a clean stop.

At ``after_pipeline_run`` the transaction commits, and at ``on_pipeline_error`` it rolls back; the
locks are released after every other hook (``trylast``), so nothing is written unlocked. A hook
that refuses the run after the locks are taken calls :func:`abandon_run`, since Kedro calls no
other hook when ``before_pipeline_run`` raises. ``tests/test_hook_order.py`` checks the order.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from qsight_pipeline.config import ParamsBlock
from qsight_pipeline.files import storage
from qsight_pipeline.kedro_app.run_guard import (
    LockPathError,
    RunLock,
    RunLockedError,
    StopSignals,
    current_command,
    release_all_locks,
)

logger = logging.getLogger(__name__)

# The one signal handler of this process (installed for the length of a run).
_SIGNALS = StopSignals()


def abandon_run() -> None:
    """Undo what the guard hooks did for a run refused before its first node: the staged outputs
    are dropped, the signal handlers restored and the locks released."""
    storage.end(commit=False)
    _SIGNALS.uninstall()
    release_all_locks()


def run_block(parameters: Any) -> dict[str, Any]:
    """The ``run`` block of ``parameters`` as a dict, whether Kedro has typed it for this run's
    nodes or not; ``{}`` when it is missing or malformed (the run checks report that)."""
    run = parameters.get("run")
    if isinstance(run, ParamsBlock):
        return run.model_dump()
    return run if isinstance(run, dict) else {}


def catalog_parameters(catalog: Any) -> dict[str, Any]:
    """The run's ``parameters`` (``{}`` when the catalog has none), read from their dataset
    without ``catalog.load``'s "Loading data from parameters" log line: the hooks read them
    several times before the first node, and a log is no place for the same line five times."""
    return catalog["parameters"].load() if "parameters" in catalog else {}


def _run_block(catalog: Any) -> dict[str, Any]:
    """The ``run`` block as written (the locks are taken before the run checks validate it)."""
    return run_block(catalog_parameters(catalog))


def _folder(project: Path, run: dict[str, Any], key: str) -> Path | None:
    value = run.get(key)
    if not value:
        return None
    folder = Path(str(value)).expanduser()
    return folder if folder.is_absolute() else project / folder


def _run_folders(project: Path, run: dict[str, Any]) -> tuple[Path | None, Path | None]:
    """``(output_dir, checkpoint_dir)`` of a run, absolute."""
    return _folder(project, run, "output_dir"), _folder(project, run, "checkpoint_dir")


class _ProjectHook:
    """Remembers the project folder (a session may run outside the current directory)."""

    def __init__(self) -> None:
        self._project = Path.cwd()

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._project = Path(context.project_path)


class ThreadPolicyHook:
    """Chooses how the CPU thread pool waits, before torch starts its threads (threads.py)."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        # lazy: kept out of kedro start-up
        from qsight_pipeline import threads

        threads.configure()


class RunLockHook(_ProjectHook):
    """One run at a time per project, ``output_dir`` and ``checkpoint_dir`` (run_guard.RunLock)."""

    def __init__(self) -> None:
        super().__init__()
        self._locks: list[RunLock] = []

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        output_dir, checkpoint_dir = _run_folders(self._project, _run_block(catalog))
        seen: set[Path] = set()
        command = current_command()
        for folder in (self._project / "data", output_dir, checkpoint_dir):
            if folder is None or folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            lock = RunLock(folder)
            try:
                lock.acquire(command)
            except (RunLockedError, LockPathError) as error:
                logger.error("Run refused: %s", error)
                self._release()
                raise
            self._locks.append(lock)

    @hook_impl(trylast=True)
    def after_pipeline_run(self) -> None:
        self._release()

    @hook_impl(trylast=True)
    def on_pipeline_error(self, error: Exception) -> None:
        self._release()

    def _release(self) -> None:
        while self._locks:
            self._locks.pop().release()


class LeftoverCleanupHook(_ProjectHook):
    """Removes what killed runs left unfinished, under the locks (storage.recover)."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        output_dir, checkpoint_dir = _run_folders(self._project, _run_block(catalog))
        # Stale MLflow runs are closed by the MLflow hook once it has opened this run's.
        storage.recover([self._project / "data", output_dir, checkpoint_dir,
                         self._project / "wandb"])


class LineageCheckHook:
    """Refuses a run whose artifacts on disk do not belong together (files/lineage.py)."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        # lazy: kept out of kedro start-up
        from qsight_pipeline.files import lineage

        cache: dict[str, Any] = {}  # the feature cache is read once for two pairs

        def load(name: str) -> Any:
            if name not in cache:
                cache[name] = catalog.load(name)
            return cache[name]

        try:
            lineage.check_pipeline_inputs(
                pipeline.inputs(), load, _run_block(catalog).get("output_dir")
            )
        except Exception as error:  # unreadable, unsafe or mismatched: no node may start
            logger.error("Run refused: %s", error)
            abandon_run()
            raise


class OutputTransactionHook(_ProjectHook):
    """Stages this run's outputs; commits them together at the end, or rolls them back."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        output_dir, checkpoint_dir = _run_folders(self._project, _run_block(catalog))
        storage.begin(
            [output_dir, self._project / "data" / "07_model_output",
             self._project / "data" / "08_reporting"],
            exclude=[checkpoint_dir],
        )

    @hook_impl
    def after_pipeline_run(self) -> None:
        try:
            committed = storage.end(commit=True)
        except BaseException:  # e.g. a full disk: Kedro calls no later hook, so clean up here
            abandon_run()  # the transaction has ended already; this restores signals and locks
            raise
        if committed:
            logger.info("Committed %d output file(s) of this run", len(committed))

    @hook_impl
    def on_pipeline_error(self, error: Exception) -> None:
        discarded = storage.end(commit=False)
        if discarded:
            logger.warning(
                "The run failed: %d output file(s) it had written were discarded, and the "
                "previous versions kept: %s", len(discarded),
                ", ".join(str(p) for p in discarded[:5]),
            )


class StopSignalsHook:
    """SIGTERM and SIGINT end the run like a failure, naming the node they stopped."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        _SIGNALS.where = "before the first node"
        _SIGNALS.install()

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        _SIGNALS.where = f"in node `{getattr(node, 'name', node)}`"

    @hook_impl
    def after_pipeline_run(self) -> None:
        _SIGNALS.uninstall()

    @hook_impl
    def on_pipeline_error(self, error: Exception) -> None:
        _SIGNALS.uninstall()
