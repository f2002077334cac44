"""Nodes of the ``ingestion`` pipeline: the functions of :mod:`qsight_pipeline.data.ingest`, and
:func:`image_preprocessing`, the model's pixel path (``models.hybrid.model_preprocessing``) that
the image cache follows.

The work lives in the core package, so that the Python API ingests a data set with the same code
without importing a node module.
"""

from typing import Any

from qsight_pipeline.config import ModelParams
from qsight_pipeline.data.ingest import (
    MANIFEST_COLUMNS,
    build_image_caches,
    build_image_caches_caches_first,
    scan_dataset,
    split_by_patient,
    summarise_ingestion,
)

__all__ = [
    "MANIFEST_COLUMNS",
    "build_image_caches",
    "build_image_caches_caches_first",
    "image_preprocessing",
    "scan_dataset",
    "split_by_patient",
    "summarise_ingestion",
]


def image_preprocessing(model: ModelParams, image_size: int | None) -> dict[str, Any]:
    """``image_preprocessing``: the model's pixel path (its encoder's preprocessing, with
    ``model.preprocessing`` and ``run.image_size``), which the image cache's pictures follow.
    The classical pipeline resolves the same from the same parameters and checks the caches."""
    # lazy: kept out of kedro start-up (timm and torch)
    from qsight_pipeline.models.hybrid import model_preprocessing

    return model_preprocessing(model, image_size).to_dict()
