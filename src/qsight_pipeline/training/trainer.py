"""The staged trainer: one loop for image stages and feature-cache stages.

Read top to bottom: ``train_stages`` resolves the device and resume point, then runs each stage
with ``_train_stage``, whose epoch loop is train pass -> validation pass -> early-stopping
bookkeeping -> checkpoint -> callback. ``_run_epoch`` is the only place a batch meets the model:
autocast, loss, gradient scaling, clipping and the optimizer step are a few lines each.

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
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from qsight_pipeline.constants import ENSEMBLE, HEAD_A, HEAD_B, HEADS, MODEL_PARTS, NUM_GRADES
from qsight_pipeline.training.checkpoints import (
    capture_rng_state,
    find_resume_checkpoint,
    fingerprint,
    restore_rng_state,
    save_checkpoint,
)
from qsight_pipeline.training.devices import autocast_enabled, maybe_data_parallel, resolve_device
from qsight_pipeline.training.guards import LossGuard
from qsight_pipeline.training.latency import LatencyTracker
from qsight_pipeline.training.metrics import grading_metrics, quadratic_weighted_kappa
from qsight_pipeline.training.stages import LOSS_KEY_FOR_HEAD, Stage, parse_stages

logger = logging.getLogger(__name__)

# Latency samples kept per component in a stage summary (for histograms).
LATENCY_SAMPLE_LIMIT = 2000
_EPS = 1e-8


@dataclass
class TrainerSettings:
    """Run-wide training settings (the top-level keys of ``parameters.yml``).

    Attributes:
        grad_clip: max gradient norm; 0 disables clipping.
        mixed_precision: fp16 autocast + GradScaler; ``None`` = on exactly when on CUDA.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:<index>``.
        multi_gpu: wrap the model in DataParallel (skipped with a warning where impossible).
        device_ids: GPUs for DataParallel (list or ``"0,1"``); ``None`` = all visible.
        seed: seeds Python, NumPy and torch at the start of training.
        latency_tracking: time every model part per batch.
        class_balanced_loss: weight the losses by inverse grade frequency of the training set.
        checkpoint_dir: where to write ``stage_<name>_epoch_<n>.pth`` after every epoch.
        resume: continue from the newest matching checkpoint in ``checkpoint_dir``.
        epoch_callback: called with each epoch record, after that epoch's checkpoint is written.
        progress: show a tqdm bar per epoch (hidden anyway when stderr is not a terminal).
    """

    grad_clip: float = 1.0
    mixed_precision: bool | None = None
    device: str = "auto"
    multi_gpu: bool = False
    device_ids: list[int] | str | None = None
    seed: int = 42
    latency_tracking: bool = True
    class_balanced_loss: bool = True
    checkpoint_dir: str | Path | None = None
    resume: bool = True
    epoch_callback: Callable[[dict[str, Any]], None] | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        grad_clip = self.grad_clip
        if isinstance(grad_clip, bool) or not isinstance(grad_clip, int | float) or grad_clip < 0:
            raise ValueError(f"`grad_clip` must be a number >= 0 (0 disables), got {grad_clip!r}")
        if self.mixed_precision is not None and not isinstance(self.mixed_precision, bool):
            raise ValueError(
                f"`mixed_precision` must be true, false or null, got {self.mixed_precision!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"`seed` must be an integer, got {self.seed!r}")
        for name in ("multi_gpu", "latency_tracking", "class_balanced_loss", "resume", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainerSettings:
        """Pick this class's keys out of the run-wide parameters (other keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"epoch_callback"}
        return cls(**{name: params[name] for name in names if name in params})


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices), and ask cuDNN for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


# --------------------------------------------------------------------------- the stage loop


def train_stages(
    model: nn.Module,
    stages: Sequence[Stage | Mapping[str, Any]],
    train_loader: Any,
    val_loader: Any,
    settings: TrainerSettings,
    *,
    class_counts: Sequence[int] | np.ndarray | None = None,
    run_fingerprint: str = "",
) -> list[dict[str, Any]]:
    """Train ``model`` through ``stages`` and return one summary per stage.

    Each summary is ``{"name", "epochs_run", "best_epoch", "stopped_early", "best_val",
    "history", "latency_samples_ms"}`` (docs/architecture.md). After each stage the model holds the
    weights of that stage's best validation epoch (ensemble QWK, ties -> lower ensemble loss).

    Loader batches are either images (``{"image", "grade"}``) or cached features
    (``{"compressed", "grade"}`` with optional ``logits_head_a``/``logits_head_b``, used for the
    heads a stage keeps frozen). A stage that trains the encoder or compression needs images.

    Args:
        class_counts: training-set count per grade, for ``class_balanced_loss``; when ``None``
            the counts are read from ``train_loader.dataset.grades`` if it has them.
        run_fingerprint: what the run depends on (data, model config, ...); a checkpoint is
            resumed only when it carries the same fingerprint (combined with the schedule and
            the settings that change the result).
    """
    stages = parse_stages(list(stages))
    seed_everything(settings.seed)
    device = resolve_device(settings.device)
    model.to(device)
    net = maybe_data_parallel(model, settings.multi_gpu, settings.device_ids, device)
    use_amp = autocast_enabled(settings.mixed_precision, device)
    class_weights = _class_weights(settings, class_counts, train_loader, device)
    fingerprint = _run_fingerprint(run_fingerprint, stages, settings, class_weights)

    resume = None
    if settings.checkpoint_dir and settings.resume:
        resume = find_resume_checkpoint(settings.checkpoint_dir, stages, fingerprint)
    summaries: list[dict[str, Any]] = []
    first_stage = 0
    if resume is not None:
        summaries = list(resume["completed"])
        first_stage = resume["stage_index"]
        logger.info(
            "Resuming from checkpoint of stage %r epoch %d in %s",
            resume["stage_name"],
            resume["epoch"],
            settings.checkpoint_dir,
        )

    previous_tracker = getattr(model, "latency", None)
    tracker = LatencyTracker() if settings.latency_tracking else None
    model.latency = tracker
    try:
        for index in range(first_stage, len(stages)):
            stage_resume = resume if resume is not None and resume["stage_index"] == index else None
            summaries.append(
                _train_stage(
                    index,
                    stages[index],
                    model,
                    net,
                    train_loader,
                    val_loader,
                    settings,
                    device=device,
                    use_amp=use_amp,
                    class_weights=class_weights,
                    fingerprint=fingerprint,
                    completed=summaries,
                    tracker=tracker,
                    resume=stage_resume,
                )
            )
    finally:
        model.latency = previous_tracker
    if resume is not None and first_stage == len(stages) - 1 and resume["stage_done"]:
        logger.info(
            "Every stage was already finished in %s; restored the final weights without training.",
            settings.checkpoint_dir,
        )
    return summaries


def _train_stage(
    index: int,
    stage: Stage,
    model: nn.Module,
    net: nn.Module,
    train_loader: Any,
    val_loader: Any,
    settings: TrainerSettings,
    *,
    device: torch.device,
    use_amp: bool,
    class_weights: torch.Tensor | None,
    fingerprint: str,
    completed: list[dict[str, Any]],
    tracker: LatencyTracker | None,
    resume: dict[str, Any] | None,
) -> dict[str, Any]:
    """Run one stage's epochs with early stopping; returns the stage summary."""
    active = _stage_mask(model, stage)
    params = _freeze_for_stage(model, stage)
    optimizer = torch.optim.AdamW(params, lr=stage.learning_rate, weight_decay=stage.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    history: list[dict[str, Any]] = []
    guard = LossGuard(stage.name)
    best: dict[str, Any] | None = None  # {"epoch", "kappa", "loss", "val", "state"}
    bad_epochs = 0
    first_epoch = 1
    stage_done = False
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scaler.load_state_dict(resume["scaler"])
        restore_rng_state(resume["rng"], (train_loader, val_loader))
        if tracker is not None:
            tracker.load_state_dict(resume.get("latency") or {})
        history = list(resume["history"])
        best = dict(resume["best"])
        if best["state"] is None:  # the checkpointed epoch was the best one
            best["state"] = _cpu_state(model)
        bad_epochs = resume["bad_epochs"]
        first_epoch = resume["epoch"] + 1
        stage_done = resume["stage_done"]
    elif tracker is not None:
        tracker.clear()

    logger.info(
        "Stage %r: %d epoch(s), lr %g, mask %s, training %s",
        stage.name,
        stage.num_epochs,
        stage.learning_rate,
        list(int(a) for a in active),
        ", ".join(stage.trainable),
    )
    epoch = first_epoch - 1
    for epoch in range(first_epoch, stage.num_epochs + 1):
        if stage_done:
            break
        started = time.perf_counter()
        mark = tracker.position() if tracker is not None else {}
        train = _run_epoch(
            net,
            model,
            train_loader,
            stage,
            active,
            settings,
            device,
            use_amp,
            class_weights,
            optimizer=optimizer,
            scaler=scaler,
            params=params,
            desc=f"{stage.name} {epoch}/{stage.num_epochs}",
            guard=guard,
        )
        val = _run_epoch(
            net,
            model,
            val_loader,
            stage,
            active,
            settings,
            device,
            use_amp,
            class_weights,
            desc=f"{stage.name} {epoch}/{stage.num_epochs} val",
        )
        record = {
            "stage": stage.name,
            "epoch": epoch,
            "seconds": time.perf_counter() - started,
            "learning_rate": optimizer.param_groups[0]["lr"],
            "train": train["record"],
            "val": val["record"],
            "ensemble_weights": val["ensemble_weights"],
            "uncertainty": val["uncertainty"],
            "latency_ms": tracker.summary(since=mark) if tracker is not None else {},
        }
        history.append(record)

        kappa, loss = val["record"][ENSEMBLE]["kappa"], val["record"][ENSEMBLE]["loss"]
        if (
            best is None
            or kappa > best["kappa"]
            or (kappa == best["kappa"] and loss < best["loss"])
        ):
            best = {
                "epoch": epoch,
                "kappa": kappa,
                "loss": loss,
                "val": val["record"],
                "state": None,
            }
            best["state"] = _cpu_state(model)
            bad_epochs = 0
        else:
            bad_epochs += 1
        stop_early = stage.patience > 0 and bad_epochs >= stage.patience
        stage_done = stop_early or epoch == stage.num_epochs
        logger.info(
            "%s epoch %d/%d: train loss %.4f | val loss %.4f, ensemble acc %.3f, QWK %.3f%s (%.1fs)",
            stage.name,
            epoch,
            stage.num_epochs,
            train["record"]["loss"],
            val["record"]["loss"],
            val["record"][ENSEMBLE]["accuracy"],
            kappa,
            " *" if best["epoch"] == epoch else "",
            record["seconds"],
        )

        if settings.checkpoint_dir:
            save_checkpoint(
                {
                    "fingerprint": fingerprint,
                    "stage_index": index,
                    "stage_name": stage.name,
                    "epoch": epoch,
                    "stage_done": stage_done,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": capture_rng_state((train_loader, val_loader)),
                    "history": history,
                    # Saving the best weights twice is wasteful when they are this epoch's.
                    "best": {**best, "state": None if best["epoch"] == epoch else best["state"]},
                    "bad_epochs": bad_epochs,
                    "completed": completed,
                    "latency": tracker.state_dict() if tracker is not None else {},
                },
                settings.checkpoint_dir,
            )
        if settings.epoch_callback is not None:
            settings.epoch_callback(record)
        if stop_early:
            logger.info(
                "%s: no better validation QWK for %d epoch(s); stopping early",
                stage.name,
                bad_epochs,
            )
            break

    assert best is not None  # num_epochs >= 1 is validated
    model.load_state_dict(best["state"])
    epochs_run = len(history)
    logger.info(
        "Stage %r done: best epoch %d (val ensemble QWK %.3f), weights restored",
        stage.name,
        best["epoch"],
        best["kappa"],
    )
    return {
        "name": stage.name,
        "epochs_run": epochs_run,
        "best_epoch": best["epoch"],
        "stopped_early": epochs_run < stage.num_epochs,
        "best_val": best["val"],
        "history": history,
        "latency_samples_ms": tracker.samples(LATENCY_SAMPLE_LIMIT) if tracker is not None else {},
    }


# --------------------------------------------------------------------------- one pass over data


def _run_epoch(
    net: nn.Module,
    model: nn.Module,
    loader: Any,
    stage: Stage | None,
    active: tuple[bool, bool, bool],
    settings: TrainerSettings,
    device: torch.device,
    use_amp: bool,
    class_weights: torch.Tensor | None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    params: Sequence[nn.Parameter] = (),
    desc: str = "",
    keep_outputs: bool = False,
    guard: LossGuard | None = None,
) -> dict[str, Any]:
    """One pass over ``loader``: trains when ``optimizer`` is given, else evaluates.

    Returns ``record`` (the epoch-record block: ``loss`` and per-head ``loss``/``accuracy``/
    ``kappa``), ``ensemble_weights``, ``uncertainty``, ``probabilities`` and ``labels`` (numpy),
    and with ``keep_outputs`` the per-sample model outputs.
    """
    training = optimizer is not None
    _set_modes(model, stage, training)
    heads = [head for head, flag in zip(HEADS, active, strict=True) if flag]
    loss_sums = dict.fromkeys([*heads, ENSEMBLE, "total"], 0.0)
    probabilities: dict[str, list[torch.Tensor]] = {part: [] for part in [*heads, ENSEMBLE]}
    labels: list[torch.Tensor] = []
    extras: dict[str, list[torch.Tensor]] = {}
    count = 0

    bar = tqdm(loader, desc=desc, leave=False, disable=None if settings.progress else True)
    with torch.set_grad_enabled(training):
        for batch_index, batch in enumerate(bar, 1):
            grades = batch["grade"].to(device, non_blocking=True)
            if training and grades.shape[0] == 1:
                # A one-image remainder batch makes BatchNorm fail in train mode and adds
                # nothing measurable to the epoch; skip it rather than ask for drop_last.
                continue
            with torch.autocast(device.type, enabled=use_amp):
                out = net(**_model_inputs(batch, stage, device), active_mask=active)
            losses = _losses(out, grades, heads, stage, class_weights)
            if training:
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(losses["total"]).backward()
                norm = None
                if settings.grad_clip > 0:
                    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                    norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
                if guard is not None:  # NaN/inf or exploding loss: stop, naming where
                    guard.check_step(desc, batch_index, losses["total"].detach(), params,
                                     norm, scaler.is_enabled())
                scaler.step(optimizer)
                scaler.update()

            size = grades.shape[0]
            count += size
            for key, value in losses.items():
                loss_sums[key] += float(value.detach()) * size
            for head in heads:
                probabilities[head].append(out[f"logits_{head}"].detach().float().softmax(-1).cpu())
            probabilities[ENSEMBLE].append(out["fused_probs"].detach().float().cpu())
            labels.append(grades.cpu())
            for key in ("head_weights", "entropy", "disagreement"):
                extras.setdefault(key, []).append(out[key].detach().float().cpu())
            if keep_outputs:
                for key in ("compressed", *(f"logits_{h}" for h in heads)):
                    extras.setdefault(key, []).append(out[key].detach().float().cpu())
    bar.close()
    if count == 0:
        raise ValueError(f"{desc or 'evaluation'}: the data loader yielded no batches")

    y = torch.cat(labels).numpy()
    probs = {part: torch.cat(chunks).numpy() for part, chunks in probabilities.items()}
    record: dict[str, Any] = {"loss": loss_sums["total"] / count}
    for part in [*heads, ENSEMBLE]:
        predicted = probs[part].argmax(axis=1)
        record[part] = {
            "loss": loss_sums[part] / count,
            "accuracy": float((predicted == y).mean()),
            "kappa": quadratic_weighted_kappa(y, predicted),
        }
    outputs = {key: torch.cat(chunks).numpy() for key, chunks in extras.items()}
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
    """Per-head cross-entropy, the ensemble's NLL, and their ``loss_weights`` sum as ``total``."""
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
    present = counts > 0
    weights = np.ones(NUM_GRADES)
    # A grade absent from training keeps weight 1 so a batch of it never divides 0 by 0.
    weights[present] = counts.sum() / (present.sum() * counts[present])
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
        ``disagreement`` in loader order (what the feature export needs, in the same pass).
        Feature-cache batches use their cached head logits.
    """
    settings = settings or TrainerSettings()
    device = resolve_device(settings.device)
    model.to(device)
    use_amp = autocast_enabled(settings.mixed_precision, device)
    active = model.effective_mask(active_mask)
    result = _run_epoch(
        model,
        model,
        loader,
        None,
        active,
        settings,
        device,
        use_amp,
        None,
        desc="evaluate",
        keep_outputs=True,
    )
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
