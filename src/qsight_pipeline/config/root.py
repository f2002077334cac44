"""Every parameter of a run in one typed model: one field per block, ``run`` included.

``validate_parameters`` is what the pre-run check calls: all problems in every block, unknown
keys included, come back in one message, one line per problem with its full key.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import Field, ValidationError

from qsight_pipeline.config.base import ParamsBlock, format_validation_error
from qsight_pipeline.config.dataset import DatasetParams, IngestionParams
from qsight_pipeline.config.distributed import DistributedParams
from qsight_pipeline.config.ensemble import EnsembleParams
from qsight_pipeline.config.evaluate import EvaluateParams
from qsight_pipeline.config.export import ExportParams
from qsight_pipeline.config.gate import GateParams
from qsight_pipeline.config.model import AugmentationParams, ModelParams
from qsight_pipeline.config.predict import PredictParams
from qsight_pipeline.config.quantum import QuantumConfig
from qsight_pipeline.config.quantum_hardware import QuantumHardwareParams
from qsight_pipeline.config.quantum_study import QuantumStudyParams
from qsight_pipeline.config.referral import ReferralParams
from qsight_pipeline.config.run import RunSettings
from qsight_pipeline.config.tracking import TrackingParams
from qsight_pipeline.errors import ConfigError

Block = TypeVar("Block", bound=ParamsBlock)


class QSightParameters(ParamsBlock):
    """All parameters of ``conf/<env>/parameters*.yml`` after ``--params`` overrides."""

    run: RunSettings = Field(default_factory=RunSettings)
    dataset: DatasetParams = Field(default_factory=DatasetParams)
    ingestion: IngestionParams = Field(default_factory=IngestionParams)
    model: ModelParams = Field(default_factory=ModelParams)
    augmentation: AugmentationParams = Field(default_factory=AugmentationParams)
    quantum: QuantumConfig = Field(default_factory=QuantumConfig)
    quantum_study: QuantumStudyParams = Field(default_factory=QuantumStudyParams)
    quantum_hardware: QuantumHardwareParams = Field(default_factory=QuantumHardwareParams)
    predict: PredictParams = Field(default_factory=PredictParams)
    referral: ReferralParams = Field(default_factory=ReferralParams)
    gate: GateParams = Field(default_factory=GateParams)
    ensemble: EnsembleParams = Field(default_factory=EnsembleParams)
    export: ExportParams = Field(default_factory=ExportParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    distributed: DistributedParams = Field(default_factory=DistributedParams)


def _plain(value: Any) -> Any:
    """Blocks that Kedro has already turned into models go back to plain data for re-validation."""
    if isinstance(value, ParamsBlock):
        return value.model_dump()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def validate_block(model: type[Block], value: Any, key: str) -> Block:
    """``model`` from a block's mapping (or an instance), or a ConfigError naming each bad key."""
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(_plain(dict(value or {})))
    except ValidationError as error:
        lines = format_validation_error(error, key)
        raise ConfigError("Invalid parameters:\n  " + "\n  ".join(lines)) from None


def validate_parameters(parameters: dict[str, Any]) -> QSightParameters:
    """The whole parameter set, typed; every problem of every block in one ConfigError."""
    try:
        return QSightParameters.model_validate(_plain(dict(parameters)))
    except ValidationError as error:
        lines = format_validation_error(error)
        raise ConfigError(
            f"{len(lines)} invalid parameter(s); fix them in conf/<env>/parameters*.yml or "
            "with --params key=value:\n  " + "\n  ".join(lines)
        ) from None
