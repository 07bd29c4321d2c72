"""The method's loss terms, per sample: binary cross-entropy and soft Dice.

Tensors are ``[B, 1, z, y, x]``: logits (before the sigmoid) and a 0/1 target. Each term
returns one value per sample (shape ``[B]``); how samples are weighted and summed is the
objective's separate step (:mod:`ctv_core.training.objective`), so a sample-weighting scheme
can replace the plain mean without touching the terms.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def bce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy with logits, the mean over each sample's voxels: ``[B]``."""
    per_voxel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return per_voxel.flatten(1).mean(1)


def soft_dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """``1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)`` for each sample: ``[B]``.

    ``p`` is the sigmoid of ``logits``. ``smooth`` keeps patches without target defined (an
    empty prediction there scores 0 loss) and is small next to a CTV's voxel count.
    """
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    return 1.0 - (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
