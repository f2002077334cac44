"""The run-wide settings of one ``kedro run``, resolved once by the ``resolve_run_settings`` node.

Blocks (``model``, ``quantum``, ...) reach nodes directly as typed ``params:<block>`` inputs. The
top-level keys of ``parameters.yml`` (the old CLI's flags) and the stage schedule are gathered
here into one :class:`RunConfig`, which every training node takes: the schedule is parsed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kedro.pipeline import Node

from qsight_pipeline.config import DistributedParams, RunSettings, validate_block
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
        from qsight_pipeline.training.trainer import TrainerSettings

        return TrainerSettings.from_run(self.settings)


def resolve_run_settings(distributed: DistributedParams, **settings: Any) -> RunConfig:
    """Validate the run-wide parameters and parse the stage schedule, once per run.

    Args:
        distributed: the ``distributed`` block.
        settings: the top-level keys of ``parameters.yml`` (``seed``, ``batch_size``, ``stages``..).

    Returns:
        ``run_config``: the typed settings and the schedule split into its three pipelines.
    """
    run = validate_block(RunSettings, settings, "")
    return RunConfig(
        run, split_schedule(resolve_schedule(run.stages, run.stages_config)), distributed
    )


def run_settings_node() -> Node:
    """The node that every training pipeline starts from (Kedro runs it once when they combine)."""
    return Node(
        func=resolve_run_settings,
        inputs={
            "distributed": "params:distributed",
            **{name: f"params:{name}" for name in RunSettings.model_fields},
        },
        outputs="run_config",
        name="resolve_run_settings",
    )
