"""The run-wide settings of one ``kedro run``, resolved once by the ``resolve_run_settings`` node.

Blocks (``model``, ``quantum``, ...) reach nodes directly as typed ``params:<block>`` inputs. The
``run`` block (the old CLI's flags), the stage schedule it names and the ``distributed`` block are
gathered here into one ``RunConfig`` (``training.run_config``), which every training node takes:
the schedule is parsed once. Kedro validates both blocks against their models before the node runs.
"""

from __future__ import annotations

from kedro.pipeline import Node

from qsight_pipeline.config import DistributedParams, RunSettings
from qsight_pipeline.training.run_config import RunConfig
from qsight_pipeline.training.stages import resolve_schedule, split_schedule


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
