"""Running the network on a device: device choice, threads, mixed precision, inference preparation.

Everything here is about *how* the network runs, not what it computes; the network itself is
:mod:`ctv_core.model.unet3d`. Prediction and training validation both get their forward function
from :func:`logits_function`, so the two cannot run the model differently.

* Devices: ``"auto"`` takes CUDA when available, else the CPU; an unavailable or unknown device
  is a :class:`~ctv_core.errors.DeviceError` with the fix in its message.
* CPU: one intra-op thread per usable CPU (affinity mask and cgroup quota), batch norms folded
  into the convolutions, ``channels_last_3d`` memory format, oneDNN called directly for small
  convolutions; float32 throughout.
* CUDA: ``cudnn.benchmark`` on; the forward under autocast (bfloat16 where supported, else
  float16).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .devices import device_name, usable_cpu_count
from .unet3d import ConvNorm, UNet3D

logger = logging.getLogger(__name__)

def _fold_conv_norm(unit: ConvNorm) -> None:
    """Fold ``unit.norm`` (eval-mode statistics) into ``unit.conv`` and make the norm the identity."""
    norm, conv = unit.norm, unit.conv
    if not isinstance(norm, nn.BatchNorm3d):
        return
    scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias.detach() - norm.running_mean * scale
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(shift)
    if isinstance(conv, nn.ConvTranspose3d):  # weight [C_in, C_out, k, k, k]
        weight = weight * scale[None, :, None, None, None]
    else:                                      # weight [C_out, C_in, k, k, k]
        weight = weight * scale[:, None, None, None, None]
    conv.weight = nn.Parameter(weight, requires_grad=False)
    conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)
    unit.norm = nn.Identity()


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold every batch norm of ``model``'s :class:`ConvNorm` units into its convolution, in place."""
    for module in model.modules():
        if isinstance(module, ConvNorm):
            _fold_conv_norm(module)
    return model


def use_channels_last(model: UNet3D) -> UNet3D:
    """Switch ``model`` (in place) to the ``channels_last_3d`` memory format, inputs included.

    The forward then converts its input and the recurrent probability to the same layout, so
    oneDNN runs its blocked 3x3x3 kernels without reordering. Used for CPU inference and CPU
    training (about 1.5x faster on 16-channel full-resolution convolutions, forward and
    backward); values are unchanged. Returns ``model``.
    """
    model.to(memory_format=torch.channels_last_3d)
    model._channels_last = True
    return model


def prepare_for_inference(model: UNet3D, device: torch.device | str) -> UNet3D:
    """A copy of ``model`` ready to run under ``torch.inference_mode()`` on ``device``.

    Eval mode, every batch norm folded into the convolution before it (the same function within
    float rounding; ``model`` itself is left untouched, so training can go on), parameters on
    ``device``, and on the CPU the ``channels_last_3d`` memory format, which the forward then
    also applies to its input (about 1.6x faster for the 16-channel full-resolution
    convolutions). On CUDA the default layout is kept (not measured here). Run it under
    :func:`autocast_context` for mixed precision on CUDA.
    """
    device = torch.device(device)
    prepared = copy.deepcopy(model).eval()
    fold_batch_norms(prepared)
    for p in prepared.parameters():
        p.requires_grad_(False)
    prepared = prepared.to(device)
    if device.type == "cpu":
        use_channels_last(prepared)
        if torch.backends.mkldnn.is_available() and hasattr(torch.ops.aten, "mkldnn_convolution"):
            for unit in prepared.modules():
                if isinstance(unit, ConvNorm) and type(unit.conv) is nn.Conv3d:
                    unit.direct_onednn = True
    return prepared


def autocast_context(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward on CUDA (bfloat16 where supported, else float16); a no-op elsewhere.

    The CPU keeps float32: the accuracy of the reference model is defined there, and oneDNN's
    float32 convolutions already reach the speed target.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def select_device(device: str = "auto") -> torch.device:
    """The torch device for ``--device``: ``"auto"`` (CUDA if available, else CPU), ``"cpu"`` or ``"cuda"``.

    Raises ``DeviceError`` (a ``ValueError``) for ``"cuda"`` without a usable CUDA device, or an unknown name
    (:func:`~ctv_core.model.devices.device_name`).
    """
    if str(device).strip().lower() == "auto":  # torch is imported here anyway: ask it
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device_name(device))


def configure_runtime(device: torch.device) -> None:
    """Process-wide torch settings for running the network on ``device``.

    CPU: one intra-op thread per usable CPU (the affinity mask, capped by a cgroup CPU quota),
    because torch's default can count CPUs the process is not allowed to run on, and more
    threads than cores slow oneDNN convolutions down. CUDA: ``cudnn.benchmark`` on, so cuDNN
    picks its fastest algorithm for each input shape once (the patch size is fixed, so the
    search is paid once per run).
    """
    device = torch.device(device)
    if device.type == "cpu":
        threads = usable_cpu_count()
        torch.set_num_threads(threads)
        logger.debug("torch CPU threads: %d", threads)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def logits_function(network: nn.Module, device: torch.device) -> Callable[[Tensor], Tensor]:
    """The network's forward on ``device`` under :func:`autocast_context`: input ``[B, C, z, y, x]`` -> logits.

    The one way prediction and training validation call a prepared network, so mixed precision
    is used (or not) identically in both. Call it under ``torch.inference_mode()``.
    """

    def logits_of(tensor: Tensor) -> Tensor:
        with autocast_context(device):
            return network(tensor)

    return logits_of
