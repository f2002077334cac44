"""One default per knob: the Python API, the encoder factory, ModelConfig and the hooks use the
typed blocks' defaults (``config/``), never a literal of their own (issue 32, item 4)."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest

from qsight_pipeline.config import (
    AugmentationParams,
    DatasetParams,
    IngestionParams,
    ModelParams,
    QuantumConfig,
    RunSettings,
)
from qsight_pipeline.config.model import DEFAULT_ENCODER_NAMES

MISSING = dataclasses.MISSING


def block_default(block, name):
    field = block.model_fields[name]
    return field.default_factory() if field.default_factory is not None else field.default


def dataclass_defaults(cls) -> dict:
    """Each field's default (its factory called), ``MISSING`` for a required field."""
    return {
        f.name: f.default_factory() if f.default_factory is not MISSING else f.default
        for f in dataclasses.fields(cls)
    }


def signature_defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()}


# DatasetConfig's fields and the block key each one sets (`kedro run`'s name for it).
DATASET_CONFIG_KEYS = {
    "dataset_type": (DatasetParams, "type"),
    "batch_size": (RunSettings, "batch_size"),
    "image_size": (RunSettings, "image_size"),
    "encoder_type": (ModelParams, "encoder_type"),
    "encoder_name": (ModelParams, "encoder_name"),
    "val_fraction": (IngestionParams, "val_fraction"),
    "test_fraction": (IngestionParams, "test_fraction"),
    "seed": (RunSettings, "seed"),
    "num_workers": (RunSettings, "num_workers"),
    "on_bad_image": (IngestionParams, "on_bad_image"),
}


def test_dataset_config_defaults_are_the_blocks():
    from qsight_pipeline.inference.api import DatasetConfig

    defaults = dataclass_defaults(DatasetConfig)
    assert set(defaults) == {"root", "augment", *DATASET_CONFIG_KEYS}  # a new field is mapped here
    assert defaults["root"] is MISSING
    assert defaults["augment"] == AugmentationParams().to_dict()
    for name, (block, key) in DATASET_CONFIG_KEYS.items():
        assert defaults[name] == block_default(block, key), f"DatasetConfig.{name}"


def test_training_config_is_a_view_of_the_run_block():
    from qsight_pipeline.inference.api import TrainingConfig
    from qsight_pipeline.training.stages import default_stage_schedule

    defaults = dataclass_defaults(TrainingConfig)
    named = set(defaults) & set(RunSettings.model_fields) - {"stages"}
    assert len(named) == 10  # the guide's named run fields
    for name in named:
        assert defaults[name] == block_default(RunSettings, name), f"TrainingConfig.{name}"
    # No field of its own beyond the run keys, the blocks it takes and the catch-all `run`.
    assert set(defaults) - named == {"stages", "model", "quantum", "referral", "ensemble", "run"}
    assert defaults["stages"] == default_stage_schedule()
    # Resolved, it is exactly the run block's defaults (the schedule apart).
    settings = TrainingConfig().trainer_settings()
    assert settings.model_dump(include=named) == RunSettings().model_dump(include=named)


def test_train_hybrid_model_arguments_default_to_the_blocks():
    from qsight_pipeline.inference.api import TrainingConfig, train_hybrid_model

    defaults = signature_defaults(train_hybrid_model)
    assert defaults["encoder_type"] == block_default(ModelParams, "encoder_type")
    assert defaults["quantum_enabled"] == block_default(QuantumConfig, "enabled")
    model, quantum, _referral = TrainingConfig().blocks(
        defaults["encoder_type"], defaults["quantum_enabled"]
    )
    assert model == ModelParams() and quantum == QuantumConfig()


def test_encoder_factory_defaults_are_the_model_blocks():
    from qsight_pipeline.models.encoders import create_encoder, resolve_encoder_name

    defaults = signature_defaults(create_encoder)
    for name in ("pretrained", "pretrained_weights"):
        assert defaults[name] == block_default(ModelParams, name), f"create_encoder {name}"
    assert defaults["image_size"] == block_default(RunSettings, "image_size")
    # No type given: the model block's default encoder, type and name.
    assert defaults["encoder_type"] is None and defaults["encoder_name"] is None
    assert signature_defaults(resolve_encoder_name) == {"encoder_type": None, "encoder_name": None}
    model = ModelParams()
    assert resolve_encoder_name() == resolve_encoder_name(model.encoder_type, model.encoder_name)
    # The default timm name per type: one per allowed `model.encoder_type`.
    allowed = typing.get_args(ModelParams.model_fields["encoder_type"].annotation)
    assert set(DEFAULT_ENCODER_NAMES) == set(allowed)


def test_model_config_is_a_view_of_the_model_block():
    """``ModelConfig``'s fields are the ``model`` block's (preprocessing resolved) and what the
    model is built with; its one default, for configs saved before the field, is the block's."""
    from qsight_pipeline.models.hybrid import ModelConfig

    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    assert set(fields) == {*ModelParams.model_fields, "image_size", "num_classes", "quantum"}
    with_default = {name for name, f in fields.items() if f.default is not MISSING}
    assert with_default == {"preprocessing", "freeze_encoder"}  # for configs saved before them
    assert fields["freeze_encoder"].default == block_default(ModelParams, "freeze_encoder")
    assert fields["preprocessing"].default is None  # "not recorded": resolved in __post_init__


def test_other_readers_take_the_blocks_defaults():
    from qsight_pipeline.config.mlflow import MlflowConfig
    from qsight_pipeline.data.image_cache import DEFAULT_MAX_PIXELS
    from qsight_pipeline.kedro_app import mlflow_runs
    from qsight_pipeline.training.devices import resolve_device

    assert DEFAULT_MAX_PIXELS == block_default(IngestionParams, "max_pixels")
    assert signature_defaults(resolve_device)["device"] == block_default(RunSettings, "device")
    assert mlflow_runs.MlflowConfig is MlflowConfig  # the hook validates against config/'s model


@pytest.mark.parametrize("block", [RunSettings, ModelParams, IngestionParams])
def test_the_helper_reads_real_defaults(block):
    """Guard for the tests above: every field compared has a default of its own."""
    for name, field in block.model_fields.items():
        assert not field.is_required(), f"{block.__name__}.{name}"
