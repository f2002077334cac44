"""Helpers for the MLflow run that kedro-mlflow opens, shared by the run checks and the hooks.

Imports nothing heavy: mlflow is looked up in ``sys.modules`` only, so a run without MLflow never
pays for importing it.
"""

from __future__ import annotations

import sys


def close_mlflow_run_as_failed() -> None:
    """End the MLflow run kedro-mlflow opened, as FAILED, when a run stops in before_pipeline_run.

    Kedro calls ``on_pipeline_error`` only for errors raised after ``before_pipeline_run``, so
    without this a run refused at start would stay RUNNING in MLflow for ever.
    """
    mlflow = sys.modules.get("mlflow")  # only if something already imported it
    if mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run(status="FAILED")
