"""Is a photograph like the training photographs? Out-of-distribution scores, chosen by measurement.

Four detectors score a photograph from what the model computes for it, higher meaning less like
the training photographs. Each is fitted on the training split's features in the gate's feature
space (and the classical heads' logits where it needs them) and saved as plain numbers; its
threshold is a split-conformal rank of the validation scores (:func:`conformal_threshold`).

The feature space (``ood["space"]``) is ``encoder``: the encoder's pooled features, before the
compression module (the graph's ``encoder_features`` output). On the demo model every detector but
energy separates non-fundus photographs perfectly there (AUROC 1.000), against 0.98 on the
compressed features, whose LayerNorm and 16 dimensions discard what makes a coffee cup different
(``benchmarks/ood_detectors.py --spaces encoder``). A gate saved before the space was recorded has
no ``space`` key and scores the ``compressed`` features (the graph's ``compressed_features``) as it
always did. An encoder wider than :data:`MAX_GATE_WIDTH` (768 for ViT-B, 1024 for RETFound) is
first projected onto the top principal components of the training features (at most
:data:`MAX_GATE_WIDTH`, fitted with the gate and saved as ``ood["projection"]``: a mean and the
components), so that ``model_info.json`` holds a 256 x 256 precision matrix rather than a
1024 x 1024 one; every detector scores the projected features.

- ``mahalanobis``: distance of the features from the training mean, with
  scikit-learn's Ledoit-Wolf shrunk covariance (class-agnostic).
- ``knn``: Euclidean distance of the L2-normalised features to their ``k``-th nearest
  normalised training feature (Sun et al., ICML 2022); the same score as pytorch-ood's ``KNN``.
- ``energy``: ``-logsumexp`` of the logits (Liu et al., NeurIPS 2020), the logits being the mean
  of the classical heads' (head A and head B); the same score as pytorch-ood's ``EnergyBased``.
- ``vim``: Virtual-logit Matching (Wang et al., CVPR 2022): the norm of the features' residual
  outside the principal subspace of the training features, scaled by ``alpha`` (mean maximum
  logit over mean residual norm on the training split), minus the logits' ``logsumexp``. ViM
  centres the features at ``-pinv(W) b`` of a linear last layer; the heads here are MLPs on
  the compressed features (and the gate may score the encoder's), so the origin is the training mean (:func:`fit_vim` takes another
  origin, and then equals pytorch-ood's ``ViM``; tested).

pytorch-ood's detector classes hold torch tensors and an optional dependency; the gate must be
plain numbers in ``model_info.json`` that a consumer of ``model.onnx`` can apply with NumPy, so the
scores are computed here and the tests check them against pytorch-ood's on the same features.
Which detector a model uses is ``gate.ood_detector``, chosen by ``benchmarks/ood_detectors.py``
on sets the test never uses (docs/grading.md, "Like the training photographs?"); its name is saved with the gate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp
from scipy.stats import beta
from sklearn.covariance import LedoitWolf

from qsight_pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

# The k-NN detector keeps at most this many training features (an evenly spaced subset), and
# scores the distance to the k-th nearest: k = 1 did best of 1, 5 and 10 on the demo model's
# selection sets (benchmarks/ood_detectors.py); the paper's 50 assumes tens of thousands.
KNN_BANK = 2000
KNN_K = 1

# The feature spaces a gate can score, and the graph output (inference.graph.OUTPUT_NAMES) of each.
ENCODER_SPACE, COMPRESSED_SPACE = "encoder", "compressed"
SPACE_OUTPUTS: dict[str, str] = {ENCODER_SPACE: "encoder_features", COMPRESSED_SPACE: "compressed_features"}
# Wider features are projected onto at most this many principal components before the detectors.
MAX_GATE_WIDTH = 256


@dataclass(frozen=True)
class Detector:
    """A registered out-of-distribution score: how it is fitted, and how it scores."""

    name: str
    description: str
    needs_logits: bool
    fit: Callable[[np.ndarray, np.ndarray | None], dict[str, Any]]
    score: Callable[[np.ndarray, np.ndarray | None, Mapping[str, Any]], np.ndarray]


DETECTORS: dict[str, Detector] = {}


def register(name: str, description: str, needs_logits: bool = False) -> Callable:
    """Register a detector class with static ``fit`` and ``score`` under ``name``."""

    def decorate(cls: type) -> type:
        DETECTORS[name] = Detector(name, description, needs_logits, cls.fit, cls.score)
        return cls

    return decorate


def get_detector(name: str) -> Detector:
    """The detector called ``name``; an unknown name is an error that lists the known ones."""
    if name not in DETECTORS:
        raise ConfigError(
            f"gate.ood_detector: unknown detector {name!r}; the detectors are {', '.join(DETECTORS)}"
        )
    return DETECTORS[name]


def _rows(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[None, :] if array.ndim == 1 else array


def _subset(count: int, limit: int) -> np.ndarray:
    return np.arange(count) if count <= limit else np.linspace(0, count - 1, limit).round().astype(int)


def _normalised(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


@register("mahalanobis", "Mahalanobis distance of the features from the training "
          "split's mean, Ledoit-Wolf shrunk covariance")
class Mahalanobis:
    @staticmethod
    def fit(features: np.ndarray, logits: np.ndarray | None = None) -> dict[str, Any]:
        estimator = LedoitWolf().fit(np.asarray(features, dtype=np.float64))
        return {"mean": estimator.location_.tolist(), "precision": estimator.precision_.tolist()}

    @staticmethod
    def score(features: np.ndarray, logits: np.ndarray | None, params: Mapping[str, Any]) -> np.ndarray:
        centred = _rows(features) - np.asarray(params["mean"], dtype=np.float64)
        precision = np.asarray(params["precision"], dtype=np.float64)
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, precision, centred), 0.0))


@register("knn", "distance of the L2-normalised features to their k-th nearest "
          "normalised training feature (Sun et al. 2022)")
class NearestNeighbours:
    @staticmethod
    def fit(features: np.ndarray, logits: np.ndarray | None = None, k: int = KNN_K) -> dict[str, Any]:
        train = np.asarray(features, dtype=np.float64)
        bank = train[_subset(len(train), KNN_BANK)]  # as they are: ViM is fitted on them too
        return {"bank": bank.tolist(), "k": int(max(1, min(k, len(bank))))}

    @staticmethod
    def score(features: np.ndarray, logits: np.ndarray | None, params: Mapping[str, Any]) -> np.ndarray:
        bank = _normalised(np.asarray(params["bank"], dtype=np.float64))
        queries = _normalised(_rows(features))
        # |a - b|^2 = 2 - 2 a.b for unit vectors; the k-th smallest distance of each row.
        squared = np.maximum(2.0 - 2.0 * queries @ bank.T, 0.0)
        k = int(params["k"])
        return np.sqrt(np.partition(squared, k - 1, axis=1)[:, k - 1])


@register("energy", "energy -logsumexp of the classical heads' mean logits (Liu et al. 2020)",
          needs_logits=True)
class Energy:
    @staticmethod
    def fit(features: np.ndarray, logits: np.ndarray | None = None) -> dict[str, Any]:
        return {"temperature": 1.0}

    @staticmethod
    def score(features: np.ndarray, logits: np.ndarray | None, params: Mapping[str, Any]) -> np.ndarray:
        temperature = float(params.get("temperature", 1.0))
        return -temperature * logsumexp(_rows(logits) / temperature, axis=1)


@register("vim", "ViM: alpha x the features' residual outside the training principal subspace, "
          "minus the logits' logsumexp (Wang et al. 2022)", needs_logits=True)
class VirtualLogit:
    @staticmethod
    def fit(features: np.ndarray, logits: np.ndarray | None = None) -> dict[str, Any]:
        return fit_vim(features, logits)

    @staticmethod
    def score(features: np.ndarray, logits: np.ndarray | None, params: Mapping[str, Any]) -> np.ndarray:
        return vim_score(features, logits, params)


def fit_vim(
    features: np.ndarray, logits: np.ndarray, principal: int | None = None,
    origin: np.ndarray | None = None,
) -> dict[str, Any]:
    """ViM's origin, residual basis and ``alpha``, as pytorch-ood fits them.

    ``principal``: the principal subspace's dimension (default half the feature width);
    ``origin``: default the training mean.
    """
    train = np.asarray(features, dtype=np.float64)
    width = train.shape[1]
    principal = width // 2 if principal is None or principal >= width else principal
    origin = train.mean(axis=0) if origin is None else np.asarray(origin, dtype=np.float64)
    centred = train - origin
    _, vectors = np.linalg.eigh(centred.T @ centred / len(centred))  # ascending eigenvalues
    residual = vectors[:, : width - principal]
    norms = np.linalg.norm(centred @ residual, axis=1)
    alpha = float(np.asarray(logits, dtype=np.float64).max(axis=1).mean() / max(norms.mean(), 1e-12))
    return {"origin": origin.tolist(), "residual": residual.tolist(), "alpha": alpha,
            "principal": int(principal)}


def vim_score(features: np.ndarray, logits: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """ViM's outlier score: ``alpha * |residual| - logsumexp(logits)``."""
    centred = _rows(features) - np.asarray(params["origin"], dtype=np.float64)
    residual = np.linalg.norm(centred @ np.asarray(params["residual"], dtype=np.float64), axis=1)
    return float(params["alpha"]) * residual - logsumexp(_rows(logits), axis=1)


# --- the feature space ---------------------------------------------------------------------------


def ood_space(ood: Mapping[str, Any]) -> str:
    """The feature space a saved gate scores: ``encoder`` or ``compressed`` (a gate saved before
    the space was recorded: it was fitted on the compressed features).

    Raises:
        ConfigError: the saved space is neither.
    """
    space = ood.get("space", COMPRESSED_SPACE)
    if space not in SPACE_OUTPUTS:
        raise ConfigError(
            f"the saved out-of-distribution gate scores the {space!r} features, which this version "
            f"does not know ({', '.join(SPACE_OUTPUTS)}); refit it: `kedro run --pipelines ensemble`"
        )
    return space


def features_output(gates: Mapping[str, Any] | None) -> str | None:
    """The graph output (:data:`SPACE_OUTPUTS`) whose row a saved gate's out-of-distribution score
    reads, or None for a gate without one."""
    ood = (gates or {}).get("ood")
    return None if ood is None else SPACE_OUTPUTS[ood_space(ood)]


def fit_projection(features: np.ndarray, limit: int = MAX_GATE_WIDTH) -> dict[str, Any] | None:
    """The top principal components (at most ``limit``) of ``features`` wider than ``limit``, as
    ``{"mean", "components"}`` (plain lists); None when they are no wider."""
    train = np.asarray(features, dtype=np.float64)
    if train.ndim != 2 or train.shape[1] <= limit:
        return None
    mean = train.mean(axis=0)
    _, _, vectors = np.linalg.svd(train - mean, full_matrices=False)
    return {"mean": mean.tolist(), "components": vectors[:limit].tolist()}


def project(features: np.ndarray, projection: Mapping[str, Any] | None) -> np.ndarray:
    """``features`` on the saved principal components, or as they are without a projection."""
    if projection is None:
        return features
    centred = _rows(features) - np.asarray(projection["mean"], dtype=np.float64)
    return centred @ np.asarray(projection["components"], dtype=np.float64).T


# --- the threshold ------------------------------------------------------------------------------


def conformal_threshold(
    scores: np.ndarray, pass_rate: float, confidence: float | None = None
) -> tuple[float, int, bool]:
    """``(threshold, rank, guaranteed)``: the ``rank``-th smallest of the ``n`` validation ``scores``.

    The share of new photographs (exchangeable with the validation ones) whose score is at most
    the ``k``-th smallest of ``n`` is Beta(k, n + 1 - k)-distributed (split conformal prediction).
    With ``confidence`` None the rank is ``ceil((n + 1) * pass_rate)``: at least ``pass_rate`` pass
    *on average*. With a ``confidence`` the rank is the smallest ``k`` with
    ``P(share < pass_rate) <= 1 - confidence`` (Vovk's training-conditional guarantee): with that
    probability over the draw of the validation split, at least ``pass_rate`` pass. A small split
    needs a high rank; where even ``k = n`` cannot promise it, the largest score is used and
    ``guaranteed`` is False. The plain ``pass_rate`` quantile of a small split lets fewer through.
    """
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    count = len(ordered)
    if confidence is None:
        rank = math.ceil((count + 1) * pass_rate - 1e-9)
        guaranteed = rank <= count
    else:
        ranks = np.arange(1, count + 1)
        promised = beta.cdf(pass_rate, ranks, count + 1 - ranks) <= 1.0 - confidence
        guaranteed = bool(promised.any())
        rank = int(ranks[promised][0]) if guaranteed else count
    rank = max(1, min(rank, count))
    return float(ordered[rank - 1]), rank, guaranteed


# --- the saved check ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OodSplits:
    """What the detectors are fitted on: the training split's features in the gate's ``space``
    (and the classical heads' mean logits), and the validation split's, which rank the threshold."""

    train_features: np.ndarray
    val_features: np.ndarray
    train_logits: np.ndarray | None = None
    val_logits: np.ndarray | None = None
    space: str = COMPRESSED_SPACE


def fit_ood(
    splits: OodSplits, detector: str = "mahalanobis", pass_rate: float = 0.95,
    confidence: float | None = 0.9,
) -> dict[str, Any]:
    """Every detector that ``splits`` allows, each with its conformal threshold, and the one in
    use (``detector``), whose threshold is the gate's (``ood["threshold"]``). ``ood["space"]``
    and ``ood["features"]`` name the feature space and the graph output it scores; features
    wider than :data:`MAX_GATE_WIDTH` are first projected (``ood["projection"]``, module doc).

    Raises:
        ConfigError: ``detector`` is unknown, or needs the heads' logits and ``splits`` has none.
    """
    chosen = get_detector(detector)
    has_logits = splits.train_logits is not None and splits.val_logits is not None
    if chosen.needs_logits and not has_logits:
        raise ConfigError(
            f"gate.ood_detector: {detector} needs the classical heads' logits of the training "
            "and validation splits, which were not given to the gate; choose one of "
            + ", ".join(n for n, d in DETECTORS.items() if not d.needs_logits)
        )
    projection = fit_projection(splits.train_features)
    train = project(splits.train_features, projection)
    val = project(splits.val_features if len(splits.val_features) else splits.train_features, projection)
    val_logits = splits.val_logits if len(splits.val_features) else splits.train_logits
    fitted: dict[str, dict[str, Any]] = {}
    for name, candidate in DETECTORS.items():
        if candidate.needs_logits and not has_logits:
            continue
        params = candidate.fit(train, splits.train_logits)
        scores = candidate.score(val, val_logits, params)
        threshold, rank, guaranteed = conformal_threshold(scores, pass_rate, confidence)
        fitted[name] = {"params": params, "threshold": threshold, "rank": rank,
                        "guaranteed": guaranteed,
                        "validation_pass_rate": float(np.mean(scores <= threshold))}
    ood = {
        "detector": detector, "method": chosen.description, "space": splits.space,
        "features": SPACE_OUTPUTS[splits.space], "width": int(np.shape(splits.train_features)[1]),
        "projection": projection,
        **{key: fitted[detector][key] for key in ("threshold", "rank", "guaranteed", "validation_pass_rate")},
        "pass_rate": pass_rate, "confidence": confidence,
        "train_images": int(len(splits.train_features)), "validation_images": int(len(splits.val_features)),
        "detectors": fitted,
    }
    if not ood["guaranteed"]:
        logger.warning(
            "With %d validation photographs the out-of-distribution threshold cannot promise that "
            "%.0f%% of new in-distribution photographs pass (at %.0f%% confidence); it is the "
            "largest validation score (about %.1f%% pass on average). More validation images, "
            "or a lower gate.ood_pass_rate / gate.ood_confidence, make the promise possible.",
            len(val), 100 * pass_rate, 100 * (confidence or 0), 100 * len(val) / (len(val) + 1),
        )
    return ood


def ood_score(
    features: np.ndarray, ood: Mapping[str, Any], logits: np.ndarray | None = None,
    detector: str | None = None,
) -> np.ndarray:
    """The saved detector's (or ``detector``'s) score of each row of ``features``, which are in
    the gate's space (:func:`ood_space`); projected first when the gate saved a projection.

    Raises:
        ConfigError: the detector needs logits and none were given.
    """
    name = detector or ood["detector"]
    chosen = get_detector(name)
    if chosen.needs_logits and logits is None:
        raise ConfigError(f"the {name} out-of-distribution score needs the classical heads' logits")
    return chosen.score(project(features, ood.get("projection")), logits, ood["detectors"][name]["params"])
