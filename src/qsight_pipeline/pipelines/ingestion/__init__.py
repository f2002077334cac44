"""The ``ingestion`` pipeline: dataset root -> manifest, split, decode-once image cache."""

from qsight_pipeline.pipelines.ingestion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
