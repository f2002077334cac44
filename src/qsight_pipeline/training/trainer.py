"""The staged trainer: one loop for image stages and feature-cache stages.

Read top to bottom: ``train_stages`` prepares the run (device, class weights, resume point) and
runs each stage with ``_train_stage``, whose epoch loop is ``_train_and_validate`` (a training
pass, ``_train_epoch``, then a validation pass, ``_evaluate_pass``) -> early-stopping bookkeeping
(``_StageProgress.observe``) -> ``_save_stage_checkpoint`` -> callback. ``_forward`` is the only
place a batch meets the model and ``_optimizer_step`` the only place weights change: autocast,
loss, gradient scaling, clipping and the step are a few lines each. Latency is timed from the
outside (``training.latency.track_latency``).

Resume and determinism: with ``checkpoint_dir`` set, every epoch is checkpointed atomically with
all RNG states. Re-running the same call continues after the last finished epoch and, on CPU with
the same seed, ends with exactly the same weights and metrics as an uninterrupted run. For that
the caller must build the loaders the same way each time: a shuffled loader should get its own
``torch.Generator`` (e.g. ``DataLoader(..., generator=torch.Generator().manual_seed(seed))``),
whose state the checkpoint saves and restores; a loader without one draws its order from the
global torch RNG, which is restored too. With ``num_workers > 0`` worker seeds derive from the same
generator, so the order still matches; augmentation inside workers follows the worker seeds.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ConfigDict
from torch import nn
from tqdm.auto import tqdm

from qsight_pipeline.config import validate_block
from qsight_pipeline.config.run import RunSettings
from qsight_pipeline.constants import (
    ENCODER,
    ENSEMBLE,
    HEAD_A,
    HEAD_B,
    HEADS,
    MODEL_PARTS,
    NUM_GRADES,
)
from qsight_pipeline.models.class_weights import balanced_class_weights
from qsight_pipeline.training.checkpoints import (
    capture_rng_state,
    find_resume_checkpoint,
    fingerprint,
    restore_rng_state,
    save_checkpoint,
)
from qsight_pipeline.training.devices import (
    autocast_dtype,
    autocast_enabled,
    maybe_data_parallel,
    resolve_device,
)
from qsight_pipeline.training.distributed import (
    RankInfo,
    current_rank,
    gather,
    set_sampler_epoch,
    wrap_model,
)
from qsight_pipeline.training.guards import LossGuard
from qsight_pipeline.training.host_memory import PeriodicTrim
from qsight_pipeline.training.latency import LATENCY_SAMPLE_LIMIT, LatencyTracker, track_latency
from qsight_pipeline.training.metrics import grading_metrics, quadratic_weighted_kappa
from qsight_pipeline.training.stages import GATE_ENTROPY, LOSS_KEY_FOR_HEAD, Stage, parse_stages

logger = logging.getLogger(__name__)

_EPS = 1e-8


class TrainerSettings(RunSettings):
    """The run-wide settings (:class:`qsight_pipeline.config.RunSettings`, where every training
    knob is defined, with its type, range and default) plus three things a caller plugs into the
    loop, which are not configuration:

    Attributes:
        epoch_callback: called with each epoch record, after that epoch's checkpoint is written.
        image_transform: ``f(images, training) -> images`` applied to every image batch on the
            device before the model, e.g. ``data.device_augment.BatchAugmentation``.
        progress: show a tqdm bar per epoch (hidden anyway when stderr is not a terminal).
        run_fingerprint: what the run depends on (data, model config, ...); a checkpoint in
            ``checkpoint_dir`` is resumed only when it carries the same fingerprint (combined
            with the schedule and the settings that change the result).

    Build one from a validated block with :meth:`from_run` (no second validation), or from plain
    parameters with :meth:`from_params`; ``settings.model_copy(update=...)`` changes a field.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    epoch_callback: Callable[[dict[str, Any]], None] | None = None
    progress: bool = True
    image_transform: Callable[[torch.Tensor, bool], torch.Tensor] | None = None
    run_fingerprint: str = ""

    @classmethod
    def from_run(cls, run: RunSettings, **extras: Any) -> TrainerSettings:
        """``run`` (already validated) with the caller's ``extras``."""
        return cls.model_construct(**{**dict(run), **extras})

    @classmethod
    def from_params(cls, run: Mapping[str, Any], **extras: Any) -> TrainerSettings:
        """The ``run`` block as written (a mapping), validated by ``config.RunSettings``: a bad
        or unknown key is a ConfigError naming ``run.<key>``."""
        return cls.from_run(validate_block(RunSettings, run, "run"), **extras)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices), and ask cuDNN for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


# --------------------------------------------------------------------------- the stage loop


@dataclass
class _Run:
    """What every pass of one ``train_stages`` / ``evaluate`` call shares."""

    model: nn.Module
    net: nn.Module  # the model, or its DataParallel wrapper: what batches go through
    settings: TrainerSettings
    device: torch.device
    use_amp: bool
    amp_dtype: torch.dtype | None = None  # None: autocast's default for the device
    channels_last: bool = False
    class_weights: torch.Tensor | None = None
    train_loader: Any = None
    val_loader: Any = None
    tracker: LatencyTracker | None = None
    fingerprint: str = ""
    rank: RankInfo | None = None  # set inside a DDP worker (training.distributed)

    @property
    def is_writer(self) -> bool:
        """Only one process writes checkpoints: the only one, or DDP's writer rank."""
        return self.rank is None or self.rank.is_writer

    @property
    def eval_net(self) -> nn.Module:
        # Every DDP rank evaluates the whole validation set with its (identical) weights, so
        # validation metrics and early stopping agree everywhere without DDP's collectives.
        return self.model if self.rank is not None else self.net


@dataclass(frozen=True)
class _Pass:
    """One pass over a loader: its stage (``None``: plain evaluation), active heads and label."""

    stage: Stage | None
    active: tuple[bool, bool, bool]
    desc: str = ""
    keep_outputs: bool = False

    @property
    def heads(self) -> list[str]:
        return [head for head, flag in zip(HEADS, self.active, strict=True) if flag]

    def named(self, desc: str) -> _Pass:
        return dataclasses.replace(self, desc=desc)


@dataclass
class _StageProgress:
    """Where a stage stands: epoch history, best epoch so far, and the patience counter."""

    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best: dict[str, Any] | None = None  # {"epoch", "kappa", "loss", "val", "state"}
    bad_epochs: int = 0
    first_epoch: int = 1
    done: bool = False

    def observe(self, epoch: int, val_record: Mapping[str, Any], model: nn.Module) -> None:
        """Early-stopping bookkeeping: keep the best epoch (ensemble QWK, ties -> lower loss)."""
        kappa, loss = val_record[ENSEMBLE]["kappa"], val_record[ENSEMBLE]["loss"]
        best = self.best
        if (
            best is None
            or kappa > best["kappa"]
            or (kappa == best["kappa"] and loss < best["loss"])
        ):
            self.best = {"epoch": epoch, "kappa": kappa, "loss": loss, "val": val_record}
            self.best["state"] = _cpu_state(model)
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1

    def patience_exhausted(self, patience: int) -> bool:
        return patience > 0 and self.bad_epochs >= patience


@dataclass
class _StageRun:
    """One stage in progress: its place in the schedule, optimizer and progress."""

    index: int
    stage: Stage
    batches: _Pass
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    params: list[nn.Parameter]
    progress: _StageProgress
    completed: list[dict[str, Any]]  # summaries of the stages before this one
    guard: LossGuard  # stops the stage on a non-finite or exploding loss or gradient


def train_stages(
    model: nn.Module,
    stages: Sequence[Stage | Mapping[str, Any]],
    train_loader: Any,
    val_loader: Any,
    settings: TrainerSettings,
    *,
    class_counts: Sequence[int] | np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` through ``stages`` and return one summary per stage.

    Each summary is ``{"name", "epochs_run", "best_epoch", "stopped_early", "best_val",
    "history", "latency_samples_ms"}`` (docs/architecture.md). After each stage the model holds the
    weights of that stage's best validation epoch (ensemble QWK, ties -> lower ensemble loss).

    Loader batches are either images (``{"image", "grade"}``), a frozen encoder's embeddings
    (``{"embedding", "grade"}``, for stages that do not train the encoder) or cached features
    (``{"compressed", "grade"}`` with optional ``logits_head_a``/``logits_head_b``, used for the
    heads a stage keeps frozen). A stage that trains the encoder needs images; one that trains
    the compression module needs images or embeddings.

    Args:
        class_counts: training-set count per grade, for ``class_balanced_loss``; when ``None``
            the counts are read from ``train_loader.dataset.grades`` if it has them.
        settings: ``settings.run_fingerprint`` says what the run depends on; a checkpoint is
            resumed only when it carries the same fingerprint.
    """
    stages = parse_stages(list(stages))
    seed_everything(settings.seed)
    run = _start_run(model, train_loader, val_loader, settings, class_counts)
    run.fingerprint = _run_fingerprint(
        settings.run_fingerprint, stages, settings, run.class_weights
    )
    resume = _find_resume(run, stages)
    summaries: list[dict[str, Any]] = list(resume["completed"]) if resume else []
    first_stage = resume["stage_index"] if resume else 0

    with track_latency(model, run.tracker):
        for index in range(first_stage, len(stages)):
            stage_resume = resume if resume is not None and resume["stage_index"] == index else None
            summaries.append(_train_stage(run, index, stages[index], summaries, stage_resume))
    if resume is not None and first_stage == len(stages) - 1 and resume["stage_done"]:
        logger.info(
            "Every stage was already finished in %s; restored the final weights without training.",
            settings.checkpoint_dir,
        )
    return summaries


def _start_run(
    model: nn.Module,
    train_loader: Any,
    val_loader: Any,
    settings: TrainerSettings,
    class_counts: Sequence[int] | np.ndarray | None,
) -> _Run:
    """Device, optional DataParallel, autocast, class weights and latency tracker for a run.

    Inside a DDP worker the device is the worker's own and the model is wrapped per stage.
    """
    rank = current_rank()
    device = rank.device if rank is not None else resolve_device(settings.device)
    model.to(device)
    channels_last = _channels_last(settings, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net = model if rank is not None else _data_parallel(model, settings, device)
    return _Run(
        model=model,
        net=net,
        settings=settings,
        device=device,
        use_amp=autocast_enabled(settings.mixed_precision, device),
        amp_dtype=autocast_dtype(device),
        channels_last=channels_last,
        class_weights=_class_weights(settings, class_counts, train_loader, device),
        train_loader=train_loader,
        val_loader=val_loader,
        tracker=LatencyTracker() if settings.latency_tracking else None,
        rank=rank,
    )


def _channels_last(settings: TrainerSettings, device: torch.device) -> bool:
    if settings.channels_last is None:
        return device.type == "cuda"
    return settings.channels_last


def _data_parallel(model: nn.Module, settings: TrainerSettings, device: torch.device) -> nn.Module:
    net = maybe_data_parallel(model, settings.multi_gpu, settings.device_ids, device)
    return _compiled(net, settings)


def _compiled(net: nn.Module, settings: TrainerSettings) -> nn.Module:
    if not settings.compile:
        return net
    logger.info("Compiling the model with torch.compile (the first batches are slower)")
    return torch.compile(net)


def _find_resume(run: _Run, stages: Sequence[Stage]) -> dict[str, Any] | None:
    """The checkpoint to continue from, or ``None`` (no directory, resume off, or none matches)."""
    settings = run.settings
    if not (settings.checkpoint_dir and settings.resume):
        return None
    resume = find_resume_checkpoint(settings.checkpoint_dir, stages, run.fingerprint)
    if resume is not None:
        logger.info(
            "Resuming from checkpoint of stage %r epoch %d in %s",
            resume["stage_name"],
            resume["epoch"],
            settings.checkpoint_dir,
        )
        saved, now = resume.get("torch_threads"), torch.get_num_threads()
        if run.device.type == "cpu" and saved is not None and saved != now:
            logger.warning(
                "The checkpoint was written by a run with %d torch thread(s) and this run has %d: "
                "it continues from there, but with another thread count the CPU sums in another "
                "order, so its numbers will not be those of an uninterrupted run "
                "(OMP_NUM_THREADS=%d resumes as it was written).",
                saved, now, saved,
            )
    return resume


def _train_stage(
    run: _Run,
    index: int,
    stage: Stage,
    completed: list[dict[str, Any]],
    resume: dict[str, Any] | None,
) -> dict[str, Any]:
    """Run one stage's epochs with early stopping; returns the stage summary."""
    current = _begin_stage(run, index, stage, completed)
    progress = current.progress
    if resume is not None:
        progress = current.progress = _restore_stage(run, current, resume)
    elif run.tracker is not None:
        run.tracker.clear()
    _log_stage_start(current)

    for epoch in range(progress.first_epoch, stage.num_epochs + 1):
        if progress.done:
            break
        record = _train_and_validate(run, current, epoch)
        stop_early = progress.patience_exhausted(stage.patience)
        progress.done = stop_early or epoch == stage.num_epochs
        _log_epoch(stage, record, progress)
        if run.settings.checkpoint_dir and run.is_writer:
            _save_stage_checkpoint(run, current, epoch)
        if run.settings.epoch_callback is not None:
            run.settings.epoch_callback(record)
        if stop_early:
            logger.info(
                "%s: no better validation QWK for %d epoch(s); stopping early",
                stage.name,
                progress.bad_epochs,
            )
            break
    return _finish_stage(run, stage, progress)


def _begin_stage(run: _Run, index: int, stage: Stage, completed: list[dict[str, Any]]) -> _StageRun:
    """Freeze what the stage keeps fixed and build its optimizer and gradient scaler."""
    active = _stage_mask(run.model, stage)
    params = _freeze_for_stage(run.model, stage)
    if run.rank is not None:  # DDP registers the parameters that require gradients now
        run.net = _compiled(wrap_model(run.model, run.rank), run.settings)
    return _StageRun(
        index=index,
        stage=stage,
        batches=_Pass(stage, active),
        optimizer=torch.optim.AdamW(
            params, lr=stage.learning_rate, weight_decay=stage.weight_decay
        ),
        # bfloat16 has float32's range: no loss scaling needed.
        scaler=torch.amp.GradScaler(
            run.device.type, enabled=run.use_amp and run.amp_dtype != torch.bfloat16
        ),
        params=params,
        progress=_StageProgress(),
        completed=completed,
        guard=LossGuard(stage.name),
    )


def _train_and_validate(run: _Run, current: _StageRun, epoch: int) -> dict[str, Any]:
    """One epoch: a training pass, a validation pass, the epoch record and best-epoch bookkeeping."""
    stage = current.stage
    started = time.perf_counter()
    mark = run.tracker.position() if run.tracker is not None else {}
    label = f"{stage.name} {epoch}/{stage.num_epochs}"
    train = _train_epoch(run, current, current.batches.named(label), epoch)
    val = _evaluate_pass(run, run.val_loader, current.batches.named(f"{label} val"))
    record = {
        "stage": stage.name,
        "epoch": epoch,
        "seconds": time.perf_counter() - started,
        "learning_rate": current.optimizer.param_groups[0]["lr"],
        "train": train["record"],
        "val": val["record"],
        "ensemble_weights": val["ensemble_weights"],
        "uncertainty": val["uncertainty"],
        "latency_ms": run.tracker.summary(since=mark) if run.tracker is not None else {},
    }
    current.progress.history.append(record)
    current.progress.observe(epoch, val["record"], run.model)
    return record


def _finish_stage(run: _Run, stage: Stage, progress: _StageProgress) -> dict[str, Any]:
    """Restore the best epoch's weights and summarise the stage."""
    best = progress.best
    assert best is not None  # num_epochs >= 1 is validated
    run.model.load_state_dict(best["state"])
    epochs_run = len(progress.history)
    logger.info(
        "Stage %r done: best epoch %d (val ensemble QWK %.3f), weights restored",
        stage.name,
        best["epoch"],
        best["kappa"],
    )
    tracker = run.tracker
    return {
        "name": stage.name,
        "epochs_run": epochs_run,
        "best_epoch": best["epoch"],
        "stopped_early": epochs_run < stage.num_epochs,
        "best_val": best["val"],
        "history": progress.history,
        "latency_samples_ms": tracker.samples(LATENCY_SAMPLE_LIMIT) if tracker is not None else {},
    }


# --------------------------------------------------------------------------- stage checkpoints


def _save_stage_checkpoint(run: _Run, current: _StageRun, epoch: int) -> None:
    """Everything needed to continue exactly after ``epoch`` (training.checkpoints)."""
    progress = current.progress
    best = progress.best
    assert best is not None
    save_checkpoint(
        {
            "fingerprint": run.fingerprint,
            "stage_index": current.index,
            "stage_name": current.stage.name,
            "epoch": epoch,
            "stage_done": progress.done,
            "model": run.model.state_dict(),
            "optimizer": current.optimizer.state_dict(),
            "scaler": current.scaler.state_dict(),
            "rng": capture_rng_state((run.train_loader, run.val_loader)),
            "torch_threads": torch.get_num_threads(),  # CPU results depend on it (docs: determinism)
            "history": progress.history,
            # Saving the best weights twice is wasteful when they are this epoch's.
            "best": {**best, "state": None if best["epoch"] == epoch else best["state"]},
            "bad_epochs": progress.bad_epochs,
            "completed": current.completed,
            "latency": run.tracker.state_dict() if run.tracker is not None else {},
        },
        run.settings.checkpoint_dir,
    )


def _restore_stage(run: _Run, current: _StageRun, resume: dict[str, Any]) -> _StageProgress:
    """Load a stage checkpoint into the model, optimizer, scaler, RNGs and tracker."""
    run.model.load_state_dict(resume["model"])
    current.optimizer.load_state_dict(resume["optimizer"])
    current.scaler.load_state_dict(resume["scaler"])
    restore_rng_state(resume["rng"], (run.train_loader, run.val_loader))
    if run.tracker is not None:
        run.tracker.load_state_dict(resume.get("latency") or {})
    best = dict(resume["best"])
    if best["state"] is None:  # the checkpointed epoch was the best one
        best["state"] = _cpu_state(run.model)
    return _StageProgress(
        history=list(resume["history"]),
        best=best,
        bad_epochs=resume["bad_epochs"],
        first_epoch=resume["epoch"] + 1,
        done=resume["stage_done"],
    )


# --------------------------------------------------------------------------- logging


def _log_stage_start(current: _StageRun) -> None:
    stage = current.stage
    logger.info(
        "Stage %r: %d epoch(s), lr %g, mask %s, training %s",
        stage.name,
        stage.num_epochs,
        stage.learning_rate,
        list(int(a) for a in current.batches.active),
        ", ".join(stage.trainable),
    )


def _log_epoch(stage: Stage, record: Mapping[str, Any], progress: _StageProgress) -> None:
    val = record["val"]
    logger.info(
        "%s epoch %d/%d: train loss %.4f | val loss %.4f, ensemble acc %.3f, QWK %.3f%s (%.1fs)",
        stage.name,
        record["epoch"],
        stage.num_epochs,
        record["train"]["loss"],
        val["loss"],
        val[ENSEMBLE]["accuracy"],
        val[ENSEMBLE]["kappa"],
        " *" if progress.best is not None and progress.best["epoch"] == record["epoch"] else "",
        record["seconds"],
    )


# --------------------------------------------------------------------------- passes over data


def _train_epoch(run: _Run, current: _StageRun, batches: _Pass, epoch: int) -> dict[str, Any]:
    """One optimisation pass over the training loader; returns what :class:`_PassStats` gives.

    Under DDP each rank trains on its shard and the statistics of all shards are combined.
    """
    _set_modes(run.model, batches.stage, training=True)
    if run.rank is not None:
        set_sampler_epoch(run.train_loader, epoch)
    stats, trim = _PassStats(batches), PeriodicTrim()
    with torch.enable_grad():
        where = f"{batches.stage.name} {epoch}/{batches.stage.num_epochs}"
        bar = _progress_bar(run.train_loader, batches.desc, run.settings)
        for batch_index, batch in enumerate(bar, 1):
            if batch["grade"].shape[0] == 1:
                # A one-image remainder batch makes BatchNorm fail in train mode and adds
                # nothing measurable to the epoch; skip it rather than ask for drop_last.
                continue
            out, grades, losses = _forward(run, run.net, batch, batches, training=True)
            _optimizer_step(current, losses["total"], run.settings.grad_clip, (where, batch_index))
            stats.add(out, grades, losses)
            trim.step()
    if run.rank is not None:
        stats.merge_ranks()
    return stats.result()


@torch.no_grad()
def _evaluate_pass(run: _Run, loader: Any, batches: _Pass) -> dict[str, Any]:
    """One pass over ``loader`` in eval mode; returns what :class:`_PassStats` gives."""
    _set_modes(run.model, batches.stage, training=False)
    stats, trim = _PassStats(batches), PeriodicTrim()
    for batch in _progress_bar(loader, batches.desc, run.settings):
        stats.add(*_forward(run, run.eval_net, batch, batches, training=False))
        trim.step()
    return stats.result()


def _progress_bar(loader: Any, desc: str, settings: TrainerSettings) -> Any:
    return tqdm(loader, desc=desc, leave=False, disable=None if settings.progress else True)


def _forward(
    run: _Run, net: nn.Module, batch: Mapping[str, Any], batches: _Pass, *, training: bool
) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """Model outputs, grades on the device, and the losses of one batch."""
    grades = batch["grade"].to(run.device, non_blocking=True)
    inputs = _model_inputs(batch, batches.stage, run.device)
    if "images" in inputs:
        inputs["images"] = _prepare_images(run, inputs["images"], training)
    with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.use_amp):
        out = net(**inputs, active_mask=batches.active)
    losses = _losses(out, grades, batches.heads, batches.stage, run.class_weights)
    return out, grades, losses


def _prepare_images(run: _Run, images: torch.Tensor, training: bool) -> torch.Tensor:
    """The optional on-device batch transform, then the memory layout the model was put in."""
    if run.settings.image_transform is not None:
        images = run.settings.image_transform(images, training)
    if run.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def _optimizer_step(
    current: _StageRun, loss: torch.Tensor, grad_clip: float, position: tuple[str, int]
) -> None:
    """Backward, optional clipping of the true (unscaled) gradients, the divergence guard, then
    the optimizer step (never taken on a non-finite loss or gradient)."""
    current.optimizer.zero_grad(set_to_none=True)
    current.scaler.scale(loss).backward()
    norm = None
    if grad_clip > 0:
        current.scaler.unscale_(current.optimizer)  # clip the true gradients, not the scaled ones
        norm = torch.nn.utils.clip_grad_norm_(current.params, grad_clip)
    where, batch_index = position
    current.guard.check_step(
        where, batch_index, loss.detach(), current.params, norm, current.scaler.is_enabled()
    )
    current.scaler.step(current.optimizer)
    current.scaler.update()


class _PassStats:
    """Losses, probabilities, labels and per-sample outputs of one pass, accumulated per batch.

    Everything stays on the device until the pass ends: reading a value back per batch would make
    the host wait for the GPU at every step. Loss sums are float64 tensors, which is the same
    arithmetic as the Python floats they become, so CPU results are unchanged to the bit.
    """

    def __init__(self, batches: _Pass) -> None:
        self.batches = batches
        self.heads = batches.heads
        self.loss_sums: dict[str, Any] = dict.fromkeys([*self.heads, ENSEMBLE, "total"], 0.0)
        self.probabilities: dict[str, list[torch.Tensor]] = {p: [] for p in [*self.heads, ENSEMBLE]}
        self.labels: list[torch.Tensor] = []
        self.extras: dict[str, list[torch.Tensor]] = {}
        self.count = 0

    def add(
        self,
        out: Mapping[str, torch.Tensor],
        grades: torch.Tensor,
        losses: Mapping[str, torch.Tensor],
    ) -> None:
        size = grades.shape[0]
        self.count += size
        for key, value in losses.items():
            self.loss_sums[key] = self.loss_sums[key] + value.detach().double() * size
        for head in self.heads:
            self.probabilities[head].append(out[f"logits_{head}"].detach().float().softmax(-1))
        self.probabilities[ENSEMBLE].append(out["fused_probs"].detach().float())
        self.labels.append(grades)
        kept = ["head_weights", "entropy", "disagreement"]
        if self.batches.keep_outputs:
            kept += ["compressed", *(f"logits_{h}" for h in self.heads)]
            if "encoder_features" in out:  # image or embedding batches, not cached features
                kept.append("encoder_features")
        for key in kept:
            self.extras.setdefault(key, []).append(out[key].detach().float())

    def _to_host(self) -> None:
        """One copy to the host per pass: the concatenated chunks and the loss sums."""

        def host(chunks: list[torch.Tensor]) -> list[torch.Tensor]:
            return [torch.cat(chunks).cpu()] if chunks else []

        self.loss_sums = {key: float(value) for key, value in self.loss_sums.items()}
        self.probabilities = {key: host(chunks) for key, chunks in self.probabilities.items()}
        self.labels = host(self.labels)
        self.extras = {key: host(chunks) for key, chunks in self.extras.items()}

    def merge_ranks(self) -> None:
        """Replace this rank's statistics by those of all DDP ranks, in rank order."""
        self._to_host()
        mine = (self.loss_sums, self.count, self.probabilities, self.labels, self.extras)
        everyone = gather(mine)
        self.loss_sums = {key: sum(r[0][key] for r in everyone) for key in self.loss_sums}
        self.count = sum(r[1] for r in everyone)
        self.probabilities = {k: [c for r in everyone for c in r[2][k]] for k in self.probabilities}
        self.labels = [chunk for r in everyone for chunk in r[3]]
        self.extras = {k: [c for r in everyone for c in r[4][k]] for k in self.extras}

    def result(self) -> dict[str, Any]:
        """``record`` (the epoch-record block: ``loss`` and per-head ``loss``/``accuracy``/
        ``kappa``), ``ensemble_weights``, ``uncertainty``, ``probabilities`` and ``labels``
        (numpy), and ``outputs`` (per-sample arrays; model outputs too with ``keep_outputs``)."""
        if self.count == 0:
            raise ValueError(
                f"{self.batches.desc or 'evaluation'}: the data loader yielded no batches"
            )
        self._to_host()
        y = torch.cat(self.labels).numpy()
        probs = {part: torch.cat(chunks).numpy() for part, chunks in self.probabilities.items()}
        record: dict[str, Any] = {"loss": self.loss_sums["total"] / self.count}
        for part in [*self.heads, ENSEMBLE]:
            predicted = probs[part].argmax(axis=1)
            record[part] = {
                "loss": self.loss_sums[part] / self.count,
                "accuracy": float((predicted == y).mean()),
                "kappa": quadratic_weighted_kappa(y, predicted),
            }
        outputs = {key: torch.cat(chunks).numpy() for key, chunks in self.extras.items()}
        mean_weights = outputs["head_weights"].mean(axis=0)
        return {
            "record": record,
            "probabilities": probs,
            "labels": y,
            "ensemble_weights": {head: float(mean_weights[i]) for i, head in enumerate(HEADS)},
            "uncertainty": {
                "entropy": float(outputs["entropy"].mean()),
                "disagreement": float(outputs["disagreement"].mean()),
            },
            "outputs": outputs,
        }


def _model_inputs(batch: Mapping[str, Any], stage: Stage | None, device: torch.device) -> dict:
    """Model keyword arguments for an image batch or a feature-cache batch."""
    if "image" in batch:
        return {"images": batch["image"].to(device, non_blocking=True)}
    if "embedding" in batch:  # the frozen encoder's rows (training.embedding_cache)
        if stage is not None and ENCODER in stage.trainable:
            raise ValueError(
                f"stage {stage.name!r} trains the encoder, which needs image batches, but the "
                "loader yields the frozen encoder's embeddings"
            )
        return {"embeddings": batch["embedding"].to(device, non_blocking=True)}
    if "compressed" not in batch:
        raise ValueError(
            f"a batch must hold `image` or `compressed` (and `grade`); got keys {sorted(batch)}"
        )
    if stage is not None and stage.runs_on_images:
        raise ValueError(
            f"stage {stage.name!r} trains {', '.join(stage.trainable)}, which needs image batches, "
            "but the loader yields cached features; run it in the `classical` pipeline"
        )
    trainable = stage.trainable if stage is not None else ()
    # Cached logits stand in for a head only while that head is frozen; a head being trained
    # must be recomputed so its gradient exists.
    head_logits = {
        head: batch[f"logits_{head}"].to(device, non_blocking=True)
        for head in (HEAD_A, HEAD_B)
        if head not in trainable and f"logits_{head}" in batch
    }
    return {
        "compressed": batch["compressed"].to(device, non_blocking=True),
        "head_logits": head_logits,
    }


def _losses(
    out: Mapping[str, torch.Tensor],
    grades: torch.Tensor,
    heads: Sequence[str],
    stage: Stage | None,
    class_weights: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """Per-head cross-entropy, the ensemble's NLL, and their ``loss_weights`` sum as ``total``,
    less ``loss_weights["gate_entropy"]`` times the gate weights' entropy (a bonus)."""
    losses = {
        head: F.cross_entropy(out[f"logits_{head}"].float(), grades, weight=class_weights)
        for head in heads
    }
    losses[ENSEMBLE] = F.nll_loss(
        out["fused_probs"].float().clamp_min(_EPS).log(), grades, weight=class_weights
    )
    weights = stage.loss_weights if stage is not None else {}
    total = sum(
        weights.get(LOSS_KEY_FOR_HEAD.get(part, part), 1.0) * value
        for part, value in losses.items()
    )
    if weights.get(GATE_ENTROPY) and len(heads) > 1:
        # A saturated softmax has no gradient to leave saturation: the bonus keeps the gate off
        # a one-hot choice unless the ensemble's loss pays for it. Entropy over log(heads): 0 to 1.
        gate = out["head_weights"].float()
        entropy = -(gate * gate.clamp_min(_EPS).log()).sum(dim=-1).mean() / math.log(len(heads))
        total = total - weights[GATE_ENTROPY] * entropy
    losses["total"] = total
    return losses


# --------------------------------------------------------------------------- freezing and modes


def _stage_mask(model: nn.Module, stage: Stage) -> tuple[bool, bool, bool]:
    """The stage's mask, with the quantum head switched off (and said so) when it is missing."""
    if stage.active_mask[2] and getattr(model, "quantum_head", None) is None:
        logger.warning(
            "Stage %r uses the quantum head, which is disabled or unavailable; running it with "
            "the classical heads only.",
            stage.name,
        )
    try:
        return model.effective_mask(stage.active_mask)
    except ValueError as error:
        raise ValueError(f"stage {stage.name!r}: {error}") from error


def _freeze_for_stage(model: nn.Module, stage: Stage) -> list[nn.Parameter]:
    """``requires_grad`` only on the stage's trainable parts; returns their parameters."""
    params: list[nn.Parameter] = []
    for part in MODEL_PARTS:
        module = getattr(model, part, None)
        if module is None:
            continue
        trainable = part in stage.trainable
        module.requires_grad_(trainable)
        if trainable:
            params.extend(module.parameters())
    if not params:
        raise ValueError(
            f"stage {stage.name!r} has nothing to train: its trainable parts "
            f"({', '.join(stage.trainable)}) do not exist in this model"
        )
    return params


def _set_modes(model: nn.Module, stage: Stage | None, training: bool) -> None:
    """Train mode for the parts being trained, eval mode for everything else.

    Frozen parts stay in eval mode so their BatchNorm statistics do not drift and their dropout
    does not perturb the trainable parts' inputs.
    """
    model.eval()
    if training and stage is not None:
        for part in stage.trainable:
            module = getattr(model, part, None)
            if module is not None:
                module.train()


# --------------------------------------------------------------------------- helpers


def _class_weights(
    settings: TrainerSettings,
    class_counts: Sequence[int] | np.ndarray | None,
    train_loader: Any,
    device: torch.device,
) -> torch.Tensor | None:
    """Inverse-frequency grade weights, normalised so an average sample weighs 1."""
    if not settings.class_balanced_loss:
        return None
    if class_counts is None:
        grades = getattr(getattr(train_loader, "dataset", None), "grades", None)
        if grades is None:
            logger.warning(
                "`class_balanced_loss` is on but no class counts were given and the training "
                "dataset has no `grades`; using an unweighted loss."
            )
            return None
        class_counts = np.bincount(np.asarray(grades, dtype=np.int64), minlength=NUM_GRADES)
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.shape != (NUM_GRADES,) or counts.sum() <= 0:
        raise ValueError(
            f"class_counts must hold {NUM_GRADES} non-negative counts, got {class_counts!r}"
        )
    weights = balanced_class_weights(counts)
    logger.info("Class-balanced loss weights per grade: %s", np.round(weights, 3).tolist())
    return torch.tensor(weights, dtype=torch.float32, device=device)


def _run_fingerprint(
    run_fingerprint: str,
    stages: Sequence[Stage],
    settings: TrainerSettings,
    class_weights: torch.Tensor | None,
) -> str:
    """The caller's fingerprint plus everything in this call that changes the result."""
    return fingerprint(
        run_fingerprint,
        [stage.to_dict() for stage in stages],
        settings.seed,
        settings.grad_clip,
        None if class_weights is None else class_weights.tolist(),
    )


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    active_mask: Sequence[int | bool],
    settings: TrainerSettings | None = None,
) -> dict[str, Any]:
    """Run ``model`` over ``loader`` once (eval mode) and score every active head.

    Returns:
        ``probabilities`` ({head: (N, 5)} incl. ``ensemble``), ``labels`` (N,), ``metrics``
        ({head: ``grading_metrics``}), ``ensemble_weights`` (mean gate weight per head),
        ``uncertainty`` (mean ``entropy`` and ``disagreement``) and ``outputs``: per-sample
        numpy arrays ``compressed``, ``logits_<head>``, ``head_weights``, ``entropy``,
        ``disagreement`` (and ``encoder_features`` from image or embedding batches) in loader order (what the feature export needs, in the same pass).
        Feature-cache batches use their cached head logits.
    """
    settings = settings or TrainerSettings()
    device = resolve_device(settings.device)
    model.to(device)
    run = _Run(
        model=model,
        net=model,
        settings=settings,
        device=device,
        use_amp=autocast_enabled(settings.mixed_precision, device),
        amp_dtype=autocast_dtype(device),
    )
    batches = _Pass(None, model.effective_mask(active_mask), desc="evaluate", keep_outputs=True)
    result = _evaluate_pass(run, loader, batches)
    metrics = {
        part: grading_metrics(result["labels"], probs)
        for part, probs in result["probabilities"].items()
    }
    return {
        "probabilities": result["probabilities"],
        "labels": result["labels"],
        "metrics": metrics,
        "ensemble_weights": result["ensemble_weights"],
        "uncertainty": result["uncertainty"],
        "outputs": result["outputs"],
    }
