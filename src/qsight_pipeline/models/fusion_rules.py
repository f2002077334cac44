"""How a trained model fuses its heads: the names of the rules, and the rule a model was saved with.

``inference.fusion`` chooses the rule on validation and writes it to
``model_info["fusion"]["rule"]``; the graph (``inference.graph``), the hardware evaluation and
external validation grade by it. They all read the names and the saved rule from here, so the
rule has one spelling and one reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qsight_pipeline.errors import ArtifactError

# The learned gate, or the mean of the heads' calibrated probabilities.
GATED, MEAN = "gated", "mean"
FUSIONS: tuple[str, ...] = (GATED, MEAN)


class UnknownFusionError(ArtifactError):
    """``model_info["fusion"]`` names a fusion this version does not know."""


def saved_fusion(model_info: Mapping[str, Any]) -> str:
    """The fusion rule saved with a model; ``gated`` for a model saved before the choice was
    made (it is graded as it was trained, by its gate).

    Raises:
        UnknownFusionError: the saved rule is neither ``gated`` nor ``mean``.
    """
    saved = model_info.get("fusion")
    if saved is None:
        return GATED
    rule = saved.get("rule") if isinstance(saved, Mapping) else saved
    if rule not in FUSIONS:
        raise UnknownFusionError(
            f"model_info.json says the heads are fused by {rule!r}, which is not one of "
            f"{', '.join(FUSIONS)}. Refit the ensemble: `kedro run --pipelines ensemble`."
        )
    return rule
