"""``conf/<env>/mlflow.yml``: where MLflow records the runs (not a parameter block: its own file).

Its defaults live here, with the parameter blocks; ``kedro_app.mlflow_runs`` validates the file
against it and opens the run.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MlflowConfig(BaseModel):
    """``conf/<env>/mlflow.yml``: where the runs of this project are recorded."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    tracking_uri: str = Field(
        "sqlite:///mlflow.db",
        description="an MLflow tracking URI; a relative sqlite:/// path is taken from the project root",
    )
    experiment: str = Field("qsight", min_length=1)
    artifact_location: str | None = Field(
        "mlruns", description="where a new experiment keeps its artifacts; relative = project root"
    )
    run_name: str | None = Field(None, description="null = the names of the pipelines run")
