"""QSight: a Kedro pipeline that trains a hybrid classical + quantum diabetic-retinopathy grader.

The old system's Python API is importable from here::

    from qsight_pipeline import (
        DatasetConfig, TrainingConfig, default_stage_schedule, create_dataloaders,
        train_hybrid_model, evaluate_hybrid_model, save_model,
    )

and grading new photographs with a trained model::

    from qsight_pipeline import load_model, predict_image, predict_images
"""

from __future__ import annotations

from qsight_pipeline.lazy_exports import lazy_getattr

__version__ = "0.1.0"

_API = {
    "DatasetConfig": "qsight_pipeline.inference.api",
    "TrainingConfig": "qsight_pipeline.inference.api",
    "create_dataloaders": "qsight_pipeline.inference.api",
    "train_hybrid_model": "qsight_pipeline.inference.api",
    "evaluate_hybrid_model": "qsight_pipeline.inference.api",
    "save_model": "qsight_pipeline.inference.api",
    "default_stage_schedule": "qsight_pipeline.training.stages",
    "load_model": "qsight_pipeline.inference",
    "predict_image": "qsight_pipeline.inference",
    "predict_images": "qsight_pipeline.inference",
}
__all__ = sorted(_API)


# Imported on first use: `kedro` commands import this package and need not load torch.
__getattr__ = lazy_getattr(__name__, _API)
