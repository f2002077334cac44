"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from qsight_pipeline.hooks import WandbHook

# Hooks run last-in-first-out. The W&B hook imports wandb lazily and does nothing unless
# ``tracking.wandb.enabled`` is true. kedro-mlflow registers its own hook through its entry point.
HOOKS = (WandbHook(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "catalog": ["catalog*", "catalog*/**", "**/catalog*"],
    },
}
