"""The MLflow run of a ``kedro run``: where it goes (``conf/<env>/mlflow.yml``), opening it with
the run's parameters, and closing it FINISHED or FAILED.

The project opens its own run (:class:`~qsight_pipeline.kedro_app.hooks.MlflowTrackingHook`) rather than
through the kedro-mlflow plugin, whose command-line plugin imported mlflow for every ``kedro``
command, ``kedro --help`` included, and whose hook built every dataset of the catalog at start.
Imports nothing heavy: mlflow is imported when a run opens, and looked up in ``sys.modules``
otherwise, so a run with ``tracking.mlflow.enabled: false`` never pays for it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.config import MissingConfigException
from pydantic import ValidationError

from qsight_pipeline.config.base import format_validation_error
from qsight_pipeline.config.mlflow import MlflowConfig
from qsight_pipeline.errors import ConfigError
from qsight_pipeline.files.plain import to_plain

logger = logging.getLogger(__name__)

MLFLOW_CONFIG_FILE = "conf/base/mlflow.yml"
# MLflow refuses parameter values over 6,000 characters; such a value is logged as a tag.
PARAM_VALUE_LIMIT = 6000
PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch call

# The run start_run opened, until it ends: only that one is ever ended here, never a run the
# caller opened around a session (a notebook's ``with mlflow.start_run():``).
_opened_run_id: str | None = None


def load_mlflow_config(raw: Mapping[str, Any] | None) -> MlflowConfig:
    """Validate ``mlflow.yml`` (``None`` or empty: the defaults), naming the file and every key."""
    try:
        return MlflowConfig.model_validate(dict(raw or {}))
    except ValidationError as error:
        lines = "\n".join(f"  {line}" for line in format_validation_error(error))
        raise ConfigError(
            f"{MLFLOW_CONFIG_FILE} (or its copy in your --env) is invalid:\n{lines}"
        ) from None


def resolve_tracking_uri(uri: str, project: Path) -> str:
    """A relative ``sqlite:///`` database is placed at the project root, wherever kedro runs."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not Path(uri[len(prefix):]).is_absolute():
        return prefix + str((project / uri[len(prefix):]).resolve())
    return uri


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model": {"encoder_name": "x"}}`` -> ``{"model.encoder_name": "x"}``, values as text.

    Blocks that Kedro has typed (``ModelParams``, ``RunSettings``, ...) are flattened like the
    mappings they were written as, not logged as one ``repr`` string.
    """
    flat: dict[str, str] = {}
    for key, value in to_plain(dict(params)).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def start_run(config: MlflowConfig, project: Path, run_name: str, params: Mapping[str, Any]) -> str:
    """Open the run (creating or restoring the experiment), log ``params``; returns its id."""
    # lazy: kept out of kedro start-up
    import mlflow
    from mlflow.entities import Param, RunTag

    mlflow.set_tracking_uri(resolve_tracking_uri(config.tracking_uri, project))
    # The hook logs what it means to; MLflow's autologging patches (torch, sklearn, ...) left
    # active made each demo classical epoch ~30 % slower (1.5 -> 2.0 s) while a run was open.
    mlflow.autolog(disable=True)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is None:
        location = config.artifact_location
        if location and "://" not in location and not Path(location).is_absolute():
            location = (project / location).resolve().as_uri()
        experiment_id = client.create_experiment(config.experiment, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
    global _opened_run_id
    run = mlflow.start_run(experiment_id=experiment_id, run_name=config.run_name or run_name)
    _opened_run_id = run.info.run_id
    flat = flatten_params(params)
    values = [Param(k, v) for k, v in flat.items() if len(v) <= PARAM_VALUE_LIMIT]
    tags = [RunTag(k, v) for k, v in flat.items() if len(v) > PARAM_VALUE_LIMIT]
    for start in range(0, max(len(values), 1), PARAMS_PER_BATCH):
        client.log_batch(run.info.run_id, params=values[start:start + PARAMS_PER_BATCH],
                         tags=tags if start == 0 else [])  # fmt: skip
    logger.info("MLflow run %r (%s) started in %s", run.info.run_name, run.info.run_id,
                mlflow.get_tracking_uri())  # fmt: skip
    return run.info.run_id


def active_run_id() -> str | None:
    """The id of the active MLflow run of this thread, if mlflow is loaded and one is open."""
    mlflow = sys.modules.get("mlflow")
    run = mlflow.active_run() if mlflow is not None else None
    return run.info.run_id if run is not None else None


def end_run(status: str) -> None:
    """End the run :func:`start_run` opened, if it is still active, with ``status`` (FINISHED,
    FAILED or KILLED). A run opened by anybody else is left alone."""
    global _opened_run_id
    if _opened_run_id is not None and active_run_id() == _opened_run_id:
        sys.modules["mlflow"].end_run(status=status)
    _opened_run_id = None


def close_mlflow_run_as_failed() -> None:
    """End the run :func:`start_run` opened as FAILED when a later hook stops the run in
    ``before_pipeline_run`` (W&B that cannot start): Kedro calls ``on_pipeline_error`` only for
    errors raised after ``before_pipeline_run``, so it would stay RUNNING in MLflow for ever.
    """
    end_run("FAILED")


def project_root(context: Any) -> Path:
    return Path(getattr(context, "project_path", None) or os.getcwd())


def tracking_of(context: Any) -> tuple[str, str]:
    """The tracking URI and experiment ``kedro run`` records this context's runs in
    (``conf/<env>/mlflow.yml``, its defaults where absent), whatever ``MLFLOW_TRACKING_URI`` the
    shell has: a notebook reads the project's runs with them."""
    try:
        raw = context.config_loader["mlflow"]
    except MissingConfigException:
        raw = {}
    config = load_mlflow_config(raw)
    return resolve_tracking_uri(config.tracking_uri, project_root(context)), config.experiment
