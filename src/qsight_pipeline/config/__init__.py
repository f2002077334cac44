"""Typed parameter blocks: one pydantic model per block of ``conf/*/parameters*.yml``.

Each block's model holds that block's defaults (the one source of them). Nodes take
``params:<block>`` inputs annotated with these models, so Kedro validates them before the first
node runs (``kedro.validation``). This package imports only pydantic: no torch, no qiskit.
"""

from qsight_pipeline.config.base import ParamsBlock

__all__ = ["ParamsBlock"]
