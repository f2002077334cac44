"""Kedro project settings."""

from qsight_pipeline.kedro_app.config_loader import QSightConfigLoader
from qsight_pipeline.kedro_app.hooks import MlflowTrackingHook, WandbHook
from qsight_pipeline.kedro_app.run_checks import RunChecksHook
from qsight_pipeline.kedro_app.run_guard import RunGuardHook

# Hooks run last-in-first-out. RunChecksHook validates every parameter before any node runs.
# The W&B hook imports wandb lazily and does nothing unless ``tracking.wandb.enabled`` is true.
# MlflowTrackingHook opens one MLflow run per `kedro run` (conf/<env>/mlflow.yml), logs the
# parameters, epoch metrics and the report's artifacts, and closes it FINISHED or FAILED.
# RunGuardHook comes last so that it runs first: it refuses a second concurrent run of the project
# before anything else happens, then removes what killed runs left behind.
HOOKS = (WandbHook(), MlflowTrackingHook(), RunChecksHook(), RunGuardHook())

# Kedro's OmegaConfigLoader, whose --params may index into a list: stages.0.learning_rate=1e-3.
CONFIG_LOADER_CLASS = QSightConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Soft merge: conf/local/parameters.yml may set `quantum: {n_qubits: 6}` alone and keep the
    # other quantum settings from conf/base.
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "catalog": ["catalog*", "catalog*/**", "**/catalog*"],
        "mlflow": ["mlflow*", "mlflow*/**"],
    },
}
