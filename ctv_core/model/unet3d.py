"""The CTV network: a recurrent 3D U-Net of residual squeeze-and-excitation blocks, and its runtime.

The method (a 2019 thesis on cervical-cancer CTV delineation): 3x3x3 convolutions with batch
norm and ELU in residual blocks with squeeze-and-excitation, channel widths 16/32/64/96/128,
and a recurrent refinement. The same network runs ``passes`` times; pass n sees the image
concatenated with the sigmoid of pass n - 1's logits (zeros for the first pass), and training
back-propagates through every pass. The network returns logits; callers apply the sigmoid.

Every tensor is ``[B, C, D, H, W]`` with D, H, W the z, y, x axes of the model grid.

Choices, measured on a 2-core AVX-512 CPU with torch 2.13 (``benchmarks/network_speed.py``):

* Downsampling is a learned 2x2x2 convolution with stride 2 that also widens the channels
  (C_l -> C_l+1). It costs 1/8 of a full-resolution 2x2x2 product per output voxel, needs no
  separate 1x1x1 projection in the next block, and ran as fast as max-pooling alone
  (21 ms vs 18 ms for 16 channels at 96x112x144, channels-last).
* Upsampling is a 2x2x2 transposed convolution with stride 2 (no overlapping taps, so no
  uneven-overlap checkerboard), narrowing C_l+1 -> C_l. Trilinear upsampling followed by a
  3x3x3 convolution costs a full-resolution convolution instead: 380 ms vs 57 ms at level 0.
* Skips are concatenated as in the U-Net of the method; the first decoder block maps
  2 C -> C with a 1x1x1 projection on its residual path.
* For inference, :func:`ctv_core.model.runtime.prepare_for_inference` folds every batch norm into its convolution and
  switches CPU models to ``channels_last_3d`` (oneDNN's blocked kernels: 16-channel 3x3x3
  convolution 157 vs 98 GFLOP/s). ELU runs in place, and the SE gate and the residual sum are
  one ``addcmul``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .network_config import NetworkConfig


class ConvNorm(nn.Module):
    """A convolution followed by batch norm; the unit :func:`fold_batch_norms` folds.

    ``[B, C_in, D, H, W] -> [B, C_out, D', H', W']`` (D' = D for the 3x3x3 and 1x1x1 forms,
    D / 2 for ``kind="down"``, 2 D for ``kind="up"``). The convolution has no bias while the
    norm follows it; folding gives it one.
    """

    def __init__(self, in_channels: int, out_channels: int, kind: str = "3x3x3") -> None:
        super().__init__()
        if kind == "3x3x3":
            self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False)
        elif kind == "1x1x1":
            self.conv = nn.Conv3d(in_channels, out_channels, 1, bias=False)
        elif kind == "down":
            self.conv = nn.Conv3d(in_channels, out_channels, 2, stride=2, bias=False)
        elif kind == "up":
            self.conv = nn.ConvTranspose3d(in_channels, out_channels, 2, stride=2, bias=False)
        else:
            raise ValueError(f"ConvNorm kind must be 3x3x3, 1x1x1, down or up, not {kind!r}")
        self.norm: nn.Module = nn.BatchNorm3d(out_channels)
        self.direct_onednn = False  # set by runtime.prepare_for_inference on the CPU

    def forward(self, x: Tensor) -> Tensor:
        if self.direct_onednn and x.dtype == torch.float32 and x.device.type == "cpu":
            # torch sends small fp32 inputs (N*C*D*H < 20480, the 96- and 128-channel levels) to
            # its slow im2col path; oneDNN is 2.5-3.5x faster there, so call it directly.
            c = self.conv
            return torch.ops.aten.mkldnn_convolution(
                x, c.weight, c.bias, list(c.padding), list(c.stride), list(c.dilation), c.groups)
        return self.norm(self.conv(x))


class SqueezeExcitation(nn.Module):
    """Channel gate of squeeze-and-excitation: global mean -> C/r -> ELU -> C -> sigmoid.

    ``forward`` maps ``[B, C, D, H, W]`` to the gate ``[B, C, 1, 1, 1]`` (values in (0, 1)); the
    residual block applies it, fused with its sum.
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3, 4))
        s = torch.sigmoid(self.excite(nn.functional.elu(self.squeeze(s))))
        return s[:, :, None, None, None]


class ResidualSEBlock(nn.Module):
    """ELU(SE(BN(conv(ELU(BN(conv(x)))))) + skip(x)) with 3x3x3 convolutions.

    ``[B, C_in, D, H, W] -> [B, C_out, D, H, W]``; ``skip`` is the identity when C_in == C_out,
    else a 1x1x1 convolution with batch norm.
    """

    def __init__(self, in_channels: int, out_channels: int, se_reduction: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(in_channels, out_channels)
        self.conv2 = ConvNorm(out_channels, out_channels)
        self.se = SqueezeExcitation(out_channels, se_reduction)
        self.skip: nn.Module = (nn.Identity() if in_channels == out_channels
                                else ConvNorm(in_channels, out_channels, "1x1x1"))

    def forward(self, x: Tensor) -> Tensor:
        h = nn.functional.elu(self.conv1(x), inplace=True)
        h = self.conv2(h)
        # One pass over memory for gate and sum: skip + h * gate.
        out = torch.addcmul(self.skip(x), h, self.se(h))
        return nn.functional.elu(out, inplace=True)


class DownStep(nn.Module):
    """Halve the resolution and widen: ``[B, C_in, D, H, W] -> [B, C_out, D/2, H/2, W/2]``.

    A 2x2x2 stride-2 convolution + BN + ELU (learned, and cheaper than pooling followed by a
    projection; see the module docstring).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvNorm(in_channels, out_channels, "down")

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.elu(self.conv(x), inplace=True)


class UpStep(nn.Module):
    """Double the resolution and narrow: ``[B, C_in, D, H, W] -> [B, C_out, 2D, 2H, 2W]``.

    A 2x2x2 stride-2 transposed convolution + BN + ELU.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvNorm(in_channels, out_channels, "up")

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.elu(self.conv(x), inplace=True)


def _blocks(in_channels: int, out_channels: int, count: int, se_reduction: int) -> nn.Sequential:
    first = ResidualSEBlock(in_channels, out_channels, se_reduction)
    rest = [ResidualSEBlock(out_channels, out_channels, se_reduction) for _ in range(count - 1)]
    return nn.Sequential(first, *rest)


class UNet3D(nn.Module):
    """The recurrent residual-SE 3D U-Net.

    Parameters
    ----------
    config
        The architecture; see :class:`~ctv_core.model.network_config.NetworkConfig`.

    Notes
    -----
    Level l has ``widths[l]`` channels. Encoder: level 0 is residual blocks on the input
    (image + previous probability); level l > 0 is a :class:`DownStep` then residual blocks
    (the deepest level is the bottleneck). Decoder, from level depth - 2 to 0: an
    :class:`UpStep`, concatenation with the encoder's level-l features, residual blocks. A
    1x1x1 convolution gives the logits. All passes share the weights.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        widths, n, r = config.widths, config.blocks_per_level, config.se_reduction
        self.encoder = nn.ModuleList([_blocks(config.in_channels + config.out_channels, widths[0], n, r)])
        self.down = nn.ModuleList()
        for lower, higher in zip(widths[:-1], widths[1:]):
            self.down.append(DownStep(lower, higher))
            self.encoder.append(_blocks(higher, higher, n, r))
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(config.depth - 1)):
            self.up.append(UpStep(widths[level + 1], widths[level]))
            self.decoder.append(_blocks(2 * widths[level], widths[level], n, r))
        self.head = nn.Conv3d(widths[0], config.out_channels, 1)
        self._channels_last = False

    def check_input(self, image: Tensor) -> None:
        """Raise ``ValueError`` unless ``image`` is ``[B, in_channels, D, H, W]`` with sizes the network takes."""
        cfg = self.config
        if image.ndim != 5 or image.shape[1] != cfg.in_channels:
            raise ValueError(
                f"the network takes [batch, {cfg.in_channels}, z, y, x] images, not shape "
                f"{tuple(image.shape)}")
        sizes = tuple(image.shape[2:])
        if any(s % cfg.divisor for s in sizes):
            fixed = tuple(-(-s // cfg.divisor) * cfg.divisor for s in sizes)
            raise ValueError(
                f"input size (z, y, x) {sizes} is not a multiple of {cfg.divisor} along every axis "
                f"(the network halves the resolution {cfg.depth - 1} times); pad or crop the "
                f"volume, e.g. pad to {fixed}, or use a patch size that is a multiple of {cfg.divisor}")

    def _single_pass(self, x: Tensor) -> Tensor:
        """One U-Net pass: ``[B, in + out channels, D, H, W] -> [B, out_channels, D, H, W]`` logits."""
        skips = []
        for level, blocks in enumerate(self.encoder):
            if level:
                x = self.down[level - 1](x)
            x = blocks(x)
            skips.append(x)
        skips.pop()  # the bottleneck's output is x itself
        for up, blocks in zip(self.up, self.decoder):
            x = blocks(torch.cat((up(x), skips.pop()), dim=1))
        return self.head(x)

    def forward(self, image: Tensor, return_all_passes: bool = False) -> Tensor | list[Tensor]:
        """Logits of the last pass, or of every pass.

        Parameters
        ----------
        image
            ``[B, in_channels, D, H, W]``, D, H, W multiples of ``config.divisor``.
        return_all_passes
            Return the list of every pass's logits (deep supervision in training).

        Returns
        -------
        Tensor or list of Tensor
            ``[B, out_channels, D, H, W]`` logits (before the sigmoid).
        """
        self.check_input(image)
        if self._channels_last:
            image = image.contiguous(memory_format=torch.channels_last_3d)
        b, _, d, h, w = image.shape
        probability = image.new_zeros((b, self.config.out_channels, d, h, w))
        if self._channels_last:
            probability = probability.contiguous(memory_format=torch.channels_last_3d)
        outputs = []
        for n in range(self.config.passes):
            if n:
                probability = torch.sigmoid(outputs[-1])
            outputs.append(self._single_pass(torch.cat((image, probability), dim=1)))
        if return_all_passes:
            return [o.contiguous() for o in outputs]
        return outputs[-1].contiguous()


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (weights and biases) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def count_flops(config: NetworkConfig, patch_zyx: tuple[int, int, int]) -> float:
    """FLOPs of one forward call (all passes) on one ``patch_zyx`` input (z, y, x voxels), batch 1.

    A multiply-add counts as 2 FLOPs. Counted by ``torch.utils.flop_counter.FlopCounterMode``
    on the meta device (no memory, no arithmetic): convolutions, transposed convolutions and
    the SE gates' linear layers. Norms, activations and sums (a few FLOPs per value) are not
    counted, as usual.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = UNet3D(config).eval()
        image = torch.empty((1, config.in_channels, *patch_zyx))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(image)
    return float(counter.get_total_flops())
