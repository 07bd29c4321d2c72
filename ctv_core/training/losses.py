"""The method's loss terms, per sample: binary cross-entropy and soft Dice.

Tensors are ``[B, C, *spatial]`` (``[B, 1, z, y, x]`` for the CTV network; ``C`` structures,
each its own sigmoid): logits (before the sigmoid) and a 0/1 target. Each term returns one
value per sample (shape ``[B]``); how samples are weighted and summed is the
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
    """``1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)`` per sample and channel, mean over channels: ``[B]``.

    ``p`` is the sigmoid of ``logits``; sums run over each channel's voxels, so a small
    structure counts as much as a large one. ``smooth`` keeps patches without target defined
    (an empty prediction there scores 0 loss) and is small next to a CTV's voxel count.
    """
    p = torch.sigmoid(logits.float()).flatten(2)
    t = target.float().flatten(2)
    return (1.0 - (2 * (p * t).sum(2) + smooth) / (p.sum(2) + t.sum(2) + smooth)).mean(1)
