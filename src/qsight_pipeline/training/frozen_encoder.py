"""A frozen encoder runs once per picture: when it is frozen, and training from its embeddings.

The encoder is frozen when ``model.freeze_encoder`` is true, or when no image stage lists
``encoder`` in ``trainable``. Such a run embeds each picture of the image cache once
(:func:`embed_image_caches`, into ``training.embedding_cache`` tables) and trains the compression
module and the heads from the rows (:func:`train_on_embeddings`); ``model.freeze_encoder`` takes
``encoder`` out of every stage that lists it (the guide's ``classical`` stage does, by name).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from qsight_pipeline.constants import ENCODER
from qsight_pipeline.data.loaders import class_counts, loader_options, make_loader
from qsight_pipeline.data.torch_data import CachedImageDataset
from qsight_pipeline.errors import ArtifactError
from qsight_pipeline.files import lineage
from qsight_pipeline.models.hybrid import HybridModel, build_model
from qsight_pipeline.training import embedding_cache
from qsight_pipeline.training.devices import resolve_device
from qsight_pipeline.training.stages import ScheduleError, Stage, parse_stages
from qsight_pipeline.training.trainer import TrainerSettings, seed_everything, train_stages

logger = logging.getLogger(__name__)

EMBEDDED_ONLY = (
    "Augmentation is off for this run: the frozen encoder's embedding table holds one view of "
    "each picture, without augmentation (augmentation.* is not applied; docs/your-own-data.md, 'A frozen "
    "encoder runs once per image')"
)


def encoder_frozen(freeze_encoder: bool, image_stages: Sequence[Stage]) -> bool:
    """True when the schedule has image stages and none of them trains the encoder."""
    if not image_stages:
        return False
    return freeze_encoder or not any(ENCODER in stage.trainable for stage in image_stages)


def without_encoder(stages: Sequence[Stage]) -> list[Stage]:
    """``stages`` with ``encoder`` taken out of ``trainable`` (``model.freeze_encoder``).

    Raises:
        ScheduleError: a stage that trains the encoder alone, which would have nothing to train.
    """
    changed = [stage.name for stage in stages if ENCODER in stage.trainable]
    alone = [stage.name for stage in stages if stage.trainable == (ENCODER,)]
    if alone:
        raise ScheduleError(
            f"stage(s) {', '.join(alone)} train only the encoder, which `model.freeze_encoder: "
            "true` keeps frozen; remove those stages or set `model.freeze_encoder: false`"
        )
    if changed:
        logger.info(
            "model.freeze_encoder: the encoder is kept frozen in stage(s) %s", ", ".join(changed)
        )
    return parse_stages([
        {**stage.to_dict(), "trainable": [p for p in stage.trainable if p != ENCODER]}
        for stage in stages
    ])


def caches_ingestion(caches: Mapping[str, np.ndarray]) -> str:
    """The one ingestion id the image caches' lineage records name (an error otherwise)."""
    found = {split: (lineage.of(cache) or {}).get("ingestion_id") for split, cache in caches.items()}
    if None in found.values() or len(set(found.values())) != 1:
        raise lineage.LineageError(
            f"The image caches do not come from one ingestion ({found}). Rebuild them with "
            "`kedro run --pipelines ingestion`."
        )
    return next(iter(found.values()))


def embed_image_caches(
    caches: Mapping[str, np.ndarray], model_config: Any, settings: TrainerSettings
) -> dict[str, np.ndarray]:
    """Each split's pictures through the frozen encoder once: ``{split: embedding table}``.

    The encoder is built as the training node builds it (same seed, same config), and each table
    carries the record (ingestion, ``encoder_id``) that the readers check against their model.
    """
    ingestion = caches_ingestion(caches)
    seed_everything(settings.seed)
    model = build_model(model_config)
    record = {
        "ingestion_id": ingestion,
        "encoder_id": embedding_cache.encoder_id(model.encoder, ingestion, model_config.preprocessing),
        "encoder_name": model.encoder_name,
    }
    started = time.perf_counter()
    tables = {
        split: embedding_cache.tagged(embedding_cache.embed(
            model.encoder, _picture_loader(images, model_config.preprocessing, settings),
            settings.device, f"embed {split}",
        ), record, split)
        for split, images in caches.items()
    }
    logger.info(
        "Frozen encoder %s: each of the %d pictures embedded once in %.1f s (%s), into "
        "data/05_model_input/embedding_cache_<split>.npy; the rest of the model trains from it",
        model.encoder_name, sum(len(t) for t in tables.values()), time.perf_counter() - started,
        ", ".join(f"{split} {len(t)}" for split, t in tables.items()),
    )
    return tables


def _picture_loader(images: np.ndarray, preprocessing: Any, settings: TrainerSettings) -> Any:
    dataset = CachedImageDataset(images, np.zeros(len(images), np.int64), preprocessing=preprocessing)
    options = loader_options(settings.num_workers, resolve_device(settings.device))
    return make_loader(dataset, settings.batch_size, shuffle=False, seed=settings.seed, **options)


def usable_tables(
    tables: Mapping[str, np.ndarray | None], model: HybridModel, ingestion: str
) -> dict[str, np.ndarray] | None:
    """``tables`` when each was made by ``model``'s encoder from this ingestion, else None."""
    if not tables or not all(embedding_cache.is_table(t) for t in tables.values()):
        return None
    expected = {
        "ingestion_id": ingestion,
        "encoder_id": embedding_cache.encoder_id(
            model.encoder, ingestion, model.config.preprocessing
        ),
    }
    problems = [embedding_cache.check_table(t, expected, split) for split, t in tables.items()]
    if any(problems):
        logger.info("Not using the embedding tables: %s", next(p for p in problems if p))
        return None
    return dict(tables)


def train_on_embeddings(
    model: HybridModel, stages: Sequence[Stage], tables: Mapping[str, np.ndarray],
    grades: Mapping[str, np.ndarray], ingestion: str, settings: TrainerSettings,
) -> list[dict[str, Any]]:
    """Train ``stages`` (the encoder kept frozen) from the embedding tables of ``model``'s encoder
    (``ingestion``: the manifest's id, which the tables must name).

    Raises:
        ArtifactError: a table that was not made by this model's encoder from these pictures.
    """
    usable = usable_tables({"train": tables.get("train"), "val": tables.get("val")}, model, ingestion)
    if usable is None:
        raise ArtifactError(
            "The embedding tables (data/05_model_input/embedding_cache_<split>.npy) were not made "
            "by this model's encoder. Rebuild them with `kedro run --pipelines classical`."
        )
    datasets = {
        split: embedding_cache.EmbeddingDataset(usable[split], grades[split]) for split in usable
    }
    return train_stages(
        model, without_encoder(stages),
        make_loader(datasets["train"], settings.batch_size, shuffle=True, seed=settings.seed),
        make_loader(datasets["val"], settings.batch_size, shuffle=False, seed=settings.seed),
        settings, class_counts=class_counts(grades["train"]),
    )
