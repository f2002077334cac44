"""Where each artifact comes from: one fingerprint per link of the chain, checked by every reader.

The chain, and what carries each id:

- ingestion writes one ``ingestion_id`` into the manifest (a column) and beside each image cache
  (``image_cache_<split>.lineage.json``; the ``.npy`` itself stays a plain memory-mappable array);
- ``phase1_classical_model.pth`` carries the ``ingestion_id`` of its data and its own
  ``classical_id`` (a digest of its weights);
- the feature cache and ``quantum_head.pth`` carry the ``classical_id`` they were made from;
- ``complete_checkpoint.pth`` carries the whole chain.

A reader that finds two artifacts of different origins (a kill between two saves, a stage
retrained alone) stops with a :class:`LineageError` naming both files and the command that
rebuilds them, instead of silently combining them.

This module imports neither Kedro nor torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qsight_pipeline.errors import ArtifactError
from qsight_pipeline.files.storage import atomic_write, readable_path

LINEAGE_KEY = "lineage"
INGESTION_ID_COLUMN = "ingestion_id"
MANIFEST_FILE = "data/03_primary/manifest.csv"
CLASSICAL_FILE = "phase1_classical_model.pth"
FEATURE_CACHE_FILE = "quantum_training_data.pkl"
QUANTUM_HEAD_FILE = "quantum_head.pth"

REBUILD_ALL = "`kedro run` (every pipeline, from ingestion)"
REBUILD_FROM_CLASSICAL = "`kedro run --pipelines classical,features,quantum,ensemble`"
REBUILD_FROM_FEATURES = "`kedro run --pipelines features,quantum,ensemble`"
REBUILD_FROM_QUANTUM = "`kedro run --pipelines quantum,ensemble`"


class LineageError(ArtifactError):
    """Two artifacts that are used together come from different runs."""


class LineageArray(np.ndarray):
    """An ndarray view that can carry a ``lineage`` attribute (plain ndarrays cannot)."""


# --------------------------------------------------------------------------- ids


def _digest(parts: Iterable[bytes | memoryview]) -> str:
    hasher = hashlib.sha256()  # hardware-accelerated on most CPUs: the fastest hashlib digest
    for part in parts:
        hasher.update(part)
    return hasher.hexdigest()[:20]


def ingestion_id(rows: Iterable[tuple], caches: Mapping[str, np.ndarray]) -> str:
    """A digest of the manifest rows and the decoded pixels: equal only for equal ingestions."""

    def parts() -> Iterable[bytes | memoryview]:
        for row in rows:
            yield repr(tuple(row)).encode()
        for split in sorted(caches):
            array = np.asarray(caches[split])
            yield f"{split}{array.shape}{array.dtype}".encode()
            # Chunked views, no copies, so a file-backed cache of several GB is read in pieces.
            for start in range(0, len(array), 256):
                yield memoryview(np.ascontiguousarray(array[start : start + 256])).cast("B")

    return "ing-" + _digest(parts())


def weights_id(state: Mapping[str, Any], parent: str) -> str:
    """A digest of a state dict's tensors (numpy arrays or CPU tensors) and of its parent id."""

    def parts() -> Iterable[bytes | memoryview]:
        yield parent.encode()
        for key in sorted(state):
            value = state[key]
            if hasattr(value, "detach"):  # a tensor: its raw bytes, whatever the dtype (bf16 ...)
                # lazy: kept out of kedro start-up
                import torch

                raw = value.detach().cpu().contiguous().reshape(-1)
                array = raw.view(torch.uint8).numpy()
                yield f"{raw.dtype}{tuple(value.shape)}".encode()
            else:
                array = np.asarray(value)
                yield f"{array.dtype}{array.shape}".encode()
            yield key.encode()
            yield memoryview(np.ascontiguousarray(array)).cast("B")

    return "cls-" + _digest(parts())


# --------------------------------------------------------------------------- arrays and sidecars


def tag(array: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """``array`` (no copy) carrying ``record`` as its ``lineage`` attribute."""
    return attach(array, record)


def attach(array: np.ndarray, record: dict[str, Any] | None) -> np.ndarray:
    if record is None:
        return array
    if not isinstance(array, np.memmap):  # np.memmap instances accept attributes; ndarray not
        array = array.view(LineageArray)
    array.lineage = dict(record)  # type: ignore[attr-defined]
    return array


def of(array: Any) -> dict[str, Any] | None:
    return getattr(array, LINEAGE_KEY, None)


# What a sidecar holds between a save's removal of the old record and its writing of the new one.
SUPERSEDED = b'{"lineage": null}\n'


def sidecar_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.lineage.json")


def write_sidecar(path: Path, record: dict[str, Any] | None) -> None:
    """Write the sidecar of ``path`` (atomically); for an untagged array, mark it as no record."""
    sidecar = sidecar_path(path)
    if record is None:
        # Not removed: the old record is replaced by one that says there is none, so that a
        # write never deletes a file (storage.remove_proven is the only way the project does).
        if sidecar.exists() or sidecar.is_symlink():
            atomic_write(sidecar, lambda handle: handle.write(SUPERSEDED))
        return

    atomic_write(sidecar, lambda handle: handle.write(json.dumps(record, indent=2).encode()))


def read_sidecar(path: Path) -> dict[str, Any] | None:
    sidecar = readable_path(sidecar_path(path))
    if not sidecar.is_file():
        return None
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"ingestion_id": "unreadable"}
    if record == json.loads(SUPERSEDED):
        return None
    return record if isinstance(record, dict) else {"ingestion_id": "unreadable"}


# --------------------------------------------------------------------------- checks


def manifest_ingestion_id(manifest: Any) -> str:
    """The one ingestion id of a manifest DataFrame (an error when it has none or several)."""
    if INGESTION_ID_COLUMN not in getattr(manifest, "columns", ()):
        raise LineageError(
            f"{MANIFEST_FILE} has no `{INGESTION_ID_COLUMN}` column: it was written by an older "
            f"version of the ingestion pipeline. Rebuild the data with {REBUILD_ALL}."
        )
    ids = sorted(set(manifest[INGESTION_ID_COLUMN].astype(str)))
    if len(ids) != 1:
        raise LineageError(
            f"{MANIFEST_FILE} mixes rows of {len(ids)} ingestions ({', '.join(ids[:3])}). "
            "Rebuild it with `kedro run --pipelines ingestion`."
        )
    return ids[0]


def _mismatch(first: str, second: str, found: tuple[Any, Any], command: str) -> LineageError:
    return LineageError(
        f"{first} and {second} come from different runs ({found[0]} vs {found[1]}), so using "
        f"them together would silently mix two trainings or two data sets. A run was probably "
        f"interrupted between the two saves, or one of them was rebuilt alone. Rebuild both with "
        f"{command}."
    )


def check_image_caches(manifest: Any, caches: Mapping[str, np.ndarray]) -> str:
    """Every image cache must come from the ingestion that wrote the manifest; returns its id."""
    expected = manifest_ingestion_id(manifest)
    for split, cache in caches.items():
        found = (of(cache) or {}).get("ingestion_id")
        if found != expected:
            raise _mismatch(
                MANIFEST_FILE, f"data/05_model_input/image_cache_{split}.npy "
                f"(its id is in image_cache_{split}.lineage.json)",
                (expected, found or "no lineage record"), "`kedro run --pipelines ingestion`",
            )
    return expected


def artifact_lineage(artifact: Mapping[str, Any], name: str, command: str) -> dict[str, Any]:
    """The ``lineage`` record of a checkpoint or cache dict (an error when it has none)."""
    record = artifact.get(LINEAGE_KEY) if isinstance(artifact, Mapping) else None
    if not isinstance(record, Mapping):
        raise LineageError(
            f"{name} carries no lineage record: it was written by an older version of this "
            f"project or by hand. Rebuild it with {command}."
        )
    return dict(record)


def check_same(
    first: tuple[str, Mapping[str, Any]], second: tuple[str, Mapping[str, Any]],
    key: str, command: str,
) -> str:
    """``first`` and ``second`` (``(file, lineage record)``) must agree on ``key``."""
    (first_name, first_record), (second_name, second_record) = first, second
    a, b = first_record.get(key), second_record.get(key)
    if a is None or a != b:
        raise _mismatch(first_name, second_name, (a, b), command)
    return str(a)


def in_dir(folder: str | os.PathLike | None, name: str) -> str:
    """``folder/name`` for messages (just ``name`` when the folder is unknown)."""
    return str(Path(folder) / name) if folder else name


# --------------------------------------------------------------------------- the chain, per reader


def stamp_classical(checkpoint: dict[str, Any], ingestion: str) -> dict[str, Any]:
    """Add ``lineage`` (its data's ingestion id and its own weights digest) to a classical model."""
    checkpoint[LINEAGE_KEY] = {
        "ingestion_id": ingestion,
        "classical_id": weights_id(checkpoint["model_state"], ingestion),
    }
    return checkpoint


def classical_for_manifest(classical: Mapping[str, Any], manifest: Any, output_dir: Any) -> dict:
    """The classical model must have been trained on the data the manifest describes."""
    name = in_dir(output_dir, CLASSICAL_FILE)
    record = artifact_lineage(classical, name, REBUILD_FROM_CLASSICAL)
    check_same(
        (name, record), (MANIFEST_FILE, {"ingestion_id": manifest_ingestion_id(manifest)}),
        "ingestion_id", REBUILD_FROM_CLASSICAL,
    )
    return record


def feature_cache_record(cache: Mapping[str, Any], output_dir: Any = None) -> dict[str, Any]:
    metadata = cache.get("metadata") if isinstance(cache, Mapping) else None
    return artifact_lineage(
        metadata if isinstance(metadata, Mapping) else {},
        in_dir(output_dir, FEATURE_CACHE_FILE), REBUILD_FROM_FEATURES,
    )


def classical_for_feature_cache(
    classical: Mapping[str, Any], cache: Mapping[str, Any], output_dir: Any
) -> dict[str, Any]:
    """The encoder of ``classical`` must be the one the feature cache was computed with."""
    classical_name = in_dir(output_dir, CLASSICAL_FILE)
    cache_name = in_dir(output_dir, FEATURE_CACHE_FILE)
    cache_record = feature_cache_record(cache, output_dir)
    check_same(
        (classical_name, artifact_lineage(classical, classical_name, REBUILD_FROM_CLASSICAL)),
        (cache_name, cache_record), "classical_id", REBUILD_FROM_FEATURES,
    )
    return cache_record


def quantum_head_for_feature_cache(
    quantum_head: Mapping[str, Any], cache: Mapping[str, Any], output_dir: Any
) -> None:
    """``quantum_head.pth`` must have been trained on this feature cache's classical model."""
    head_name = in_dir(output_dir, QUANTUM_HEAD_FILE)
    check_same(
        (head_name, artifact_lineage(quantum_head, head_name, REBUILD_FROM_QUANTUM)),
        (in_dir(output_dir, FEATURE_CACHE_FILE), feature_cache_record(cache, output_dir)),
        "classical_id", REBUILD_FROM_QUANTUM,
    )


def check_pipeline_inputs(inputs: Collection[str], load: Any, output_dir: Any) -> int:
    """Before the first node: check every pair of lineage-carrying artifacts that the pipeline
    reads from disk (``inputs``, loaded with ``load(name)``). Returns the number of pairs checked.

    Pairs that a run rebuilds itself are checked by the nodes as they read them.
    """
    caches = [f"image_cache_{split}" for split in ("train", "val", "test")]
    checked = 0
    if "manifest" in inputs and any(c in inputs for c in caches):
        check_image_caches(load("manifest"), {c.rsplit("_", 1)[-1]: load(c) for c in caches if c in inputs})
        checked += 1
    if {"manifest", "phase1_classical_model"} <= set(inputs):
        classical_for_manifest(load("phase1_classical_model"), load("manifest"), output_dir)
        checked += 1
    if {"phase1_classical_model", "quantum_training_data"} <= set(inputs):
        classical_for_feature_cache(
            load("phase1_classical_model"), load("quantum_training_data"), output_dir
        )
        checked += 1
    if {"quantum_head", "quantum_training_data"} <= set(inputs):
        quantum_head_for_feature_cache(load("quantum_head"), load("quantum_training_data"), output_dir)
        checked += 1
    return checked
