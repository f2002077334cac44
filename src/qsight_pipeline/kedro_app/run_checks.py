"""Checks that run before any node: a bad setting fails in seconds, not after an hour of training.

Registered in ``settings.py``. ``after_context_created`` validates every parameter of every block
against the typed configuration (``qsight_pipeline.config``) and parses the stage schedule, and
reports every problem in one message, and refuses output folders that are files or system folders
(:mod:`~qsight_pipeline.kedro_app.run_folders`); ``before_pipeline_run`` adds the checks that
depend on which pipelines run, the folders they read kept apart from those they write included.
Nothing heavy is imported here: torch and qiskit load only when a node needs them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from qsight_pipeline.config import QSightParameters, validate_parameters
from qsight_pipeline.errors import ConfigError, UserError
from qsight_pipeline.kedro_app import preflight, run_folders, user_errors
from qsight_pipeline.kedro_app.run_hooks import abandon_run, run_block

logger = logging.getLogger(__name__)


class QuantumUnavailableError(UserError, RuntimeError):
    """``kedro run --pipelines quantum`` was asked for, but there is no quantum head to train."""


def check_run(parameters: dict[str, Any]) -> tuple[QSightParameters, list[Any]]:
    """Every parameter and the stage schedule; all problems in one ConfigError.

    Returns:
        The typed parameters and the schedule (``training.stages.Stage`` list), resolved here
        once for the checks: :func:`check_pipelines` takes it instead of resolving it again.
    """
    # lazy: kept out of kedro start-up
    from qsight_pipeline.training.stages import ScheduleError, resolve_schedule

    problems: list[str] = []
    typed: QSightParameters | None = None
    schedule: list[Any] = []
    try:
        typed = validate_parameters(parameters)
    except ConfigError as error:
        problems.append(str(error))
    run = run_block(parameters)
    try:
        schedule = resolve_schedule(run.get("stages"), run.get("stages_config"))
    except ScheduleError as error:
        problems.append(f"stage schedule: {error}")
    if problems:
        raise ConfigError("\n".join(problems))
    assert typed is not None
    return typed, schedule


def check_parameters(parameters: dict[str, Any]) -> QSightParameters:
    """Every parameter and the stage schedule (:func:`check_run`); the typed parameters."""
    return check_run(parameters)[0]


def check_hardware_pipeline(parameters: QSightParameters, catalog: Any) -> None:
    """``quantum_hardware``: packages, device snapshots, the head's width, a real device's account."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.hardware.checks import check_hardware, head_width

    width = None
    if catalog is not None:
        try:
            width = head_width(catalog.load("quantum_head"))
        except Exception:  # noqa: BLE001 - a missing head is reported by the lineage checks
            width = None
    check_hardware(parameters.quantum_hardware, width)


def check_pipelines(
    parameters: QSightParameters, pipeline_names: list[str], catalog: Any = None,
    schedule: list[Any] | None = None,
) -> None:
    """Checks that depend on the pipelines about to run; ``schedule`` is the one
    :func:`check_run` resolved (None: resolved from ``parameters.run`` here)."""
    if "quantum_hardware" in pipeline_names:
        check_hardware_pipeline(parameters, catalog)
    if "quantum_study" in pipeline_names and parameters.quantum_study.hardware is not None:
        # lazy: kept out of kedro start-up
        from qsight_pipeline.study.noise import check_study_hardware

        check_study_hardware(parameters.quantum_study)
    if "quantum" not in pipeline_names:
        return
    # lazy: kept out of kedro start-up
    from qsight_pipeline.models.quantum import quantum_dependencies_missing
    from qsight_pipeline.training.stages import resolve_schedule, split_schedule

    quantum = parameters.quantum
    if not quantum.enabled:
        raise QuantumUnavailableError(
            "`kedro run --pipelines quantum` trains the quantum head, but quantum.enabled is false. "
            "Set quantum.enabled=true (e.g. --params quantum.enabled=true) or run another pipeline."
        )
    missing = quantum_dependencies_missing(quantum.executor, quantum.shots)
    if missing:
        raise QuantumUnavailableError(
            "`kedro run --pipelines quantum` needs " + ", ".join(missing) + ", which cannot be "
            "imported. Install it with `pip install 'qsight_pipeline[quantum]'`."
        )
    if schedule is None:
        schedule = resolve_schedule(parameters.run.stages, parameters.run.stages_config)
    if not split_schedule(schedule)["quantum"]:
        logger.warning(
            "The stage schedule has no stage that trains the quantum head; the quantum pipeline "
            "will only evaluate it."
        )


def _refuse(error: BaseException) -> None:
    # Say it plainly once more, so the reason is the last thing in the log.
    logger.error("Run refused before it started: %s", error)
    # Only the run locks are taken yet (settings.RUN_ORDER); the MLflow run opens after these checks.
    abandon_run()


_LAST_CHECKED: list[Any] = [None, None, None]  # [context, its typed parameters, its schedule]


def parameters_of(context: Any) -> QSightParameters:
    """The typed parameters of ``context``, validated once per context.

    :class:`RunChecksHook` validates them when the context is created, before the trackers'
    hooks run (``settings.RUN_ORDER``); the trackers read that result here instead of validating
    their blocks again. A context the hook did not see (a bare hook in a test) is validated now.
    """
    return _checked_run(context)[0]


def _checked_run(context: Any) -> tuple[QSightParameters, list[Any]]:
    """:func:`check_run` of ``context``'s parameters, once per context."""
    if _LAST_CHECKED[0] is not context:
        loader = getattr(context, "config_loader", None)
        raw = loader["parameters"] if loader is not None else dict(context.params)
        _LAST_CHECKED[:] = [context, *check_run(raw)]
    return _LAST_CHECKED[1], _LAST_CHECKED[2]


class RunChecksHook:
    """Validate parameters before the first node runs; bad input ends with its message alone.

    The parameters are validated once, when the context is created (so that ``kedro viz`` and
    ``kedro ipython`` refuse them too); a run of that context reuses the result.
    """

    def __init__(self) -> None:
        self._checked: tuple[QSightParameters, list[Any]] | None = None
        self._project = Path.cwd()

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        user_errors.install()
        self._checked = None
        self._project = Path(getattr(context, "project_path", None) or Path.cwd())
        try:
            self._checked = _checked_run(context)
            # Before the run locks write into them (RunLockHook, at before_pipeline_run).
            run_folders.check_output_folders(self._checked[0], self._project)
        except UserError as error:
            logger.error("Run refused before it started: %s", error)
            raise

    def _typed(self, raw: dict[str, Any]) -> tuple[QSightParameters, list[Any]]:
        """The parameters of this run, typed, and its schedule: Kedro creates the run's context
        just before the run, so they were checked then (``after_context_created``); else they
        are checked now."""
        return self._checked if self._checked is not None else check_run(raw)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        names = run_params.get("pipeline_names") or ["__default__"]
        try:
            typed, schedule = self._typed(catalog.load("parameters"))
            check_pipelines(typed, list(names), catalog, schedule)
            run_folders.check_output_folders(typed, self._project)  # a bare hook's run too
            run_folders.check_run_folders(typed, pipeline, catalog, self._project)  # kept apart
            preflight.check_run_environment(typed, list(names))  # folders writable, weights at hand
        except UserError as error:
            _refuse(error)
            raise
        except Exception as error:
            _refuse(error)
            raise ConfigError(str(error)) from error
