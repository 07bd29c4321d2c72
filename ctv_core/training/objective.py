"""What training minimises, in two replaceable steps: per-sample losses, then their weighting.

1. :class:`DeepSupervisionObjective` gives each sample of the batch its loss: the weighted sum
   over the recurrent passes of ``bce_weight * BCE + dice_weight * soft Dice``
   (:mod:`ctv_core.training.losses`), shape ``[B]``.
2. A :class:`SampleWeighting` gives each sample a weight (``[B]``, summing to 1 over the
   batch); the training loss is ``L = sum(weight * loss)``. :class:`UniformWeighting` (the
   method's plain training) gives every sample ``1 / B``, i.e. the batch mean. A scheme that
   learns which labels to trust is another ``SampleWeighting``
   (:class:`ctv_core.training.quality.QualityAwareWeighting`).

A weighting works in two calls around the network's backward, so that a batch can be
processed in micro-batches (:func:`ctv_core.training.step.train_step`): ``plan`` decides the
``[B]`` weights from the images and labels alone (detached), the network back-propagates
``sum(weight * loss)`` micro-batch by micro-batch, and ``backward`` then gives the weighting's
own modules the gradient of the same ``L`` from the detached per-sample losses. Together they
give both the network and the weighting exactly the gradients of the joint loss ``L``.

With several processes each takes its share of the global batch and DistributedDataParallel
averages the gradients, so with uniform weights the result equals the mean over the global
batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from .losses import bce_loss, soft_dice_loss


@dataclass(frozen=True)
class SampleLosses:
    """Per-sample losses of one batch.

    Attributes
    ----------
    total
        ``[B]`` differentiable loss of each sample (all passes, both terms).
    parts
        Detached ``[B]`` tensors: ``bce`` and ``dice`` of the last pass, and ``pass0``,
        ``pass1``, … (each pass's ``bce_weight * BCE + dice_weight * Dice``).
    """

    total: Tensor
    parts: dict[str, Tensor]


class DeepSupervisionObjective:
    """Per-sample weighted sum over passes of ``bce_weight * BCE + dice_weight * Dice loss``.

    Parameters
    ----------
    pass_weights
        One weight per recurrent pass, first pass first (the last is usually 1).
    bce_weight, dice_weight
        Weights of the two terms within a pass.
    smooth
        The soft Dice's smoothing term.
    """

    def __init__(self, pass_weights: Sequence[float], bce_weight: float = 1.0, dice_weight: float = 1.0,
                 smooth: float = 1.0) -> None:
        self.pass_weights = tuple(float(w) for w in pass_weights)
        self.bce_weight, self.dice_weight, self.smooth = float(bce_weight), float(dice_weight), float(smooth)

    def __call__(self, outputs: Sequence[Tensor] | Tensor, target: Tensor) -> SampleLosses:
        """The losses of each sample of ``target`` (``[B, 1, z, y, x]``) given every pass's logits."""
        if isinstance(outputs, Tensor):
            outputs = [outputs]
        if len(outputs) != len(self.pass_weights):
            raise ValueError(f"{len(outputs)} pass outputs but {len(self.pass_weights)} pass weights")
        total = outputs[-1].new_zeros((target.shape[0],), dtype=torch.float32)
        parts: dict[str, Tensor] = {}
        for n, (logits, weight) in enumerate(zip(outputs, self.pass_weights)):
            bce = bce_loss(logits, target)
            dice = soft_dice_loss(logits, target, self.smooth)
            loss = self.bce_weight * bce + self.dice_weight * dice
            total = total + weight * loss
            parts[f"pass{n}"] = loss.detach()
            parts["bce"], parts["dice"] = bce.detach(), dice.detach()
        return SampleLosses(total=total, parts=parts)


@dataclass(frozen=True)
class WeightPlan:
    """The weights of one batch's samples, decided from the images and labels before the losses.

    Attributes
    ----------
    weights
        ``[B]`` detached weights, summing to 1 over the batch.
    raw_scores
        ``[B]`` detached scores as the weighting's network gave them (None: no scores).
    scores
        ``[B]`` detached scores the softmax saw (after the overfitting control; None: no scores).
    """

    weights: Tensor
    raw_scores: Tensor | None = None
    scores: Tensor | None = None


class SampleWeighting(Protocol):
    """Gives each sample of a batch its weight in the training loss, and trains whatever decides it.

    ``modules`` and ``optimizers`` (same names, ``{}`` for a fixed weighting) are trained,
    checkpointed and restored with the network; the trainer steps the optimisers after
    :meth:`backward`.
    """

    modules: Mapping[str, nn.Module]
    optimizers: Mapping[str, torch.optim.Optimizer]

    def plan(self, images: Tensor, masks: Tensor, case_ids: Sequence[str]) -> WeightPlan:
        """The batch's weights (``images`` ``[B, C, *spatial]``, ``masks`` ``[B, K, *spatial]``, float)."""
        ...  # pragma: no cover - protocol

    def backward(self, plan: WeightPlan, images: Tensor, masks: Tensor, losses: Tensor,
                 scaler: torch.amp.GradScaler) -> None:
        """Accumulate into ``modules`` the gradient of ``sum(weights * losses)`` (``losses`` ``[B]``, detached)."""
        ...  # pragma: no cover - protocol


class UniformWeighting:
    """Every sample weighs ``1 / B``: the training loss is the batch mean (the method's plain training)."""

    def __init__(self) -> None:
        self.modules: Mapping[str, nn.Module] = {}
        self.optimizers: Mapping[str, torch.optim.Optimizer] = {}

    def plan(self, images: Tensor, masks: Tensor, case_ids: Sequence[str]) -> WeightPlan:
        count = images.shape[0]
        return WeightPlan(weights=torch.full((count,), 1.0 / count, device=images.device))

    def backward(self, plan: WeightPlan, images: Tensor, masks: Tensor, losses: Tensor,
                 scaler: torch.amp.GradScaler) -> None:
        """Nothing to train."""


def weighted_loss(losses: SampleLosses, weights: Tensor) -> Tensor:
    """The training loss ``sum(weights * losses.total)`` (differentiable through both)."""
    return (weights.to(losses.total.dtype) * losses.total).sum()
