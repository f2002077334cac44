"""Project pipelines: one per stage of the data flow, and ``__default__`` for all of them."""

from __future__ import annotations

import importlib.resources
from typing import Any

from kedro.framework import project as kedro_project
from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from qsight_pipeline.errors import UserError

# The order of the data flow. ``predict``, ``export``, ``quantum_study`` and ``quantum_hardware``
# are registered too (``find_pipelines`` finds every package under ``pipelines/``) but are separate
# jobs, not part of ``__default__``.
TRAINING_PIPELINES = ("ingestion", "classical", "features", "quantum", "ensemble")
# ``__default__`` ends with the model's grades under benign changes to the test photographs, a
# section of the report (its nodes are in the ``report`` group).
DEFAULT_PIPELINES = (*TRAINING_PIPELINES, "robustness")


class UnknownPipelineError(UserError, KeyError):
    """``kedro run --pipelines <name>`` names no pipeline of the project.

    A KeyError, so that Kedro's session (which turns a KeyError of the registry into its own
    ValueError) keeps it as the cause, where ``user_errors`` finds it.
    """

    def __str__(self) -> str:  # a KeyError's own str() quotes the message
        return str(self.args[0]) if self.args else ""


def pipeline_names() -> list[str]:
    """Every pipeline of the project, ``__default__`` first; read from the package folders, so
    that nothing is imported."""
    folder = importlib.resources.files(f"{__package__}.pipelines")
    packages = sorted(entry.name for entry in folder.iterdir()
                      if entry.is_dir() and not entry.name.startswith(("_", ".")))
    return ["__default__", *packages]


def unknown_pipeline(name: str) -> UnknownPipelineError:
    return UnknownPipelineError(
        f"There is no pipeline named {name!r}. The project's pipelines are: "
        f"{', '.join(pipeline_names())}. Name one of them: `kedro run --pipelines <name>[,<name>]` "
        "(a plain `kedro run` runs __default__)."
    )


class _Pipelines(dict):
    """The registry: a name that is not in it is an :class:`UnknownPipelineError`."""

    def __missing__(self, name: Any) -> Pipeline:
        raise unknown_pipeline(str(name))


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    # Kedro (1.7) imports only the pipelines that `kedro run --pipelines` names, and a name
    # without a package is an ImportError with no cause: say which names exist instead.
    requested = getattr(kedro_project.pipelines, "_requested_pipelines", None) or []
    known = pipeline_names()
    for name in requested:
        if name not in known:
            raise unknown_pipeline(name)
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (pipelines[name] for name in DEFAULT_PIPELINES if name in pipelines), Pipeline([])
    )
    return _Pipelines(pipelines)
