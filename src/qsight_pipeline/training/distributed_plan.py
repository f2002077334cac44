"""The DDP worker plan of a run from its ``distributed`` block and its device settings."""

from __future__ import annotations

from typing import Any

from qsight_pipeline.config import DistributedParams


def worker_plan(distributed: DistributedParams | None, settings: Any) -> Any:
    """The DDP plan of the ``distributed`` block and the guide's ``multi_gpu``/``device_ids``."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.training.distributed import plan_workers  # torch.distributed: on use

    params = distributed or DistributedParams()
    multi_gpu = settings.multi_gpu and not params.data_parallel
    return plan_workers(params, settings.device, multi_gpu, settings.device_ids)
