"""Train several torch heads of one shape as one vectorised run (``torch.func.vmap``).

The study trains each setting 15 times (5 seeds x 3 learning rates). A head of a few hundred
weights spends most of a training step in per-operation overhead (the autograd engine, the
optimiser, Python), not in arithmetic, so training the 15 one after the other pays that overhead
15 times. :func:`fit_together` stacks their weights and runs every step once for all of them:

- each estimator gets the initial weights, the batch order and the class weights its own ``fit``
  would give it (the same seeds, drawn the same way);
- the forward pass is ``vmap(functional_call(module, weights, batch))`` over the stacked weights and
  each estimator's own batch;
- the optimiser is ``torch.optim.AdamW`` with one parameter group per learning rate, holding the
  stacked weights of the estimators that use it (AdamW is elementwise, so every slice is updated
  exactly as a lone AdamW would update it);
- the trained slices are copied back into each estimator's module, which ends fitted as by ``fit``.

The arithmetic is the same as ``fit``'s, but the batched kernels sum in another order, so the
results agree to float rounding, not bitwise: to ~1e-6 in probability at the study's learning
rates up to 3e-3. At 3e-2 a float32 training is itself chaotic (a change in the last bit grows
to a different trajectory within ten or so epochs), so single and vectorised runs there are
two equally valid draws of the same training, and differ by as much as two seeds would.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from qsight_pipeline.models.estimators import TorchHeadClassifier

# Parameters that may differ between the estimators trained together.
FREE_PARAMETERS = ("random_state", "learning_rate")


def fit_together(estimators: Sequence[TorchHeadClassifier], X: Any, y: Any) -> float:
    """Fit ``estimators`` on the same ``X, y`` as one vectorised training; returns its seconds.

    They must be of one class (one whose forward pass is deterministic) and differ only in
    ``random_state`` and ``learning_rate``; anything else raises ``ValueError`` naming the
    parameter. Each estimator's ``train_seconds_`` is its share of the whole run.
    """
    estimators = list(estimators)
    _check_compatible(estimators)
    start = time.perf_counter()
    prepared = [estimator._prepare(X, y) for estimator in estimators]
    features, y_encoded = prepared[0]
    seeds = [estimator._fit_seed() for estimator in estimators]
    for estimator, seed in zip(estimators, seeds, strict=True):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            estimator.module_ = estimator._build_module(features.shape[1],
                                                        len(estimator.classes_))
    curves = _train(estimators, features, y_encoded, seeds)
    seconds = time.perf_counter() - start
    for estimator, curve in zip(estimators, curves, strict=True):
        estimator.loss_curve_ = curve
        estimator._finish(seconds / len(estimators))
    return seconds


def _check_compatible(estimators: list[TorchHeadClassifier]) -> None:
    if not estimators:
        raise ValueError("fit_together needs at least one estimator")
    first = estimators[0]
    if not getattr(first, "vectorisable", False):
        raise ValueError(f"{type(first).__name__} cannot be trained vectorised (its forward pass "
                         "draws random numbers); fit each estimator on its own")
    reference = {k: v for k, v in first.get_params().items() if k not in FREE_PARAMETERS}
    for other in estimators[1:]:
        if type(other) is not type(first):
            raise ValueError(f"fit_together trains one kind of head at a time, got "
                             f"{type(first).__name__} and {type(other).__name__}")
        params = {k: v for k, v in other.get_params().items() if k not in FREE_PARAMETERS}
        differing = sorted(k for k in reference if repr(reference[k]) != repr(params[k]))
        if differing:
            raise ValueError(f"fit_together needs estimators that differ only in "
                             f"{' and '.join(FREE_PARAMETERS)}; these differ too: "
                             f"{', '.join(differing)}")


def _train(estimators: list[TorchHeadClassifier], features: torch.Tensor,
           y_encoded: np.ndarray, seeds: list[int]) -> list[list[float]]:
    first = estimators[0]
    modules = [estimator.module_ for estimator in estimators]
    base = modules[0]
    trainable = [name for name, p in base.named_parameters() if p.requires_grad]
    buffers = _shared_buffers(modules)

    # One leaf per learning rate and weight, holding the stacked weights of that rate's members;
    # ``order`` lists the estimators group by group, the order of the stacked rows.
    rates = list(dict.fromkeys(float(e.learning_rate) for e in estimators))
    members = [[i for i, e in enumerate(estimators) if float(e.learning_rate) == rate]
               for rate in rates]
    order = [i for group in members for i in group]
    leaves = [{name: torch.stack([modules[i].get_parameter(name).detach() for i in group])
               .requires_grad_(True) for name in trainable} for group in members]
    optimizer = first._optimizer(
        [{"params": list(group.values()), "lr": rate} for group, rate in zip(leaves, rates,
                                                                               strict=True)]
    )
    frozen = {name: torch.stack([modules[i].get_parameter(name).detach() for i in order])
              for name, p in base.named_parameters() if not p.requires_grad}
    targets = torch.as_tensor(y_encoded, dtype=torch.long)
    weights = first._loss_weights(y_encoded)

    def loss(weights_of_one: dict[str, torch.Tensor], batch: torch.Tensor,
             batch_targets: torch.Tensor) -> torch.Tensor:
        logits = functional_call(base, (weights_of_one, buffers), (batch,))
        return F.cross_entropy(logits, batch_targets, weight=weights)

    losses_of = vmap(loss)
    generators = [torch.Generator().manual_seed(seeds[i]) for i in order]
    n = len(targets)
    batch_size = min(first.batch_size, n)
    totals = []
    base.train()
    for _ in range(first.epochs):
        rows = torch.stack([torch.randperm(n, generator=g) for g in generators])
        total = torch.zeros(len(order), dtype=torch.float64)
        for batch in rows.split(batch_size, dim=1):
            stacked = {name: torch.cat([group[name] for group in leaves]) for name in trainable}
            losses = losses_of({**stacked, **frozen}, features[batch], targets[batch])
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            total += losses.detach().double() * batch.shape[1]
        totals.append(total / n)

    _copy_back(modules, members, leaves, trainable)
    curves: list[list[float]] = [[] for _ in estimators]
    for row, index in enumerate(order):
        curves[index] = [float(t[row]) for t in totals]
    return curves


def _shared_buffers(modules: list[torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The first module's buffers, which every module must hold too (index tables and the like:
    built the same way for every seed)."""
    buffers = dict(modules[0].named_buffers())
    for module in modules[1:]:
        for name, buffer in module.named_buffers():
            if not torch.equal(buffer, buffers[name]):
                raise ValueError(f"fit_together: buffer {name!r} differs between the estimators")
    return buffers


@torch.no_grad()
def _copy_back(modules: list[torch.nn.Module], members: list[list[int]],
               leaves: list[dict[str, torch.Tensor]], trainable: list[str]) -> None:
    """Each estimator's trained weights, from its row of its learning rate's leaf."""
    for group, leaf in zip(members, leaves, strict=True):
        for row, index in enumerate(group):
            for name in trainable:
                modules[index].get_parameter(name).copy_(leaf[name][row])
