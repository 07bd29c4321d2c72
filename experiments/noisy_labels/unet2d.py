"""The 2D segmentation network of the JSRT reproduction: a plain U-Net, as in the method's experiment.

Tensors are ``[B, C, H, W]`` (H, W: image rows and columns). Each level is two 3x3
convolutions with batch norm and ReLU; down by 2x2 max-pooling, up by a 2x2 transposed
convolution, skips concatenated; a 1x1 convolution gives one logit per structure (multi-label:
the clavicles overlap the lungs in the SCR masks, so each structure is its own sigmoid).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True))


class UNet2D(nn.Module):
    """U-Net with ``widths[l]`` channels at level l (finest first); input sizes multiples of 2 ** (levels - 1).

    ``forward(image, return_all_passes=False)`` takes ``[B, in_channels, H, W]`` and gives
    ``[B, out_channels, H, W]`` logits; with ``return_all_passes`` a one-element list (the
    trainer's objective takes every pass of the recurrent 3D network; this one has one).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        self.encoder = nn.ModuleList([_double_conv(in_channels, widths[0])])
        self.encoder.extend(_double_conv(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths[:-1], widths[1:]))
        self.decoder = nn.ModuleList(_double_conv(2 * a, a) for a in widths[:-1])
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        self.memory_format = torch.contiguous_format

    def use_channels_last(self) -> UNet2D:
        """Channels-last weights and inputs: oneDNN's fast layout on the CPU (2.2x here); returns ``self``."""
        self.memory_format = torch.channels_last
        return self.to(memory_format=torch.channels_last)

    def forward(self, image: Tensor, return_all_passes: bool = False) -> Tensor | list[Tensor]:
        skips = []
        x = image.contiguous(memory_format=self.memory_format)
        for level, block in enumerate(self.encoder):
            if level:
                x = nn.functional.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, block in zip(reversed(self.up), reversed(self.decoder)):
            x = block(torch.cat((up(x), skips.pop()), dim=1))
        logits = self.head(x).contiguous()
        return [logits] if return_all_passes else logits
