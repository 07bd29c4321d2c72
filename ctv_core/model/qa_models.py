"""Reference "models" for geometric quality assurance of the prediction pipeline.

A physicist checks an auto-contouring chain end to end the way one checks a planning system:
with a phantom whose answer is known. ``HUWindowModel`` outputs "inside" exactly where the
input's HU lie in a window, so ``ctv predict`` with it on a phantom must reproduce, voxel for
voxel on the CT, the structure with those HU: any shift, flip or half-voxel error in
resampling, inversion or writing shows up. It is packaged like a trained model (manifest,
checksummed weights), so it exercises the same loading path.
"""

from __future__ import annotations

import torch
from torch import nn

from .qa_config import HUWindowConfig


class HUWindowModel(nn.Module):
    """Logits ``sharpness * min(HU - low, high - HU)`` from a normalised input ``[B, 1, z, y, x]``."""

    def __init__(self, config: HUWindowConfig):
        super().__init__()
        self.config = config
        lo, hi = config.input_window
        self.register_buffer("bounds_hu", torch.tensor([config.low_hu, config.high_hu], dtype=torch.float32))
        self.register_buffer("window_hu", torch.tensor([lo, hi], dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        lo, hi = self.window_hu[0], self.window_hu[1]
        hu = image[:, :1] * (hi - lo) / 2 + (lo + hi) / 2
        margin = torch.minimum(hu - self.bounds_hu[0], self.bounds_hu[1] - hu)
        return self.config.sharpness * (margin + 0.5)
