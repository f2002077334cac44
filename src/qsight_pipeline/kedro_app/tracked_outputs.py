"""Which node outputs the experiment trackers log: chosen in the catalog, not by name in code.

A catalog entry is tracked when its metadata says what kind of record it holds::

    training_summary:
      type: ...
      metadata:
        qsight:
          track: summary

The kinds (:data:`TRACK_KINDS`) are what the hooks know how to log: ``history`` (a list of stage
summaries with their epoch records), ``summary`` (``training_summary``), ``model_info``,
``figures`` (a dict of matplotlib figures), ``report`` (the HTML page), ``table`` (a pandas
DataFrame, logged as CSV) and ``json`` (any other JSON-able record, logged under its entry name). Renaming an output in
``conf/*/catalog*.yml`` keeps it tracked, and an output without this metadata is never logged.

Kedro-light: it only reads the metadata of datasets the catalog already made.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from qsight_pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

METADATA_KEY = "qsight"
TRACK_KINDS: tuple[str, ...] = (
    "history", "summary", "model_info", "figures", "report", "table", "json",
)


def track_kind_of(metadata: Any, dataset_name: str = "?") -> str | None:
    """The ``metadata.qsight.track`` kind of a catalog entry, or ``None`` when it is not tracked.

    Raises:
        ConfigError: the kind is not one of :data:`TRACK_KINDS`.
    """
    if not isinstance(metadata, dict):
        return None
    kind = (metadata.get(METADATA_KEY) or {}).get("track")
    if kind is None or kind is False:
        return None
    if kind not in TRACK_KINDS:
        raise ConfigError(
            f"Catalog entry {dataset_name!r} has metadata.{METADATA_KEY}.track={kind!r}; use one "
            f"of {', '.join(TRACK_KINDS)} (or remove it to leave the output untracked)."
        )
    return kind


class TrackedOutputs:
    """Looks up, once per dataset name, how the hooks should log a node output.

    Built from the run's catalog in ``before_pipeline_run``; without a catalog nothing is tracked.
    """

    def __init__(self, catalog: Any = None, dataset_names: Iterable[str] = ()) -> None:
        """Check the ``track`` metadata of ``dataset_names`` (the pipeline's datasets) up front,
        so that a typo in a catalog file stops the run before the first node, not after it."""
        self._catalog = catalog
        self._kinds: dict[str, str | None] = {}
        for name in dataset_names:
            self._kinds[name] = track_kind_of(self._configured_metadata(name), name)

    def kind(self, dataset_name: str) -> str | None:
        if dataset_name not in self._kinds:
            metadata = self._configured_metadata(dataset_name)
            if metadata is None:
                metadata = self._dataset_metadata(dataset_name)
            self._kinds[dataset_name] = track_kind_of(metadata, dataset_name)
        return self._kinds[dataset_name]

    def select(self, outputs: dict[str, Any]) -> dict[str, tuple[str, Any]]:
        """``{name: (kind, value)}`` for the tracked entries of a node's outputs."""
        kinds = {name: self.kind(name) for name in outputs}
        return {name: (kind, outputs[name]) for name, kind in kinds.items() if kind is not None}

    def _configured_metadata(self, dataset_name: str) -> Any:
        """The entry's metadata from the catalog's configuration (factory patterns resolved),
        without making the dataset."""
        resolver = getattr(self._catalog, "config_resolver", None)
        if resolver is None:
            return None
        try:
            config = resolver.resolve_pattern(dataset_name)
        except Exception:  # an odd catalog must not stop a training run over tracking
            logger.debug("Cannot resolve %s in the catalog", dataset_name, exc_info=True)
            return None
        return config.get("metadata") if isinstance(config, dict) else None

    def _dataset_metadata(self, dataset_name: str) -> Any:
        """The metadata of a dataset object added to the catalog in code (no configuration)."""
        if self._catalog is None:
            return None
        try:
            dataset = self._catalog.get(dataset_name)  # the node has just saved it
        except Exception:
            logger.debug("No dataset %s in the catalog", dataset_name, exc_info=True)
            return None
        return getattr(dataset, "metadata", None)
