"""Wiring of the ``ingestion`` pipeline."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from qsight_pipeline.pipelines.ingestion.nodes import (
    build_image_caches_caches_first,
    image_preprocessing,
    scan_dataset,
    split_by_patient,
    summarise_ingestion,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=scan_dataset,
                inputs=["params:dataset", "params:ingestion"],
                outputs=["labelled_images", "layout_findings"],
                name="scan_dataset",
                namespace="ingestion",
            ),
            Node(
                func=split_by_patient,
                inputs=["labelled_images", "params:ingestion", "params:run.seed"],
                outputs="split_images",
                name="split_by_patient",
                namespace="ingestion",
            ),
            Node(
                func=image_preprocessing,
                inputs=["params:model", "params:run.image_size"],
                outputs="image_preprocessing",
                name="image_preprocessing",
                namespace="ingestion",
            ),
            Node(
                func=build_image_caches_caches_first,
                inputs=["split_images", "image_preprocessing", "params:ingestion"],
                outputs=[
                    "image_cache_train",
                    "image_cache_val",
                    "image_cache_test",
                    "manifest",
                    "unreadable_images",
                ],
                name="build_image_caches",
                namespace="ingestion",
            ),
            Node(
                func=summarise_ingestion,
                inputs=[
                    "manifest",
                    "layout_findings",
                    "unreadable_images",
                    "params:ingestion",
                    "image_preprocessing",
                    "params:run.seed",
                ],
                outputs="ingestion_report",
                name="summarise_ingestion",
                namespace="ingestion",
            ),
        ]
    )
