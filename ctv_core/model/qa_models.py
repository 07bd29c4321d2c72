"""Reference "models" for geometric quality assurance of the prediction pipeline.

A physicist checks an auto-contouring chain end to end the way one checks a planning system:
with a phantom whose answer is known. ``HUWindowModel`` outputs "inside" exactly where the
input's HU lie in a window, so ``ctv predict`` with it on a phantom must reproduce, voxel for
voxel on the CT, the structure with those HU: any shift, flip or half-voxel error in
resampling, inversion or writing shows up. It is packaged like a trained model (manifest,
checksummed weights), so it exercises the same loading path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..strict_config import check_numbers, from_plain, is_int


@dataclass(frozen=True)
class HUWindowConfig:
    """The window, in HU, and the model's HU normalisation window (to undo it).

    Attributes
    ----------
    low_hu, high_hu
        Voxels with ``low_hu <= HU <= high_hu`` get probability above 0.5.
    input_window
        The preprocessing ``hu_window`` the input was normalised with.
    sharpness
        Logit gain per HU (large: a hard threshold).
    """

    low_hu: float
    high_hu: float
    input_window: tuple[float, float]
    sharpness: float = 50.0
    divisor: int = 16

    def __post_init__(self) -> None:
        check_numbers("network.low_hu/high_hu", (self.low_hu, self.high_hu), 2, -5000.0, 50000.0)
        check_numbers("network.input_window", self.input_window, 2, -5000.0, 50000.0)
        check_numbers("network.sharpness", (self.sharpness,), 1, 0.0, 1e6)
        if not is_int(self.divisor) or self.divisor not in (1, 2, 4, 8, 16, 32, 64):
            raise ValueError(f"network.divisor must be a power of two within 1..64, not {self.divisor!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HUWindowConfig:
        return from_plain(cls, data, "network (hu_window)")


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
