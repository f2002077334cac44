"""The classical training and the feature export as DDP jobs launched from inside their nodes.

Each job is a frozen dataclass of plain settings plus the image caches as ``.npy`` files (the
caches are memory maps already; anything else is written to the launch's temporary folder), so
the workers, which are new processes (``training.distributed.launch``), read exactly what the
node would have used.
The worker functions are top level so that they can be pickled into those processes. Only the
writer rank returns a result: a ``torch.save`` file in the temporary folder, which the node loads
with ``weights_only=True`` and returns to Kedro as its one output.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from qsight_pipeline.config import AugmentationParams
from qsight_pipeline.constants import SPLITS
from qsight_pipeline.data.loaders import loader_options, make_loader
from qsight_pipeline.data.torch_data import CachedImageDataset
from qsight_pipeline.files.safe_files import safe_npy_load, safe_torch_load
from qsight_pipeline.models.hybrid import ModelConfig, build_model
from qsight_pipeline.training import artifacts, workflow
from qsight_pipeline.training.distributed import (
    WorkerPlan,
    close_worker,
    gather,
    init_worker,
    launch,
    per_rank_batch_size,
    shard_range,
    sharded_loader,
)
from qsight_pipeline.training.stages import Stage
from qsight_pipeline.training.trainer import TrainerSettings, seed_everything

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassicalJob:
    """Everything the classical training needs besides the images."""

    config: ModelConfig
    stages: list[Stage]
    settings: TrainerSettings
    batch_size: int  # the global batch
    augment: AugmentationParams | dict[str, Any] | None
    num_workers: int | str
    train_grades: np.ndarray
    val_grades: np.ndarray
    fingerprint: str


@dataclass(frozen=True)
class FeatureJob:
    """Everything the feature export needs besides the images."""

    checkpoint_file: str
    grades: dict[str, np.ndarray]
    image_ids: dict[str, list[str]]
    batch_size: int
    settings: TrainerSettings


def _array_file(images: np.ndarray, folder: Path, name: str) -> str:
    """A ``.npy`` file holding ``images``: the cache's own file when it is a memory map."""
    filename = getattr(images, "filename", None)
    if isinstance(images, np.memmap) and filename and str(filename).endswith(".npy"):
        return str(filename)
    path = folder / f"{name}.npy"
    np.save(path, np.ascontiguousarray(images), allow_pickle=False)
    return str(path)


def _pack(value: Any) -> Any:
    """Tensors and plain containers only, so the node can read the result with weights_only."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _pack(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_pack(item) for item in value)
    return value


def _unpack(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"}:
            return value["__ndarray__"].numpy()
        return {key: _unpack(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_unpack(item) for item in value)
    return value


def _save_result(value: Any, path: Path) -> str:
    torch.save(_pack(value), path)
    return str(path)


def _load_result(path: str) -> Any:
    return _unpack(safe_torch_load(path, what="distributed worker result", rebuild="the same `kedro run`"))


def _worker_settings(settings: TrainerSettings, is_writer: bool) -> TrainerSettings:
    # DataParallel inside a DDP worker would fight DDP; one progress bar is enough.
    return settings.model_copy(update={"multi_gpu": False, "progress": settings.progress and is_writer})


# --------------------------------------------------------------------------- classical


def train_classical_ddp(
    plan: WorkerPlan, job: ClassicalJob, image_cache_train: np.ndarray, image_cache_val: np.ndarray
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """Train with DDP; the classical checkpoint and history on machine 0, ``None`` elsewhere."""
    per_rank_batch_size(job.batch_size, plan.world_size)  # fail before starting any process
    with tempfile.TemporaryDirectory(prefix="qsight-ddp-") as folder:
        files = {
            "train": _array_file(image_cache_train, Path(folder), "train"),
            "val": _array_file(image_cache_val, Path(folder), "val"),
        }
        result = launch(plan, classical_worker, job, files, folder)
        if result is None:
            return None
        checkpoint, history = _load_result(result)
    return checkpoint, history


def classical_worker(
    plan: WorkerPlan, job: ClassicalJob, files: dict[str, str], folder: str
) -> str | None:
    """One DDP rank of the classical training (runs in a worker process)."""
    rank = init_worker(plan)
    try:
        settings = _worker_settings(job.settings, rank.is_writer)
        seed_everything(settings.seed)
        model = build_model(job.config)
        preprocessing = job.config.preprocessing
        train_set = CachedImageDataset(
            safe_npy_load(files["train"], mmap_mode="r"),
            job.train_grades,
            train=True,
            augment=job.augment,
            preprocessing=preprocessing,
        )
        val_set = CachedImageDataset(
            safe_npy_load(files["val"], mmap_mode="r"),
            job.val_grades,
            train=False,
            augment=None,
            preprocessing=preprocessing,
        )
        options = loader_options(job.num_workers, rank.device)
        train_loader = sharded_loader(
            train_set,
            per_rank_batch_size(job.batch_size, rank.world_size),
            seed=settings.seed,
            **options,
        )
        # Every rank scores the whole validation set, so its metrics are those of one process.
        val_loader = make_loader(
            val_set, job.batch_size, shuffle=False, seed=settings.seed, **options
        )
        history = workflow.train_image_stages(
            model,
            job.stages,
            train_loader,
            val_loader,
            settings.model_copy(update={"run_fingerprint": job.fingerprint}),
            train_labels=job.train_grades,
        )
        if not rank.is_writer:
            return None
        result = (artifacts.classical_checkpoint(model, history), history)
        return _save_result(result, Path(folder) / "classical_result.pt")
    finally:
        close_worker()


# --------------------------------------------------------------------------- feature export


def export_features_ddp(
    plan: WorkerPlan,
    phase1_classical_model: dict[str, Any],
    caches: dict[str, np.ndarray],
    job: FeatureJob,
) -> dict[str, Any]:
    """The feature export over this machine's workers; each rank takes a contiguous slice."""
    with tempfile.TemporaryDirectory(prefix="qsight-ddp-") as folder:
        checkpoint_file = str(Path(folder) / "phase1.pt")
        _save_result(phase1_classical_model, Path(checkpoint_file))
        files = {
            split: _array_file(images, Path(folder), split) for split, images in caches.items()
        }
        job = dataclasses.replace(job, checkpoint_file=checkpoint_file)
        result = launch(plan.local_only(), feature_worker, job, files, folder)
        return _load_result(result)


def feature_worker(
    plan: WorkerPlan, job: FeatureJob, files: dict[str, str], folder: str
) -> str | None:
    """One rank of the feature export: its slice of every split, gathered on the writer."""
    rank = init_worker(plan)
    try:
        checkpoint = _load_result(job.checkpoint_file)
        model = artifacts.load_classical_checkpoint(checkpoint)
        loaders, ids = {}, {}
        for split, file in files.items():
            dataset = CachedImageDataset(
                safe_npy_load(file, mmap_mode="r"),
                job.grades[split],
                train=False,
                augment=None,
                preprocessing=model.config.preprocessing,
            )
            part = shard_range(len(dataset), rank)
            ids[split] = [job.image_ids[split][i] for i in part]
            if len(part):  # an empty slice is exported as an empty split, like a missing one
                loaders[split] = make_loader(
                    Subset(dataset, part), job.batch_size, shuffle=False, seed=job.settings.seed
                )
        settings = _worker_settings(job.settings, rank.is_writer)
        settings = settings.model_copy(update={"device": str(rank.device)})
        shards = gather(workflow.export_features(model, loaders, ids, settings))
        if not rank.is_writer:
            return None
        return _save_result(merge_feature_shards(shards), Path(folder) / "features_result.pt")
    finally:
        close_worker()


def merge_feature_shards(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """One feature cache from the per-rank caches of contiguous slices, in rank order."""
    merged = dict(shards[0])
    for split in SPLITS:
        for key in [k for k in merged if k.startswith(f"{split}_")]:
            parts = [shard[key] for shard in shards]
            merged[key] = (
                [item for part in parts for item in part]
                if isinstance(parts[0], list)
                else np.concatenate(parts)
            )
    return merged
