"""What training minimises, in two replaceable steps: per-sample losses, then their weighting.

1. :class:`DeepSupervisionObjective` gives each sample of the batch its loss: the weighted sum
   over the recurrent passes of ``bce_weight * BCE + dice_weight * soft Dice``
   (:mod:`ctv_core.training.losses`), shape ``[B]``.
2. A :class:`SampleWeighting` gives each sample a weight (``[B]``, summing to 1 over the
   batch); the training loss is ``sum(weight * loss)``. :class:`UniformWeighting` (the
   method's plain training) gives every sample ``1 / B``, i.e. the batch mean. A scheme that
   learns which labels to trust (quality awareness) is another ``SampleWeighting``.

With several processes each takes its share of the global batch and DistributedDataParallel
averages the gradients, so with uniform weights the result equals the mean over the global
batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

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


class SampleWeighting(Protocol):
    """Gives each sample of a batch its weight in the training loss."""

    def __call__(self, losses: SampleLosses, images: Tensor, masks: Tensor, case_ids: Sequence[str]) -> Tensor:
        """``[B]`` weights summing to 1 for the batch (``images`` and ``masks`` ``[B, 1, z, y, x]``)."""
        ...  # pragma: no cover - protocol


class UniformWeighting:
    """Every sample weighs ``1 / B``: the training loss is the batch mean (the method's plain training)."""

    def __call__(self, losses: SampleLosses, images: Tensor, masks: Tensor, case_ids: Sequence[str]) -> Tensor:
        count = losses.total.shape[0]
        return losses.total.new_full((count,), 1.0 / count).detach()


def weighted_loss(losses: SampleLosses, weights: Tensor) -> Tensor:
    """The training loss ``sum(weights * losses.total)`` (differentiable through both)."""
    return (weights * losses.total).sum()
