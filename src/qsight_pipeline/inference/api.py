"""The Python API of the system QSight replaces (its user guide, section 6), on QSight's code.

```python
from pathlib import Path
from qsight_pipeline import (
    DatasetConfig, TrainingConfig, default_stage_schedule, create_dataloaders, train_hybrid_model,
)

config = DatasetConfig(root="data/01_raw/sample", dataset_type="tanlikesmath", batch_size=16)
train_loader, val_loader, classes = create_dataloaders(config)
training_config = TrainingConfig(
    stages=default_stage_schedule(), checkpoint_dir=Path("outputs/checkpoints")
)
model, summary = train_hybrid_model(
    train_loader, val_loader, classes, config=training_config, encoder_type="vit",
    quantum_enabled=True,
)
save_model(model, summary, "outputs/trained_model")  # then load_model("outputs/trained_model")
```

Nothing here is a second implementation: the loaders come from the ingestion steps, and training
runs the same :mod:`qsight_pipeline.training.workflow` functions as the Kedro nodes (image stages, feature
export, then the quantum and ensemble stages on the in-memory feature cache), and the operating
point is fitted on validation by the function the ensemble pipeline's node calls (temperatures, referral and
review thresholds), so a model trained here grades photographs exactly as one from ``kedro run``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import DataLoader

from qsight_pipeline.config import (
    AugmentationParams,
    DatasetParams,
    EnsembleParams,
    IngestionParams,
    ModelParams,
    ParamsBlock,
    QuantumConfig,
    RunSettings,
    validate_block,
)
from qsight_pipeline.config.referral import ReferralParams
from qsight_pipeline.constants import GRADE_NAMES
from qsight_pipeline.data import feature_cache
from qsight_pipeline.data.image_cache import UnreadableImagesError, build_image_cache
from qsight_pipeline.data.ingest import build_image_caches, scan_dataset, split_by_patient
from qsight_pipeline.data.loaders import loader_workers, make_loader
from qsight_pipeline.data.preprocessing import Preprocessing, from_saved
from qsight_pipeline.data.splits import split_rows
from qsight_pipeline.data.torch_data import CachedImageDataset
from qsight_pipeline.errors import ConfigError
from qsight_pipeline.files.plain import to_plain
from qsight_pipeline.files.storage import atomic_torch_save, atomic_write
from qsight_pipeline.inference import fusion, operating_point
from qsight_pipeline.inference.gate import fit_gates, ood_splits
from qsight_pipeline.inference.loading import CHECKPOINT_NAME, MODEL_INFO_NAME, SUMMARY_NAME
from qsight_pipeline.models.fusion_rules import GATED
from qsight_pipeline.models.hybrid import HybridModel, ModelConfig, build_model, model_preprocessing
from qsight_pipeline.training import artifacts, workflow
from qsight_pipeline.training.devices import resolve_device
from qsight_pipeline.training.stages import (
    Stage,
    default_stage_schedule,
    parse_stages,
    split_schedule,
)
from qsight_pipeline.training.trainer import TrainerSettings, seed_everything

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetConfig",
    "TrainingConfig",
    "create_dataloaders",
    "default_stage_schedule",
    "evaluate_hybrid_model",
    "save_model",
    "train_hybrid_model",
]


def _default(block: type[ParamsBlock], name: str) -> Any:
    """A setting's default, read from its typed block (``config/``), the one place it is set."""
    return block.model_fields[name].default


@dataclass
class DatasetConfig:
    """Where the photographs are and how to load them (the guide's ``DatasetConfig``).

    A view of the ``dataset``, ``ingestion`` and ``run`` blocks: every default is theirs
    (``DatasetParams``, ``IngestionParams``, ``RunSettings``, ``ModelParams``,
    ``AugmentationParams``), as in ``kedro run``; ``num_workers: "auto"`` is resolved for the
    device ``auto`` picks.

    The loaders hold the pictures of the one pixel path, made for the encoder named by
    ``encoder_type`` and ``encoder_name`` (its preprocessing: timm's data config for its weights;
    by default the ``model`` block's default encoder) at ``image_size`` (None: the encoder's own
    input size). ``train_hybrid_model`` makes them again, once and saying so, when the model's
    encoder or ``TrainingConfig.model["preprocessing"]`` wants other pictures; naming the
    model's encoder here saves that second decode.
    """

    root: str | Path
    dataset_type: str = _default(DatasetParams, "type")
    batch_size: int = _default(RunSettings, "batch_size")
    image_size: int | None = _default(RunSettings, "image_size")
    encoder_type: str = _default(ModelParams, "encoder_type")
    encoder_name: str | None = _default(ModelParams, "encoder_name")
    val_fraction: float = _default(IngestionParams, "val_fraction")
    test_fraction: float = _default(IngestionParams, "test_fraction")
    seed: int = _default(RunSettings, "seed")
    num_workers: int | str = _default(RunSettings, "num_workers")
    on_bad_image: str = _default(IngestionParams, "on_bad_image")
    augment: Mapping[str, Any] | None = field(default_factory=lambda: AugmentationParams().to_dict())

    def pixel_path(self) -> Preprocessing:
        """The preprocessing the loaders' pictures follow (a ConfigError names a bad key)."""
        model = validate_block(ModelParams, {
            "encoder_type": self.encoder_type, "encoder_name": self.encoder_name,
        }, "DatasetConfig")
        return model_preprocessing(model, self.image_size)

    def blocks(self) -> tuple[DatasetParams, IngestionParams]:
        """The ``dataset`` and ``ingestion`` blocks these fields set (a ConfigError names each
        bad key)."""
        return (
            validate_block(DatasetParams, {"root": str(self.root), "type": self.dataset_type}, "dataset"),
            validate_block(IngestionParams, {
                "val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
                "on_bad_image": self.on_bad_image,
            }, "ingestion"),
        )


# `run` keys that the Python API takes from elsewhere than TrainingConfig.
_SET_ELSEWHERE = {
    "image_size": "DatasetConfig.image_size (the loaders' pictures)",
    "batch_size": "DatasetConfig.batch_size (the loaders' batches)",
    "num_workers": "DatasetConfig.num_workers (the loaders' processes)",
    "output_dir": "save_model(model, summary, output_dir)",
    "stages_config": "TrainingConfig.stages (e.g. load_stages_file(path))",
}


@dataclass
class TrainingConfig:
    """How to train (the guide's ``TrainingConfig``): a view of the ``run`` block.

    The guide's named fields are ``RunSettings`` keys and take their defaults from it (one place:
    ``config/run.py``; ``tests/test_defaults.py`` checks it); ``stages`` defaults to the guide's
    schedule (``training.stages.default_stage_schedule``), the Python API having no
    ``conf/`` for ``run.stages_config`` to name.
    """

    stages: Sequence[Stage | Mapping[str, Any]] = field(default_factory=default_stage_schedule)
    checkpoint_dir: str | Path | None = _default(RunSettings, "checkpoint_dir")
    grad_clip: float = _default(RunSettings, "grad_clip")
    mixed_precision: bool | None = _default(RunSettings, "mixed_precision")
    device: str = _default(RunSettings, "device")
    multi_gpu: bool = _default(RunSettings, "multi_gpu")
    device_ids: Sequence[int] | None = _default(RunSettings, "device_ids")
    seed: int = _default(RunSettings, "seed")
    latency_tracking: bool = _default(RunSettings, "latency_tracking")
    class_balanced_loss: bool = _default(RunSettings, "class_balanced_loss")
    resume: bool = _default(RunSettings, "resume")
    # The blocks of conf/base/parameters*.yml, as mappings or typed blocks (their defaults when
    # omitted): `model` (encoder_name, pretrained, pretrained_weights, compressed_dim, ...; the
    # encoder_type and quantum_enabled arguments of train_hybrid_model set `model.encoder_type`
    # and `quantum.enabled`), `quantum` (the circuit and its executor) and `referral`
    # (target_sensitivity, review_fraction).
    model: Mapping[str, Any] | ModelParams | None = None
    quantum: Mapping[str, Any] | QuantumConfig | None = None
    referral: Mapping[str, Any] | ReferralParams | None = None
    # `ensemble` (fusion: auto | gated | mean, seeds, confidence): how the heads are fused,
    # chosen on validation as the ensemble pipeline chooses it.
    ensemble: Mapping[str, Any] | EnsembleParams | None = None
    # Any other key of the `run` block (`config.RunSettings`), e.g. {"compile": True,
    # "channels_last": True}: a knob added to RunSettings is settable here without a new field.
    run: Mapping[str, Any] | None = None

    def run_fields(self) -> dict[str, Any]:
        """The ``run`` block these settings give: the named fields that are ``RunSettings`` keys
        (the schedule apart: it is parsed into stages, not validated as the raw ``stages`` key),
        then ``run``'s keys. A key given both ways is refused, not silently chosen."""
        named = {
            f.name: getattr(self, f.name) for f in fields(self)
            if f.name in RunSettings.model_fields and f.name != "stages"
        }
        extra = dict(self.run or {})
        both = sorted(set(extra) & {*named, "stages"})
        if both:
            raise ConfigError(
                f"TrainingConfig.run sets {', '.join(both)}, which TrainingConfig has as a "
                f"field: write TrainingConfig({both[0]}=...) instead."
            )
        elsewhere = sorted(set(extra) & set(_SET_ELSEWHERE))
        if elsewhere:
            key = elsewhere[0]
            raise ConfigError(f"TrainingConfig.run sets {key}, which the Python API takes from "
                              f"{_SET_ELSEWHERE[key]}; set it there.")
        return {**named, **extra}

    def trainer_settings(self) -> TrainerSettings:
        """The run-wide block (``config.RunSettings``) these fields set, validated once (a bad or
        unknown key is named ``run.<key>``), for the trainer."""
        params = self.run_fields()
        if params["checkpoint_dir"] is not None:
            params["checkpoint_dir"] = str(params["checkpoint_dir"])
        return TrainerSettings.from_run(validate_block(RunSettings, params, "run"))

    def blocks(
        self, encoder_type: str, quantum_enabled: bool
    ) -> tuple[ModelParams, QuantumConfig, ReferralParams]:
        """The ``model``, ``quantum`` and ``referral`` blocks, validated (a ConfigError names
        each bad key) before hours of training."""
        model = {**_mapping(self.model), "encoder_type": encoder_type}
        quantum = {**_mapping(self.quantum), "enabled": bool(quantum_enabled)}
        return (
            validate_block(ModelParams, model, "model"),
            QuantumConfig.from_params(quantum),
            validate_block(ReferralParams, self.referral, "referral"),
        )


def _mapping(block: Mapping[str, Any] | ParamsBlock | None) -> dict[str, Any]:
    """A block's keys as a dict, whether it was given typed or as a mapping."""
    return block.model_dump() if isinstance(block, ParamsBlock) else dict(block or {})


def _ingest(config: DatasetConfig, pixels: Preprocessing) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The ingestion pipeline's steps, in memory, on the same typed blocks as ``kedro run``."""
    dataset, ingestion = config.blocks()
    images, _findings = scan_dataset(dataset, ingestion)
    split_images = split_by_patient(images, ingestion, config.seed)
    manifest, train, val, test, _unreadable = build_image_caches(split_images, pixels, ingestion)
    return manifest, {"train": train, "val": val, "test": test}


def create_dataloaders(
    config: DatasetConfig, *, with_test: bool = False
) -> tuple[DataLoader, DataLoader, list[str]] | tuple[DataLoader, DataLoader, DataLoader, list[str]]:
    """Scan, split (by patient) and decode the data set once; return the loaders and grade names.

    Returns ``(train_loader, val_loader, classes)`` as in the guide, or with ``with_test=True``
    ``(train_loader, val_loader, test_loader, classes)``. The training loader augments; the
    others do not. Each loader's dataset carries ``image_ids``, its ``preprocessing``, and the
    ``paths`` and ``size_setting`` (``DatasetConfig.image_size``) to make its pictures again for
    the model's encoder (:func:`fit_pictures`).
    """
    pixels = config.pixel_path()
    manifest, caches = _ingest(config, pixels)
    # `auto`, the run block's default, as kedro run resolves it for the device `auto` picks.
    workers = loader_workers(config.num_workers, resolve_device(_default(RunSettings, "device")))
    loaders = {}
    for split, images in caches.items():
        rows = split_rows(manifest, split)
        dataset = CachedImageDataset(
            images,
            rows["grade"].to_numpy(dtype=np.int64),
            train=split == "train",
            augment=config.augment if split == "train" else None,
            preprocessing=pixels,
        )
        dataset.image_ids = rows["image_id"].astype(str).tolist()
        dataset.paths = rows["path"].astype(str).tolist()
        dataset.size_setting = config.image_size
        loaders[split] = make_loader(
            dataset, config.batch_size, shuffle=split == "train", seed=config.seed,
            num_workers=workers,
        )
    classes = list(GRADE_NAMES)
    if with_test:
        return loaders["train"], loaders["val"], loaders["test"], classes
    return loaders["train"], loaders["val"], classes


def _unaugmented(loader: DataLoader) -> DataLoader:
    """The same images as ``loader`` without augmentation or shuffling, for the feature export."""
    dataset = loader.dataset
    plain = CachedImageDataset(
        dataset.images, dataset.grades, train=False, augment=None,
        preprocessing=dataset.preprocessing,
    )
    plain.image_ids = getattr(dataset, "image_ids", None)
    return make_loader(plain, loader.batch_size or _default(RunSettings, "batch_size"), shuffle=False, seed=0)


def _image_ids(loader: DataLoader) -> list[str]:
    ids = getattr(loader.dataset, "image_ids", None)
    return list(ids) if ids is not None else [str(i) for i in range(len(loader.dataset))]


def train_hybrid_model(
    train_loader: DataLoader,
    val_loader: DataLoader,
    classes: Sequence[str] = GRADE_NAMES,
    config: TrainingConfig | None = None,
    encoder_type: str = _default(ModelParams, "encoder_type"),
    quantum_enabled: bool = _default(QuantumConfig, "enabled"),
) -> tuple[HybridModel, dict[str, Any]]:
    """Train the hybrid model through every stage of ``config.stages``.

    Args:
        train_loader, val_loader: from :func:`create_dataloaders` (image batches).
        classes: grade names; must be the five DR grades in clinical order.
        config: stages and run settings; ``TrainingConfig()`` when omitted.
        encoder_type: the timm encoder family (``model.encoder_type``, whose default it takes);
            ``config.model`` holds the other ``model.*`` settings (``encoder_name``, ...).
        quantum_enabled: build the quantum head (a warning and classical-only when qiskit is
            missing); ``config.quantum`` holds the other ``quantum.*`` settings.

    Returns:
        ``(model, summary)``: the model and the ``training_summary.json`` dict (``stages``,
        ``best_validation``, the ``evaluation`` of every head and the ensemble), with the
        ``calibration`` fitted on validation (``config.referral``) and the ``gates`` fitted on
        the training and validation loaders; :func:`save_model` writes them for ``load_model``.
        :func:`evaluate_hybrid_model` adds the test split's figures.
    """
    if list(classes) != list(GRADE_NAMES):
        raise ValueError(f"classes must be the DR grades in clinical order {list(GRADE_NAMES)}, got {list(classes)}")
    config = config or TrainingConfig()
    settings = config.trainer_settings()
    model_params, quantum_params, referral = config.blocks(encoder_type, quantum_enabled)
    seed_everything(settings.seed)
    stages = split_schedule(parse_stages(list(config.stages)))
    pixels = model_preprocessing(model_params, _size_setting(train_loader.dataset))
    fit_pictures(pixels, train_loader, val_loader)
    model_config = ModelConfig.from_params(model_params, quantum_params, pixels.image_size, pixels)
    model = build_model(model_config)
    batch_size = train_loader.batch_size or _default(RunSettings, "batch_size")

    history = workflow.train_image_stages(
        model, stages["classical"], train_loader, val_loader, settings,
        train_labels=train_loader.dataset.grades,
    )
    loaders = {"train": _unaugmented(train_loader), "val": val_loader}
    cache = workflow.export_features(
        model, loaders, {split: _image_ids(loader) for split, loader in loaders.items()}, settings
    )
    cache_settings = settings.model_copy(update={"batch_size": batch_size})
    cache_history, evaluation = _cache_stages(model, stages, cache, cache_settings, splits=("val",))
    history += cache_history
    chosen, evaluation = _fusion(model, cache, stages["ensemble"], cache_settings, config, evaluation)
    summary = _training_summary(model, history, evaluation, cache, config, referral)
    summary["fusion"] = chosen
    summary["gates"] = _fit_gates(train_loader, cache)
    return model, summary


def _fusion(
    model: HybridModel, cache: dict[str, Any], stages: list[Stage], settings: TrainerSettings,
    config: TrainingConfig, evaluation: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The gate against its baselines and the evaluation whose ensemble is the fusion kept, as
    the ensemble pipeline's ``choose_fusion`` node makes them."""
    params = validate_block(EnsembleParams, config.ensemble, "ensemble")
    chosen = fusion.compare_fusions(model, cache, stages, settings, params, evaluation)
    temperatures = chosen.get("head_temperatures", {})
    return to_plain(chosen), {split: fusion.with_fusion(result, chosen["rule"], temperatures)
                              for split, result in evaluation.items()}


def _size_setting(dataset: Any) -> int | None:
    """The side the model's pictures take: ``DatasetConfig.image_size`` as given (None: the
    model's encoder's own), or the side of a dataset made some other way."""
    return dataset.size_setting if hasattr(dataset, "size_setting") else dataset.image_size


def fit_pictures(preprocessing: Preprocessing | Mapping[str, Any], *loaders: DataLoader) -> None:
    """Make each loader's pictures the ones ``preprocessing`` (the model's) makes, in place: its
    own normalisation when only ``mean``/``std`` differ; otherwise its photographs decoded again
    (logged), which needs the ``paths`` :func:`create_dataloaders` keeps.

    Raises:
        ConfigError: the pictures differ and the loader's dataset has no ``paths``.
    """
    wanted = from_saved(preprocessing)
    for loader in loaders:
        dataset = loader.dataset
        if replace(dataset.preprocessing, source="") == replace(wanted, source=""):
            continue
        if dataset.preprocessing.picture_settings() == wanted.picture_settings():
            dataset.use_pictures(dataset.images, wanted)
            continue
        if getattr(dataset, "paths", None) is None:
            raise ConfigError(
                f"The loader's pictures were made with {dataset.preprocessing.to_dict()}; the "
                f"model needs {wanted.to_dict()}: make the loaders with create_dataloaders."
            )
        logger.info("The loaders' pictures were made for %s; decoding the %d photographs again "
                    "for the model's (%s). Name the model's encoder in DatasetConfig(encoder_type, "
                    "encoder_name) to decode them once.", dataset.preprocessing.source,
                    len(dataset.paths), wanted.source)
        images, failures = build_image_cache(dataset.paths, wanted)
        if failures:
            raise UnreadableImagesError(f"{len(failures)} photographs no longer decode, e.g. "
                                        f"{next(iter(failures.values()))}")
        dataset.use_pictures(images, wanted)


def evaluate_hybrid_model(
    model: HybridModel,
    test_loader: DataLoader,
    summary: Mapping[str, Any],
    config: TrainingConfig | None = None,
) -> dict[str, Any]:
    """Test a trained model, as the ensemble pipeline does after training: ``summary`` (from
    :func:`train_hybrid_model`) plus the test split's figures.

    Args:
        model: the trained model (as :func:`train_hybrid_model` returned it).
        test_loader: unaugmented test images (``create_dataloaders(config, with_test=True)``).
        summary: the training summary, whose saved operating point is used, never refitted.
        config: the run settings of the training (device, precision, seed); ``TrainingConfig()``
            when omitted.

    Returns:
        A new summary with ``evaluation["test"]`` (every head and the ensemble) and, in
        ``calibration``, the test split's calibration quality, ``test_operating_point`` (the
        validation-chosen threshold's sensitivity and specificity on test) and ``test_roc``.
    """
    settings = (config or TrainingConfig()).trainer_settings()
    fit_pictures(model.config.preprocessing, test_loader)
    cache = workflow.export_features(
        model, {"test": test_loader}, {"test": _image_ids(test_loader)}, settings
    )
    test = workflow.evaluate_on_cache(
        model, cache, settings, batch_size=test_loader.batch_size or _default(RunSettings, "batch_size"), splits=("test",)
    )["test"]
    chosen = summary.get("fusion") or {}
    fused = fusion.with_fusion(test, chosen.get("rule", GATED), chosen.get("head_temperatures", {}))
    tested = {**summary, "evaluation": {**summary["evaluation"], "test": to_plain(fused["metrics"])}}
    test = fused
    calibration = summary.get("calibration")
    if calibration:
        report = operating_point.with_test_report(
            calibration, test, calibration["temperatures"], calibration["referral"]["threshold"]
        )
        tested["calibration"] = to_plain(report)
    return tested


def _cache_stages(
    model: HybridModel, stages: dict[str, list[Stage]], cache: dict[str, Any],
    settings: TrainerSettings, splits: Sequence[str],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The quantum, then the ensemble stages on the feature cache, as the two pipelines run
    them; the evaluation of every head and the ensemble on ``splits`` after the last."""
    quantum_history, _ = workflow.fit_on_cache(
        model, "quantum", stages["quantum"], cache, settings, splits=()
    )
    ensemble_history, evaluation = workflow.fit_on_cache(
        model, "ensemble", stages["ensemble"], cache, settings, splits=splits
    )
    return quantum_history + ensemble_history, evaluation


def _fit_gates(train_loader: DataLoader, cache: dict[str, Any]) -> dict[str, Any]:
    """The gate, as the ensemble pipeline fits it, from the training loader's image cache (no
    resolution bound: the loader does not know the original files), its out-of-distribution
    score on the encoder's features of the feature export; ``save_model`` moves it into
    ``model_info["gates"]``."""
    images = getattr(train_loader.dataset, "images", None)
    return to_plain(fit_gates(images, None, ood_splits(cache)))


def _training_summary(
    model: HybridModel,
    history: list[dict[str, Any]],
    evaluation: dict[str, dict[str, Any]],
    cache: dict[str, Any],
    config: TrainingConfig,
    referral: ReferralParams,
) -> dict[str, Any]:
    """The summary with the operating point fitted on validation, as the ensemble pipeline does."""
    calibration = to_plain(operating_point.fit_operating_point(evaluation, referral))
    model_info = artifacts.build_model_info(model, feature_cache.cache_metadata(cache))
    recorded = {  # the blocks as used, defaults included, as kedro run records them
        "run": {"stages": config.stages, **config.run_fields()},
        "model": model.config.to_dict(), "referral": referral.model_dump(),
    }
    summary = artifacts.build_training_summary(
        history, evaluation, model_info, config=to_plain(recorded)
    )
    return operating_point.summary_with_operating_point(summary, calibration)


def save_model(model: HybridModel, summary: Mapping[str, Any], output_dir: str | Path) -> Path:
    """Write a model from :func:`train_hybrid_model` as ``kedro run`` writes one.

    ``output_dir`` gets ``complete_checkpoint.pth``, ``model_info.json`` (with the preprocessing
    and the calibration inference applies) and ``training_summary.json``: ``load_model``, the
    ``predict`` and ``export`` pipelines and the page read the folder like a run's output.
    """
    folder = Path(output_dir).expanduser()
    seed = int(((summary.get("config") or {}).get("run") or {}).get("seed", 0))
    model_info = operating_point.model_info_with_operating_point(
        artifacts.build_model_info(model, workflow.model_metadata(model, seed)),
        model.config.image_size,
        summary.get("calibration"),
    )
    if summary.get("gates"):  # the gate train_hybrid_model fitted
        model_info["gates"] = summary["gates"]
    if summary.get("fusion"):  # how the heads are fused, chosen on validation
        model_info["fusion"] = {k: summary["fusion"][k] for k in ("rule", "setting", "sentence")}
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    checkpoint = artifacts.complete_checkpoint({"model_state": state}, model, dict(summary), model_info)
    atomic_torch_save(checkpoint, folder / CHECKPOINT_NAME)
    for name, content in ((MODEL_INFO_NAME, model_info), (SUMMARY_NAME, summary)):
        text = json.dumps(to_plain(content), indent=2).encode("utf-8")
        atomic_write(folder / name, lambda handle, text=text: handle.write(text))
    logger.info("Saved the trained model to %s", folder)
    return folder
