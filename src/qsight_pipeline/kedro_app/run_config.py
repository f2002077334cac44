"""The run-wide settings of one ``kedro run``, resolved once by the ``resolve_run_settings`` node.

Blocks (``model``, ``quantum``, ...) reach nodes directly as typed ``params:<block>`` inputs. The
``run`` block (the old CLI's flags), the stage schedule it names and the ``distributed`` block are
gathered here into one :class:`RunConfig`, which every training node takes: the schedule is
parsed once. Kedro validates both blocks against their models before the node runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kedro.pipeline import Node

from qsight_pipeline.config import DistributedParams, RunSettings
from qsight_pipeline.training.stages import Stage, resolve_schedule, split_schedule


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


def resolve_run_settings(run: RunSettings, distributed: DistributedParams) -> RunConfig:
    """Parse the stage schedule, once per run.

    Args:
        run: the ``run`` block (``seed``, ``batch_size``, ``stages``, ...).
        distributed: the ``distributed`` block.

    Returns:
        ``run_config``: the typed settings and the schedule split into its three pipelines.
    """
    return RunConfig(
        run, split_schedule(resolve_schedule(run.stages, run.stages_config)), distributed
    )


def run_settings_node() -> Node:
    """The node that every training pipeline starts from (Kedro runs it once when they combine)."""
    return Node(
        func=resolve_run_settings,
        inputs={"run": "params:run", "distributed": "params:distributed"},
        outputs="run_config",
        name="resolve_run_settings",
    )
