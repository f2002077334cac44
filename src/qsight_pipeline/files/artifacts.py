"""The old path of :mod:`qsight_pipeline.training.artifacts`, kept for code written against it.

Earlier READMEs named ``qsight_pipeline.files.artifacts.load_complete_checkpoint``; the artifact
formats now live in ``training/artifacts.py`` (they build models, which ``files/`` sits below).
Nothing in the package imports this module: it is the one upward import that
``tests/test_import_layers.py`` allows (``COMPATIBILITY_MODULES``).
"""

from __future__ import annotations

from qsight_pipeline.training.artifacts import load_complete_checkpoint

__all__ = ["load_complete_checkpoint"]
