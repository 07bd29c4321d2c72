"""The network's architecture as a frozen, JSON-friendly configuration.

Written into the model package's manifest beside the weights, so a model file describes the
network it needs. ``from_dict`` is strict: an unknown key or a bad value raises ``ValueError``
naming it (no silent fallbacks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..strict_config import from_plain, is_int

#: The most channels a level may have.
MAX_WIDTH = 1024


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of :class:`ctv_core.model.unet3d.UNet3D` (the thesis' recurrent residual SE 3D U-Net).

    Attributes
    ----------
    in_channels
        Image channels of the input. The previous pass's probability (``out_channels`` more
        channels) is added inside the network.
    out_channels
        Output channels (logits; one per structure).
    widths
        Feature channels per resolution level, finest first; the depth is ``len(widths)`` and
        each level halves the resolution along z, y and x.
    blocks_per_level
        Residual squeeze-and-excitation blocks per level, in the encoder and in the decoder.
    se_reduction
        Channel reduction inside the squeeze-and-excitation gate (C -> C // se_reduction -> C).
    passes
        Recurrent refinement passes; pass n sees the image and the probability of pass n - 1
        (zeros for the first). 1 is a plain U-Net.
    """

    in_channels: int = 1
    out_channels: int = 1
    widths: tuple[int, ...] = (16, 32, 64, 96, 128)
    blocks_per_level: int = 1
    se_reduction: int = 4
    passes: int = 2

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "blocks_per_level", "se_reduction", "passes"):
            value = getattr(self, name)
            if not is_int(value) or not 1 <= value <= 64:
                raise ValueError(f"network.{name} must be an integer within 1..64, not {value!r}")
        if self.passes > 8:
            raise ValueError(f"network.passes must be within 1..8, not {self.passes}")
        widths = self.widths
        if isinstance(widths, list):
            widths = tuple(widths)
            object.__setattr__(self, "widths", widths)
        if (not isinstance(widths, tuple) or not 1 <= len(widths) <= 7
                or any(not is_int(w) or not 1 <= w <= MAX_WIDTH for w in widths)):
            raise ValueError(
                f"network.widths must be 1 to 7 integers within 1..{MAX_WIDTH} (channels per level, finest "
                f"first), not {self.widths!r}")

    @property
    def depth(self) -> int:
        """Number of resolution levels."""
        return len(self.widths)

    @property
    def divisor(self) -> int:
        """Input sizes along z, y and x must be multiples of this (2 ** (depth - 1))."""
        return 2 ** (self.depth - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (``widths`` as a list)."""
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        """Inverse of :meth:`to_dict`; unknown keys or bad values raise ``ValueError`` naming them."""
        return from_plain(cls, data, "network")
