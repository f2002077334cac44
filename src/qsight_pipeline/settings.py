"""Kedro project settings."""

from qsight_pipeline.kedro_app.config_loader import QSightConfigLoader
from qsight_pipeline.kedro_app.console_logging import finish_console_handler
from qsight_pipeline.kedro_app.hooks import MlflowTrackingHook, WandbHook
from qsight_pipeline.kedro_app.run_checks import RunChecksHook
from qsight_pipeline.kedro_app.run_hooks import (
    LeftoverCleanupHook,
    LineageCheckHook,
    OutputTransactionHook,
    RunLockHook,
    StopSignalsHook,
    ThreadPolicyHook,
)

# conf/logging.yml's one-line console handler: Kedro's rich one on a terminal. Kedro imports this
# module before it starts a session, so the project's first record already shows the right way.
finish_console_handler()

# The hooks in the order they run at every hook point; tests/test_hook_order.py checks that
# Kedro calls them so. The run lock releases last of all (``trylast``), after the commit.
RUN_ORDER = (
    ThreadPolicyHook(),  # the CPU thread policy, before anything can start torch
    RunLockHook(),  # one run at a time per project, output_dir and checkpoint_dir, first of all
    RunChecksHook(),  # parameters, pipelines, writable folders; refuses before anything is written
    LeftoverCleanupHook(),  # what killed runs left unfinished, under the locks
    LineageCheckHook(),  # artifacts read from disk belong together
    OutputTransactionHook(),  # outputs staged, then committed together or rolled back
    StopSignalsHook(),  # SIGTERM / SIGINT end the run like a failure
    MlflowTrackingHook(),  # opens the MLflow run once the run is safe to start
    WandbHook(),  # off unless tracking.wandb.enabled; closes the MLflow run if it cannot start
)
# Kedro's plugin manager (pluggy) calls the hook registered last first.
HOOKS = tuple(reversed(RUN_ORDER))

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
