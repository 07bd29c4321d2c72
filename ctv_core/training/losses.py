"""The method's loss: binary cross-entropy + soft Dice, on every recurrent pass (deep supervision).

Tensors are ``[B, 1, z, y, x]``: logits (before the sigmoid) and a 0/1 target. Both terms are
means over the samples of the batch (the Dice is computed per sample, then averaged), so the
loss of a batch split across processes, averaged by DistributedDataParallel, equals the loss of
the whole batch in one process.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F


def bce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean binary cross-entropy with logits over every voxel of the batch."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def soft_dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """``1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)`` per sample, averaged over the batch.

    ``p`` is the sigmoid of ``logits``. ``smooth`` keeps patches without target defined (an
    empty prediction there scores 0 loss) and is small next to a CTV's voxel count.
    """
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    dice = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return 1.0 - dice.mean()


class DeepSupervisionLoss:
    """Weighted sum over passes of ``bce_weight * BCE + dice_weight * Dice loss``.

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

    def __call__(self, outputs: Sequence[Tensor] | Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The total loss (differentiable) and its parts as floats (``bce``/``dice`` of the last pass, per pass)."""
        if isinstance(outputs, Tensor):
            outputs = [outputs]
        if len(outputs) != len(self.pass_weights):
            raise ValueError(f"{len(outputs)} pass outputs but {len(self.pass_weights)} pass weights")
        total = outputs[-1].new_zeros((), dtype=torch.float32)
        parts: dict[str, float] = {}
        for n, (logits, weight) in enumerate(zip(outputs, self.pass_weights)):
            bce = bce_loss(logits, target)
            dice = soft_dice_loss(logits, target, self.smooth)
            loss = self.bce_weight * bce + self.dice_weight * dice
            total = total + weight * loss
            parts[f"pass{n}"] = float(loss.detach())
            parts["bce"], parts["dice"] = float(bce.detach()), float(dice.detach())
        parts["total"] = float(total.detach())
        return total, parts
