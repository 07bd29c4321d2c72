"""One optimiser step: per-sample losses, their weights, micro-batched backward, every optimiser stepped.

Shared by the trainer's loop (:mod:`.loop`) and by any other loop over the same pieces (the
2D experiment of ``experiments/noisy_labels``), so the order of operations that makes a
weighting exact (:mod:`.objective`) is written once.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import TrainingError
from ..model.runtime import autocast_context
from .objective import DeepSupervisionObjective, SampleWeighting, WeightPlan, weighted_loss


@dataclass
class Trainables:
    """The modules a run trains, by name, their optimisers (same names), and the GradScaler."""

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    scaler: torch.amp.GradScaler
    forward: nn.Module  # the network as called in the loop (DistributedDataParallel-wrapped with several processes)


@dataclass(frozen=True)
class StepResult:
    """What one step did.

    Attributes
    ----------
    loss
        The training loss ``sum(weights * losses)`` (for uniform weights, the batch mean).
    losses
        ``[B]`` per-sample losses (detached, on the CPU).
    parts
        Batch means of the objective's parts (``bce``, ``dice``, ``pass0``, ...).
    plan
        The weights (and scores) the weighting gave (detached, on the CPU).
    """

    loss: float
    losses: Tensor
    parts: dict[str, float]
    plan: WeightPlan


def _cpu(plan: WeightPlan) -> WeightPlan:
    return WeightPlan(*(None if t is None else t.detach().cpu() for t in (plan.weights, plan.raw_scores, plan.scores)))


def train_step(trainables: Trainables, objective: DeepSupervisionObjective, weighting: SampleWeighting,
               image: Tensor, mask: Tensor, case_ids: Sequence[str], *, learning_rates: Mapping[str, float],
               micro_batch: int | None = None, step: int = 0, resume_from: str = "the last checkpoint") -> StepResult:
    """One optimiser step of every module on the batch ``(image, mask)`` (``[B, C, *spatial]``, on the device).

    The weighting plans the ``[B]`` weights; the network goes forward and backward micro-batch
    by micro-batch (``micro_batch`` samples, None for all) with loss ``sum(w_i L_i)``
    (DistributedDataParallel synchronises only the last micro-batch's backward); the
    weighting's modules get their gradient of the same loss; then every optimiser steps.
    ``learning_rates`` sets the learning rate of the optimisers it names before the step;
    ``step`` (0 for the first) and ``resume_from`` only word the error below.

    Raises
    ------
    TrainingError
        The loss is not finite (nothing is stepped).
    """
    dev = image.device
    count = image.shape[0]
    for optimizer in trainables.optimizers.values():
        optimizer.zero_grad(set_to_none=True)
    plan = weighting.plan(image, mask, case_ids)
    size = micro_batch or count
    totals: list[Tensor] = []
    parts: dict[str, list[Tensor]] = {}
    scaler = trainables.scaler
    for start in range(0, count, size):
        part = slice(start, min(start + size, count))
        last = part.stop == count
        sync = (contextlib.nullcontext() if last or not hasattr(trainables.forward, "no_sync")
                else trainables.forward.no_sync())
        with sync:
            with autocast_context(dev):
                outputs = trainables.forward(image[part], return_all_passes=True)
            losses = objective(outputs, mask[part])
            scaler.scale(weighted_loss(losses, plan.weights[part])).backward()
        totals.append(losses.total.detach())
        for name, value in losses.parts.items():
            parts.setdefault(name, []).append(value)
    total = torch.cat(totals)
    value = float((plan.weights.to(total.dtype) * total).sum())
    if not math.isfinite(value):
        raise TrainingError(f"The training loss is not finite at step {step + 1}. Lower optimisation.learning_rate "
                            f"and resume from {resume_from} (or start over in a new RUN_DIR).")
    weighting.backward(plan, image, mask, total, scaler)
    for name, rate in learning_rates.items():
        for group in trainables.optimizers[name].param_groups:
            group["lr"] = rate
    for optimizer in trainables.optimizers.values():
        scaler.step(optimizer)
    scaler.update()
    means = {name: float(torch.cat(values).float().mean()) for name, values in parts.items()}
    return StepResult(loss=value, losses=total.cpu(), parts=means, plan=_cpu(plan))
