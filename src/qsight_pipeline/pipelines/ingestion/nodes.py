"""Nodes of the ``ingestion`` pipeline: the functions of :mod:`qsight_pipeline.data.ingest`.

The work lives in the core package, so that the Python API ingests a data set with the same code
without importing a node module.
"""

from qsight_pipeline.data.ingest import (
    MANIFEST_COLUMNS,
    build_image_caches,
    build_image_caches_caches_first,
    image_preprocessing,
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
