"""The network (ctv_core.model.unet3d) and its configuration (ctv_core.model.network_config), on the CPU."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ctv_core.model.network_config import NetworkConfig
from ctv_core.model.runtime import (autocast_context, configure_runtime, fold_batch_norms, prepare_for_inference,
                                    select_device, usable_cpu_count)
from ctv_core.model.unet3d import ConvNorm, UNet3D, count_flops, count_parameters

TINY = NetworkConfig(widths=(4, 8, 8), se_reduction=2, passes=2)


def _model(config: NetworkConfig, seed: int = 0) -> UNet3D:
    torch.manual_seed(seed)
    return UNet3D(config)


@pytest.mark.parametrize("config, shape", [
    (NetworkConfig(), (1, 1, 16, 32, 16)),
    (NetworkConfig(in_channels=2, out_channels=3, widths=(4, 8, 8), blocks_per_level=2, passes=3),
     (2, 2, 8, 12, 4)),
    (NetworkConfig(widths=(4,), passes=1), (1, 1, 3, 5, 7)),
])
def test_output_shape(config, shape):
    model = _model(config).eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], config.out_channels, *shape[2:])
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_non_divisible_size_raises_with_sizes_and_fix():
    model = _model(TINY)  # divisor 4
    with pytest.raises(ValueError, match=r"\(8, 10, 8\).*multiple of 4.*pad to \(8, 12, 8\)"):
        model(torch.randn(1, 1, 8, 10, 8))
    with pytest.raises(ValueError, match="channels|\\[batch, 1"):
        model(torch.randn(1, 2, 8, 8, 8))


def test_divisor_is_two_to_the_levels_below_the_first():
    assert NetworkConfig().divisor == 16
    assert NetworkConfig(widths=(8, 16)).divisor == 2
    assert NetworkConfig(widths=(8,)).divisor == 1


@pytest.mark.parametrize("passes", [1, 2, 3])
def test_later_passes_see_the_previous_probability(passes):
    """Weights reading the probability channel matter only when a previous pass exists."""
    config = NetworkConfig(widths=(4, 8, 8), se_reduction=2, passes=passes)
    model = _model(config).eval()
    image = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        before = model(image)
        first = model.encoder[0][0]  # level-0 block: conv1 and its 1x1x1 skip read [image, probability]
        first.conv1.conv.weight[:, config.in_channels:] += 0.5
        first.skip.conv.weight[:, config.in_channels:] += 0.5
        after = model(image)
    if passes == 1:
        assert torch.equal(before, after)
    else:
        assert (before - after).abs().max() > 1e-4


def test_return_all_passes():
    config = NetworkConfig(widths=(4, 8), se_reduction=2, passes=3)
    model = _model(config).eval()
    image = torch.randn(2, 1, 4, 8, 6)
    with torch.no_grad():
        outputs = model(image, return_all_passes=True)
        last = model(image)
    assert isinstance(outputs, list) and len(outputs) == 3
    assert all(o.shape == (2, 1, 4, 8, 6) for o in outputs)
    assert torch.allclose(outputs[-1], last)
    assert not torch.allclose(outputs[0], outputs[1])  # the refinement changes the prediction


def test_gradients_flow_through_every_pass():
    model = _model(TINY).train()
    outputs = model(torch.randn(2, 1, 8, 8, 8), return_all_passes=True)
    outputs[0].retain_grad()
    outputs[-1].sum().backward()  # loss on the last pass only
    assert outputs[0].grad is not None and outputs[0].grad.abs().sum() > 0  # pass 2 -> pass 1
    weight = model.encoder[0][0].conv1.conv.weight.grad
    assert weight[:, :1].abs().sum() > 0  # image channel
    assert weight[:, 1:].abs().sum() > 0  # probability channel: non-zero only in pass 2


def _randomise_norms(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=generator) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=generator) * 2 + 0.2)
            m.weight.data.copy_(torch.randn(c, generator=generator) * 0.5 + 1)
            m.bias.data.copy_(torch.randn(c, generator=generator) * 0.3)


def test_prepare_for_inference_folds_norms_and_matches_eval():
    model = _model(NetworkConfig(widths=(8, 16, 16), se_reduction=2, passes=2))
    _randomise_norms(model)
    image = torch.randn(2, 1, 8, 16, 12)
    with torch.no_grad():
        expected = model.eval()(image)
    model.train()
    prepared = prepare_for_inference(model, torch.device("cpu"))
    assert not any(isinstance(m, nn.BatchNorm3d) for m in prepared.modules())
    assert any(isinstance(m, nn.BatchNorm3d) for m in model.modules()) and model.training  # original kept
    assert not prepared.training
    assert all(not p.requires_grad for p in prepared.parameters())
    with torch.inference_mode():
        got = prepared(image)
    assert got.shape == expected.shape
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-5


def test_prepared_model_folds_transposed_convolutions():
    """The up-steps' transposed convolutions keep their [C_in, C_out, k, k, k] weight layout."""
    unit = ConvNorm(6, 3, "up")
    _randomise_norms(unit)
    unit.eval()
    x = torch.randn(1, 6, 2, 3, 2)
    with torch.no_grad():
        expected = unit(x)
        fold_batch_norms(unit)
        assert isinstance(unit.norm, nn.Identity)
        assert torch.allclose(unit(x), expected, atol=1e-5)


def test_count_flops_matches_a_hand_count():
    config = NetworkConfig(in_channels=1, out_channels=1, widths=(4, 6), se_reduction=2, passes=1)
    v0, v1 = 2 * 4 * 4, 1 * 2 * 2  # voxels at levels 0 and 1 for a (2, 4, 4) patch
    macs = (
        27 * 2 * 4 * v0 + 27 * 4 * 4 * v0 + 2 * 4 * v0 + (4 * 2 + 2 * 4)  # encoder 0: [image, prob] -> 4, 1x1 skip, SE
        + 8 * 4 * 6 * v1                                                   # down 2x2x2: 4 -> 6
        + 2 * 27 * 6 * 6 * v1 + (6 * 3 + 3 * 6)                            # encoder 1 (bottleneck), SE
        + 8 * 6 * 4 * v1                                                   # up 2x2x2 transposed: 6 -> 4
        + 27 * 8 * 4 * v0 + 27 * 4 * 4 * v0 + 8 * 4 * v0 + (4 * 2 + 2 * 4)  # decoder 0: concat 8 -> 4
        + 4 * 1 * v0                                                       # head 1x1x1
    )
    assert count_flops(config, (2, 4, 4)) == 2 * macs
    assert count_flops(NetworkConfig(**{**config.to_dict(), "passes": 3}), (2, 4, 4)) == 3 * 2 * macs


def test_count_parameters():
    config = NetworkConfig(widths=(4,), se_reduction=2, passes=1)  # one block on [image, prob], head
    model = UNet3D(config)
    conv_norm = lambda cin, cout, k: cin * cout * k + 2 * cout  # noqa: E731  (no conv bias; BN weight, bias)
    expected = (conv_norm(2, 4, 27) + conv_norm(4, 4, 27) + conv_norm(2, 4, 1)
                + (4 * 2 + 2) + (2 * 4 + 4)  # SE linears
                + (4 * 1 + 1))               # head
    assert count_parameters(model) == expected


def test_config_round_trip_and_strictness():
    config = NetworkConfig(in_channels=2, widths=(8, 16, 32), blocks_per_level=2, passes=3)
    data = json.loads(json.dumps(config.to_dict()))
    assert NetworkConfig.from_dict(data) == config
    assert NetworkConfig.from_dict({}) == NetworkConfig()
    with pytest.raises(ValueError, match="unknown setting.*dropout"):
        NetworkConfig.from_dict({"dropout": 0.1})
    for bad in ([], [16, 0], "16", [16.5, 32], None):
        with pytest.raises(ValueError, match="widths"):
            NetworkConfig.from_dict({"widths": bad})
    for key, bad in (("passes", 0), ("passes", True), ("se_reduction", 2.0), ("in_channels", -1)):
        with pytest.raises(ValueError, match=key):
            NetworkConfig.from_dict({key: bad})
    with pytest.raises(ValueError, match="object"):
        NetworkConfig.from_dict([("passes", 2)])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_select_device_without_cuda():
    with pytest.raises(ValueError, match=r"CUDA is not available.*--device cpu"):
        select_device("cuda")
    assert select_device("auto") == torch.device("cpu")
    assert select_device() == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine: the CUDA path is not exercised")
def test_select_device_with_cuda_uses_it_with_autocast():
    assert select_device("cuda").type == "cuda"
    assert select_device("auto").type == "cuda"
    device = torch.device("cuda")
    configure_runtime(device)
    assert torch.backends.cudnn.benchmark
    model = prepare_for_inference(_model(TINY), device)
    with torch.inference_mode(), autocast_context(device):
        assert torch.is_autocast_enabled("cuda")
        out = model(torch.randn(1, 1, 4, 8, 4, device=device))
    assert out.dtype in (torch.bfloat16, torch.float16) and out.device.type == "cuda"


def test_select_device_choices():
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        select_device("tpu")


def test_autocast_is_a_no_op_on_cpu():
    model = prepare_for_inference(_model(TINY), "cpu")
    with torch.inference_mode(), autocast_context(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
        out = model(torch.randn(1, 1, 4, 8, 4))
    assert out.dtype == torch.float32


def test_configure_runtime_cpu_uses_the_usable_cpus():
    before = torch.get_num_threads()
    try:
        configure_runtime(torch.device("cpu"))
        assert torch.get_num_threads() == usable_cpu_count() >= 1
    finally:
        torch.set_num_threads(before)


def test_same_seed_same_network_and_output():
    image = torch.randn(1, 1, 8, 8, 8)
    outputs = []
    for seed in (7, 7, 8):
        with torch.no_grad():
            outputs.append(_model(TINY, seed).eval()(image))
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.allclose(outputs[0], outputs[2])
