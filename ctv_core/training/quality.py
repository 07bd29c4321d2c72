"""Learned sample weights for noisy labels: the Quality Awareness (QAM) and Overfitting Control (OCM) modules.

The method ("Pick-and-Learn", MICCAI 2019), for a batch of ``B`` samples with losses ``L_i``:

* the QAM, a VGG-style network on the image concatenated with its label, pooled to one raw
  score ``r_i`` per sample (:class:`QualityAwarenessNet`);
* the OCM bounds it: ``s_i = lambda * tanh(r_i)`` (without the OCM, ``s_i = r_i``);
* the weights are the softmax over the batch, ``w_i = exp(s_i) / sum_j exp(s_j)``, so
  ``sum_i w_i = 1``, and with the OCM ``|s_i - s_j| < 2 lambda`` gives
  ``w_i / w_j < exp(2 lambda)`` (e^4 ~ 55 for lambda = 2): no sample is ever silenced, none
  dominates;
* one loss ``L = sum_i w_i L_i`` trains both networks. Its gradients are
  ``dL/dtheta = sum_i w_i dL_i/dtheta`` for the segmentation network and
  ``dL/ds_i = w_i (L_i - sum_j w_j L_j)`` for the scores: the QAM raises the score of a
  sample whose loss is below the batch's weighted mean and lowers it above, i.e. it learns
  which (image, label) pairs the segmentation network agrees with.

Batch size one (a 3D network that fits one patch): the softmax of one sample is 1 and the
QAM learns nothing. Here the batch is kept and processed in micro-batches
(``sampling.micro_batch``, :func:`ctv_core.training.step.train_step`):

1. :meth:`QualityAwareWeighting.plan` scores the ``B`` samples without gradients (the QAM
   sees only images and labels, not the network) and fixes ``w``;
2. each micro-batch goes forward and backward through the network with loss
   ``sum_{i in micro-batch} w_i L_i``; the gradients add up to ``sum_i w_i dL_i/dtheta``;
3. :meth:`QualityAwareWeighting.backward` recomputes the scores micro-batch by micro-batch
   with gradients and back-propagates ``sum_i s_i c_i`` with the constants
   ``c_i = w_i (L_i - sum_j w_j L_j)``, i.e. exactly ``dL/ds_i``.

Both networks get the gradients of the method's joint loss over the whole batch, the weights
still sum to 1 over that batch and the ratio bound is the softmax's own, while memory is that
of one micro-batch; batch norm of the segmentation network sees the micro-batch. Nothing
carries over from one step to the next, so a resumed run is exact from the modules and
optimisers alone. The cost is one extra QAM forward per sample.

(A softmax over a queue of earlier steps' scores was considered and not taken: the queued
scores and losses come from older networks, and since the segmentation loss falls during
training a current sample looks better than the queued ones, which a cross-step softmax
rewards with a drift of every score upwards into the tanh's flat end; the batch softmax is
invariant to such a shift.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from .objective import SampleWeighting, UniformWeighting, WeightPlan
from .quality_config import QualityConfig

#: Name of the QAM among the trained modules and optimisers (checkpoints, logs).
QAM = "qam"


class QualityAwarenessNet(nn.Module):
    """The QAM: a VGG-style network on (image, label) pooled to one raw score per sample.

    Parameters
    ----------
    in_channels
        Image channels plus label channels (the method: ``n + 1`` for ``n`` structures).
    spatial_dims
        2 (``[B, C, H, W]``) or 3 (``[B, C, z, y, x]``).
    widths, convs_per_level, input_stride
        As :class:`~ctv_core.training.quality_config.QualityConfig` describes.

    Notes
    -----
    Each level is ``convs_per_level`` 3x3(x3) convolutions with ReLU; a 2x max-pooling
    (rounding up, so small patches never vanish) follows every level but the last. A 1x1(x1)
    convolution to one channel and a global average pool give the raw score. That last
    convolution starts at zero, so every score starts at 0 and training starts from uniform
    weights. No normalisation layer: a sample's score must not depend on the other samples
    (micro-batches of one give the same scores as the whole batch).
    """

    def __init__(self, in_channels: int, spatial_dims: int, widths: Sequence[int] = (16, 32, 64, 128),
                 convs_per_level: int = 2, input_stride: int = 1) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, not {spatial_dims!r}")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.pool = nn.MaxPool2d(2, ceil_mode=True) if spatial_dims == 2 else nn.MaxPool3d(2, ceil_mode=True)
        self.spatial_dims, self.input_stride = spatial_dims, int(input_stride)
        levels = []
        channels = in_channels
        for width in widths:
            layers: list[nn.Module] = []
            for _ in range(convs_per_level):
                layers += [conv(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
                channels = width
            levels.append(nn.Sequential(*layers))
        self.levels = nn.ModuleList(levels)
        self.head = conv(channels, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.memory_format = torch.contiguous_format

    def use_channels_last(self) -> QualityAwarenessNet:
        """Channels-last weights and inputs (oneDNN's fast CPU layout; about 2x here); returns ``self``."""
        self.memory_format = torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d
        return self.to(memory_format=self.memory_format)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_channels, *spatial]`` -> ``[B]`` raw scores."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"the QAM takes [B, C, {'H, W' if self.spatial_dims == 2 else 'z, y, x'}] inputs, "
                             f"not shape {tuple(x.shape)}")
        x = x.contiguous(memory_format=self.memory_format)
        if self.input_stride > 1:
            pool = nn.functional.avg_pool2d if self.spatial_dims == 2 else nn.functional.avg_pool3d
            x = pool(x, self.input_stride, ceil_mode=True)
        for n, level in enumerate(self.levels):
            if n:
                x = self.pool(x)
            x = level(x)
        return self.head(x).flatten(1).mean(1)


def bounded_scores(raw: Tensor, ocm_lambda: float | None) -> Tensor:
    """The OCM: ``ocm_lambda * tanh(raw)``, within ``(-lambda, lambda)``; ``raw`` itself when ``ocm_lambda`` is None."""
    return raw if ocm_lambda is None else ocm_lambda * torch.tanh(raw)


def _chunks(count: int, size: int | None) -> Iterator[slice]:
    step = size or count
    for start in range(0, count, step):
        yield slice(start, min(start + step, count))


class QualityAwareWeighting:
    """Sample weights ``softmax(OCM(QAM(image, label)))`` over the batch, trained with the network.

    A :class:`~ctv_core.training.objective.SampleWeighting`; the module docstring gives the
    maths. ``modules`` and ``optimizers`` hold the QAM and its Adam under the name ``"qam"``.

    Parameters
    ----------
    config
        The ``quality`` section of the training configuration (must be enabled).
    in_channels
        Image channels plus label channels.
    spatial_dims
        2 or 3.
    micro_batch
        Samples per QAM forward (None: the whole batch at once).
    device
        Where the QAM lives (the network's device).
    """

    def __init__(self, config: QualityConfig, in_channels: int, spatial_dims: int, micro_batch: int | None = None,
                 device: torch.device | str = "cpu") -> None:
        if not config.enabled:
            raise ValueError("QualityAwareWeighting needs quality.enabled = true")
        self.config = config
        self.ocm_lambda = float(config.ocm_lambda) if config.overfitting_control else None
        self.micro_batch = micro_batch
        self.net = QualityAwarenessNet(in_channels, spatial_dims, config.widths, config.convs_per_level,
                                       config.input_stride).to(device)
        if torch.device(device).type == "cpu":
            self.net.use_channels_last()
        self.modules = {QAM: self.net}
        self.optimizers = {QAM: torch.optim.Adam(self.net.parameters(), lr=config.learning_rate)}

    def _scores(self, images: Tensor, masks: Tensor, part: slice) -> tuple[Tensor, Tensor]:
        raw = self.net(torch.cat((images[part].float(), masks[part].float()), dim=1))
        return raw, bounded_scores(raw, self.ocm_lambda)

    def plan(self, images: Tensor, masks: Tensor, case_ids: Sequence[str]) -> WeightPlan:
        """Scores without gradients and their softmax over the batch (the QAM is trained in :meth:`backward`)."""
        with torch.no_grad():
            pairs = [self._scores(images, masks, part) for part in _chunks(images.shape[0], self.micro_batch)]
        raw = torch.cat([r for r, _ in pairs])
        scores = torch.cat([s for _, s in pairs])
        return WeightPlan(weights=torch.softmax(scores, dim=0), raw_scores=raw, scores=scores)

    def backward(self, plan: WeightPlan, images: Tensor, masks: Tensor, losses: Tensor,
                 scaler: torch.amp.GradScaler) -> None:
        """Accumulate ``dL/dphi = sum_i c_i ds_i/dphi`` with ``c_i = w_i (L_i - sum_j w_j L_j)`` into the QAM."""
        weights = plan.weights.float()
        losses = losses.detach().float().to(weights.device)
        coefficients = weights * (losses - (weights * losses).sum())
        for part in _chunks(images.shape[0], self.micro_batch):
            _, scores = self._scores(images, masks, part)
            scaler.scale((scores * coefficients[part]).sum()).backward()


def build_weighting(config: QualityConfig, in_channels: int, spatial_dims: int, micro_batch: int | None,
                    device: torch.device | str) -> SampleWeighting:
    """The sample weighting a configuration asks for: :class:`QualityAwareWeighting` when enabled, else uniform."""
    if not config.enabled:
        return UniformWeighting()
    return QualityAwareWeighting(config, in_channels, spatial_dims, micro_batch, device)
