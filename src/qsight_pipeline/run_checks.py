"""Checks that run before any node: a bad setting fails in seconds, not after an hour of training.

Registered in ``settings.py``. Every message names the parameter to change.
"""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from qsight_pipeline import preflight, run_config, user_errors
from qsight_pipeline.errors import UserError
from qsight_pipeline.hooks import close_mlflow_run_as_failed
from qsight_pipeline.models.quantum import QuantumConfig, quantum_dependencies_missing
from qsight_pipeline.user_errors import ParameterError

logger = logging.getLogger(__name__)


class QuantumUnavailableError(RuntimeError):
    """``kedro run --pipeline quantum`` was asked for, but there is no quantum head to train."""


def check_parameters(parameters: dict[str, Any], pipeline_names: list[str]) -> None:
    """Validate the schedule, the model and the quantum settings for the pipelines about to run."""
    stages = run_config.schedule(parameters)
    run_config.model_config(parameters)
    run_config.trainer_settings(parameters)
    run_config.batch_size(parameters)
    quantum = QuantumConfig.from_params(parameters.get("quantum") or {})
    preflight.check_run_environment(parameters, pipeline_names)  # folders and weights

    if "quantum" not in pipeline_names:
        return
    if not quantum.enabled:
        raise QuantumUnavailableError(
            "`kedro run --pipeline quantum` trains the quantum head, but quantum.enabled is false. "
            "Set quantum.enabled=true (e.g. --params quantum.enabled=true) or run another pipeline."
        )
    missing = quantum_dependencies_missing(quantum.executor, quantum.shots)
    if missing:
        raise QuantumUnavailableError(
            "`kedro run --pipeline quantum` needs " + ", ".join(missing) + ", which cannot be "
            "imported. Install it with `pip install 'qsight_pipeline[quantum]'`."
        )
    if not stages["quantum"]:
        logger.warning(
            "The stage schedule has no stage that trains the quantum head; the quantum pipeline "
            "will only evaluate it."
        )


class RunChecksHook:
    """Validate parameters before the first node runs; bad input ends with its message alone."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        user_errors.install()

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        parameters = catalog.load("parameters")
        names = run_params.get("pipeline_names") or ["__default__"]
        try:
            check_parameters(parameters, list(names))
        except Exception as error:
            # Say it plainly once more, so the reason is the last thing in the log.
            logger.error("Run refused before it started: %s", error)
            # Kedro does not call on_pipeline_error for a failure here, so close the MLflow run
            # that kedro-mlflow may already have opened instead of leaving it RUNNING.
            close_mlflow_run_as_failed()
            if isinstance(error, QuantumUnavailableError | ParameterError | UserError):
                raise
            raise ParameterError(str(error)) from error
