"""Epoch checkpoints for resume: file names, RNG state capture, atomic save, finding where to resume.

One checkpoint is one dict (nanoGPT style) written atomically after every epoch as
``stage_<name>_epoch_<n>.pth``. It holds everything needed to continue *exactly* where the run
stood: model, optimizer and GradScaler states, the Python / NumPy / torch (and CUDA) RNG states,
the DataLoader generators' states, the stage history, the best epoch's weights and the patience
counter. Only plain containers and tensors go in, so ``torch.load(weights_only=True)`` reads it.

A checkpoint carries the run's fingerprint; a file from another run (other data, model, schedule
or seed) is never resumed from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qsight_pipeline.errors import ArtifactError
from qsight_pipeline.files.plain import to_plain
from qsight_pipeline.files.safe_files import safe_torch_load
from qsight_pipeline.files.storage import atomic_torch_save
from qsight_pipeline.training.stages import Stage

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "qsight.stage_checkpoint/1"


def fingerprint(*parts: Any) -> str:
    """A short hash of what a training run depends on; a checkpoint is resumed only on a match.

    Dataclasses and pydantic models hash by their fields; anything JSON cannot write hashes by
    its ``str``.
    """

    text = json.dumps(to_plain(list(parts)), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_path(checkpoint_dir: str | Path, stage_name: str, epoch: int) -> Path:
    """The guide's name: ``stage_<name>_epoch_<n>.pth``."""
    return Path(checkpoint_dir) / f"stage_{stage_name}_epoch_{epoch}.pth"


def _loader_generators(loaders: Iterable[Any]) -> list[torch.Generator]:
    """The torch.Generators that decide a loader's order (its own and its sampler's), deduplicated.

    ``DataLoader(shuffle=True, generator=g)`` hands ``g`` to its RandomSampler, so usually there is
    one. A loader without a generator draws its shuffle seed from the global torch RNG, which is
    captured separately.
    """
    found: list[torch.Generator] = []
    for loader in loaders:
        candidates = [
            getattr(loader, "generator", None),
            getattr(getattr(loader, "sampler", None), "generator", None),
            getattr(
                getattr(getattr(loader, "batch_sampler", None), "sampler", None), "generator", None
            ),
        ]
        for generator in candidates:
            if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
                found.append(generator)
    return found


def capture_rng_state(loaders: Sequence[Any] = ()) -> dict[str, Any]:
    """Every RNG the training loop draws from, as plain lists and tensors."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [
            np_name,
            torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        ],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loaders": [generator.get_state() for generator in _loader_generators(loaders)],
    }
    return state


def restore_rng_state(state: dict[str, Any], loaders: Sequence[Any] = ()) -> None:
    """Undo :func:`capture_rng_state`; the loaders must be built the same way as when captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state(
        (np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss)
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)
    generators = _loader_generators(loaders)
    saved = state.get("loaders", [])
    if len(saved) != len(generators):
        logger.warning(
            "The checkpoint saved %d DataLoader generator state(s) but the loaders now have %d; "
            "the resumed data order may differ from an uninterrupted run. Build the loaders the "
            "same way (e.g. DataLoader(..., generator=torch.Generator().manual_seed(seed))).",
            len(saved),
            len(generators),
        )
    for generator, generator_state in zip(generators, saved, strict=False):
        generator.set_state(generator_state)


def save_checkpoint(checkpoint: dict[str, Any], checkpoint_dir: str | Path) -> Path:
    """Write ``checkpoint`` atomically to its ``stage_<name>_epoch_<n>.pth``."""
    path = checkpoint_path(checkpoint_dir, checkpoint["stage_name"], checkpoint["epoch"])
    atomic_torch_save({"format": CHECKPOINT_FORMAT, **checkpoint}, path)
    return path


def _epoch_files(checkpoint_dir: Path, stage_name: str) -> list[tuple[int, Path]]:
    # re.escape: a stage name may hold '.', and an unescaped pattern could match another stage.
    pattern = re.compile(rf"^stage_{re.escape(stage_name)}_epoch_(\d+)\.pth$")
    found = []
    for path in checkpoint_dir.iterdir():
        match = pattern.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def find_resume_checkpoint(
    checkpoint_dir: str | Path, stages: Sequence[Stage], fingerprint: str
) -> dict[str, Any] | None:
    """The newest checkpoint of this run (matching ``fingerprint``), loaded, or ``None``.

    Files are tried newest first (latest stage, then highest epoch). Unreadable files and files
    of another run are skipped with a warning, so a stale or damaged file is never trusted.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return None
    foreign: list[str] = []
    for index in reversed(range(len(stages))):
        for _epoch, path in _epoch_files(checkpoint_dir, stages[index].name):
            try:
                # mmap: only the fields we look at are read, so skipping a big stale file is cheap.
                checkpoint = safe_torch_load(path, what="stage checkpoint", mmap=True)
            except (ArtifactError, OSError) as error:  # must not stop a run from starting
                # Not the reader's own text: torch's suggests loading the file unsafely.
                logger.warning(
                    "Ignoring unreadable checkpoint %s: it is damaged or holds something other than tensors "
                    "and plain data (%s), so it was not loaded; this run starts that stage afresh.",
                    path, type(error.__cause__ or error).__name__,
                )
                continue
            if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
                logger.warning("Ignoring %s: not a QSight stage checkpoint", path)
                continue
            if (
                checkpoint.get("fingerprint") != fingerprint
                or checkpoint.get("stage_index") != index
            ):
                foreign.append(path.name)
                continue
            if foreign:
                logger.warning(
                    "Ignored %d checkpoint(s) from a different run (data, model, schedule or seed "
                    "changed): %s",
                    len(foreign),
                    ", ".join(foreign[:5]),
                )
            return checkpoint
    if foreign:
        logger.warning(
            "Checkpoints in %s come from a different run (data, model, schedule or seed changed): "
            "%s; starting fresh.",
            checkpoint_dir,
            ", ".join(foreign[:5]),
        )
    return None
