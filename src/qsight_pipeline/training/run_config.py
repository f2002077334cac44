"""The run-wide settings of one run: the ``run`` block, the stage schedule it names and the
``distributed`` block, as one :class:`RunConfig`, which every training node takes.

The Kedro layer builds it once per run (``kedro_app.run_config.resolve_run_settings``, the
``resolve_run_settings`` node); it lives here, beside the trainer settings it hands out, so that the
nodes and the core use the type without importing the Kedro layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qsight_pipeline.config import DistributedParams, RunSettings
from qsight_pipeline.training.stages import Stage


@dataclass(frozen=True)
class RunConfig:
    """The validated run-wide settings and the schedule, split by the pipeline that runs it."""

    settings: RunSettings
    schedule: dict[str, list[Stage]]
    # How the run is spread over processes and machines (the ``distributed`` block).
    distributed: DistributedParams = DistributedParams()  # noqa: RUF009 - a frozen block

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    @property
    def seed(self) -> int:
        return self.settings.seed

    def trainer_settings(self) -> Any:
        # lazy: kept out of kedro start-up
        from qsight_pipeline.training.trainer import TrainerSettings

        return TrainerSettings.from_run(self.settings)
