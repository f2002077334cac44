"""Typed parameter blocks: one pydantic model per block of ``conf/*/parameters*.yml``.

Each block's model holds the defaults ``kedro run`` uses for that block. Nodes take
``params:<block>`` inputs annotated with these models, so Kedro validates them before the first
node runs (``kedro.validation``); ``validate_parameters`` checks every block and the run-wide keys
at once before that. Importing this package loads pydantic and ``qsight_pipeline.errors``: no
torch, no qiskit. ``DatasetParams`` imports ``data.layouts`` (the registered layouts) only when
it checks a ``dataset.type``.
"""

from qsight_pipeline.config.base import ParamsBlock, format_validation_error
from qsight_pipeline.config.dataset import DatasetParams, IngestionParams
from qsight_pipeline.config.distributed import DistributedParams
from qsight_pipeline.config.ensemble import EnsembleParams
from qsight_pipeline.config.evaluate import EvaluateParams
from qsight_pipeline.config.export import ExportParams
from qsight_pipeline.config.gate import GateParams
from qsight_pipeline.config.mlflow import MlflowConfig
from qsight_pipeline.config.model import AugmentationParams, ModelParams
from qsight_pipeline.config.predict import PredictParams
from qsight_pipeline.config.quantum import QuantumConfig
from qsight_pipeline.config.quantum_hardware import QuantumHardwareParams
from qsight_pipeline.config.quantum_study import QuantumStudyParams
from qsight_pipeline.config.referral import ReferralParams
from qsight_pipeline.config.root import QSightParameters, validate_block, validate_parameters
from qsight_pipeline.config.run import RunSettings
from qsight_pipeline.config.tracking import MlflowParams, TrackingParams, WandbParams

__all__ = [
    "AugmentationParams",
    "DatasetParams",
    "DistributedParams",
    "EnsembleParams",
    "EvaluateParams",
    "ExportParams",
    "GateParams",
    "IngestionParams",
    "MlflowConfig",
    "MlflowParams",
    "ModelParams",
    "ParamsBlock",
    "PredictParams",
    "QSightParameters",
    "QuantumConfig",
    "QuantumHardwareParams",
    "QuantumStudyParams",
    "ReferralParams",
    "RunSettings",
    "TrackingParams",
    "WandbParams",
    "format_validation_error",
    "validate_block",
    "validate_parameters",
]
