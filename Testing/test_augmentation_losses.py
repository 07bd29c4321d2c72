"""Augmentation transforms (alignment, what each changes, determinism) and the loss (hand-checked values)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ctv_core.training.augmentation import (CenterCrop, Compose, RandomFlip, RandomGaussianNoise, RandomHUOffset,
                                            RandomIntensityScale, RandomRotate, RandomTranslate, build_augmentation,
                                            region_margin, rotate_pair)
from ctv_core.training.losses import bce_loss, soft_dice_loss
from ctv_core.training.objective import DeepSupervisionObjective, UniformWeighting, weighted_loss
from ctv_core.training.config import AugmentationConfig


def _pair(shape=(20, 36, 40), seed=0):
    """A blob mask [z, y, x] and an image that encodes it (2 * mask - 1) plus a gradient, so moves are visible."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    centre = np.asarray(shape) / 2 + rng.uniform(-2, 2, 3)
    mask = (((z - centre[0]) / 5) ** 2 + ((y - centre[1]) / 9) ** 2 + ((x - centre[2]) / 7) ** 2 <= 1)
    mask &= ~((x > centre[2]) & (y > centre[1]))  # not symmetric: flips and rotations are visible
    image = np.where(mask, 1.0, -1.0).astype(np.float32)
    return image, mask.astype(np.uint8)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_flip_changes_and_flip_twice_is_identity(axis):
    image, mask = _pair()
    flip = RandomFlip(axis, probability=1.0)
    once_i, once_m = flip(image, mask)
    assert not np.array_equal(once_m, mask)
    np.testing.assert_array_equal(once_m, np.flip(mask, axis))
    np.testing.assert_array_equal(once_i > 0, once_m.astype(bool))  # still aligned
    twice_i, twice_m = flip(once_i, once_m)
    np.testing.assert_array_equal(twice_i, image)
    np.testing.assert_array_equal(twice_m, mask)
    never = RandomFlip(axis, probability=0.0)
    assert never(image, mask)[1] is mask


def test_translation_moves_image_and_mask_together_within_limit():
    image, mask = _pair()
    moved = 0
    for seed in range(10):
        t = RandomTranslate(max_voxels=8).set_random_state(seed)
        out_i, out_m = t(image, mask)
        np.testing.assert_array_equal(out_i > 0, out_m.astype(bool))
        # the mask's centre of mass moved by the same whole-voxel shift the image did, at most 8 voxels
        shift = np.argwhere(out_m).mean(0) - np.argwhere(mask).mean(0)
        assert np.all(np.abs(shift) <= 8 + 1e-6)
        moved += bool(np.abs(shift).max() > 0.5)
    assert moved >= 8


def test_rotation_keeps_alignment_and_rotates_about_the_centre():
    image, mask = _pair(shape=(24, 48, 48))
    out_i, out_m = rotate_pair(image, mask, 10.0, 0.0, 0.0)
    # image = 2 * fraction - 1 under linear interpolation, so image > 0 exactly where fraction > 0.5
    agree = np.mean((out_i > 0) == out_m.astype(bool))
    assert agree > 0.999
    assert not np.array_equal(out_m, mask)
    assert abs(int(out_m.sum()) - int(mask.sum())) < 0.05 * mask.sum()  # a rotation keeps the volume
    # the rotation is about the z axis: no slice gains target where it had none
    assert set(np.flatnonzero(out_m.any(axis=(1, 2)))) <= set(np.flatnonzero(mask.any(axis=(1, 2))))
    # zero angles give the input back
    same_i, same_m = rotate_pair(image, mask, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(same_i, image, atol=1e-5)
    np.testing.assert_array_equal(same_m, mask)
    rot = RandomRotate(10.0, 5.0, probability=1.0).set_random_state(3)
    r_i, r_m = rot(image, mask)
    assert np.mean((r_i > 0) == r_m.astype(bool)) > 0.999


def test_noise_has_the_configured_variance_and_leaves_the_mask():
    image, mask = _pair(shape=(40, 64, 64))
    noisy, same_mask = RandomGaussianNoise(0.001, probability=1.0).set_random_state(1)(image, mask)
    assert same_mask is mask
    variance = float(np.var(noisy - image))
    assert variance == pytest.approx(0.001, rel=0.03)
    assert abs(float(np.mean(noisy - image))) < 1e-3


def test_intensity_scaling_stays_in_range():
    image, mask = _pair()
    for seed in range(5):
        out, _ = RandomIntensityScale(0.9, 1.1, probability=1.0).set_random_state(seed)(image, mask)
        factor = out[image != 0] / image[image != 0]
        assert np.allclose(factor, factor[0], atol=1e-6) and 0.9 <= factor[0] <= 1.1


def test_pipeline_is_deterministic_from_its_seed_and_gives_the_patch():
    config = AugmentationConfig(flip_probability=0.5, rotation_probability=1.0)
    patch = (16, 24, 24)
    margin = region_margin(patch, config)
    assert all(m >= 8 for m in margin)  # translation 8 + rotation room
    image, mask = _pair(shape=tuple(p + 2 * m for p, m in zip(patch, margin)))
    pipeline = build_augmentation(patch, config)
    a = pipeline.set_random_state([5, 1])(image, mask)
    b = pipeline.set_random_state([5, 1])(image, mask)
    c = pipeline.set_random_state([5, 2])(image, mask)
    assert a[0].shape == patch and a[1].shape == patch and a[0].dtype == np.float32 and a[1].dtype == np.uint8
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    plain = build_augmentation(patch, AugmentationConfig(enabled=False))
    out = plain.set_random_state(0)(image[:20, :30, :30], mask[:20, :30, :30])
    np.testing.assert_array_equal(out[1], CenterCrop(patch)(mask[:20, :30, :30], mask[:20, :30, :30])[0])


def test_hu_offset_shifts_the_window_alike_and_leaves_the_rest_of_the_pipeline_unchanged():
    window = (-250.0, 350.0)
    hu = np.array([-1000.0, -260.0, -100.0, 40.0, 330.0, 1200.0], dtype=np.float32)
    image = np.clip((hu - 50.0) / 300.0, -1.0, 1.0).reshape(1, 1, 6)
    mask = np.ones_like(image, dtype=np.uint8)
    offset = RandomHUOffset(40.0, window, probability=1.0).set_random_state(3)
    shifted, same_mask = offset(image, mask)
    drawn = (shifted[0, 0, 2] - image[0, 0, 2]) * 300.0  # HU
    assert 0 < abs(drawn) <= 40.0 and same_mask is mask
    expected = np.clip((np.where(np.abs(image) < 1, hu + drawn, hu) - 50.0) / 300.0, -1.0, 1.0).reshape(1, 1, 6)
    np.testing.assert_allclose(shifted, expected, atol=1e-5)  # air and bone beyond the window stay there
    assert shifted[0, 0, 0] == -1.0 and shifted[0, 0, 5] == 1.0
    # a run without the offset draws what it drew before the option existed; with it, only the offset is added
    patch = (16, 24, 24)
    config = AugmentationConfig(rotation_probability=1.0)
    big, big_mask = _pair(shape=tuple(p + 2 * m for p, m in zip(patch, region_margin(patch, config))))
    without = build_augmentation(patch, config).set_random_state(7)(big, big_mask)
    with_offset = build_augmentation(patch, dataclasses.replace(config, hu_offset=40.0, hu_offset_probability=1.0),
                                     window).set_random_state(7)(big, big_mask)
    np.testing.assert_array_equal(without[1], with_offset[1])
    inside = np.abs(without[0]) < 0.8
    change = (with_offset[0] - without[0])[inside]
    assert inside.any() and np.ptp(change) < 1e-5 and 0 < abs(change.mean()) <= 40.0 / 300.0 + 1e-6
    with pytest.raises(ValueError, match="hu_offset"):
        AugmentationConfig(hu_offset=-5.0)


def test_compose_uses_no_global_rng():
    image, mask = _pair()
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    Compose([RandomFlip(0, 1.0), RandomGaussianNoise(0.001, 1.0)]).set_random_state(1)(image, mask)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


# --------------------------------------------------------------------------- losses


def test_dice_loss_perfect_and_all_wrong():
    target = torch.zeros((2, 1, 8, 16, 16))
    target[:, :, 2:6, 4:12, 4:12] = 1
    perfect = torch.where(target > 0, 20.0, -20.0)
    assert soft_dice_loss(perfect, target).shape == (2,) and bce_loss(perfect, target).shape == (2,)
    assert soft_dice_loss(perfect, target).tolist() == pytest.approx([0.0, 0.0], abs=1e-4)
    assert bce_loss(perfect, target).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    wrong = -perfect
    assert soft_dice_loss(wrong, target).tolist() == pytest.approx([1.0, 1.0], abs=1e-3)
    assert bce_loss(wrong, target).tolist() == pytest.approx([20.0, 20.0], abs=1e-3)


def test_dice_loss_hand_value():
    # p = 0.5 everywhere, T target voxels of N: Dice = (2 * 0.5 T + s) / (0.5 N + T + s)
    target = torch.zeros((1, 1, 4, 4, 4))
    target[0, 0, :2] = 1  # T = 32, N = 64
    logits = torch.zeros_like(target)
    expected = 1 - (32 + 1) / (32 + 32 + 1)
    assert float(soft_dice_loss(logits, target, smooth=1.0)) == pytest.approx(expected, rel=1e-6)
    # per sample: an empty-target sample predicted empty scores 0 loss
    both = torch.cat([target, torch.zeros_like(target)])
    both_logits = torch.cat([logits, torch.full_like(logits, -30.0)])
    assert soft_dice_loss(both_logits, both).tolist() == pytest.approx([expected, 0.0], abs=1e-6)


def test_dice_loss_is_the_mean_over_channels():
    # two structures: channel 0 predicted perfectly, channel 1 all wrong -> (0 + 1) / 2 per sample
    target = torch.zeros((1, 2, 4, 8, 8))
    target[0, 0, :, :4] = 1
    target[0, 1, 1:3, 4:, 2:6] = 1  # a small structure counts as much as a large one
    logits = torch.where(target > 0, 30.0, -30.0)
    logits[:, 1] = -logits[:, 1]
    assert soft_dice_loss(logits, target, smooth=1e-6).tolist() == pytest.approx([0.5], abs=1e-6)
    # one channel: the plain soft Dice of the sample
    assert soft_dice_loss(logits[:, :1], target[:, :1]).tolist() == pytest.approx([0.0], abs=1e-4)


def test_bce_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn((2, 1, 6, 8, 8), generator=g) * 3
    target = (torch.rand((2, 1, 6, 8, 8), generator=g) > 0.7).float()
    reference = torch.nn.BCEWithLogitsLoss(reduction="none")(logits, target).flatten(1).mean(1)
    assert bce_loss(logits, target).tolist() == pytest.approx(reference.tolist(), rel=1e-6)
    assert float(bce_loss(logits, target).mean()) == pytest.approx(float(torch.nn.BCEWithLogitsLoss()(logits, target)),
                                                                   rel=1e-6)


def test_deep_supervision_weights_each_pass_per_sample():
    g = torch.Generator().manual_seed(1)
    target = (torch.rand((3, 1, 4, 8, 8), generator=g) > 0.5).float()
    outputs = [torch.randn((3, 1, 4, 8, 8), generator=g) for _ in range(2)]
    objective = DeepSupervisionObjective((0.5, 1.0), bce_weight=1.0, dice_weight=2.0)
    losses = objective(outputs, target)
    per_pass = [bce_loss(o, target) + 2.0 * soft_dice_loss(o, target) for o in outputs]
    assert losses.total.shape == (3,)
    assert losses.total.tolist() == pytest.approx((0.5 * per_pass[0] + per_pass[1]).tolist(), rel=1e-6)
    assert losses.parts["pass0"].tolist() == pytest.approx(per_pass[0].tolist(), rel=1e-6)
    # uniform weighting is the batch mean; the weights sum to one
    weights = UniformWeighting().plan(outputs[-1], target, ["a", "b", "c"]).weights
    assert weights.tolist() == pytest.approx([1 / 3] * 3) and float(weights.sum()) == pytest.approx(1.0)
    assert float(weighted_loss(losses, weights)) == pytest.approx(float(losses.total.mean()), rel=1e-6)
    # a weight moves the loss towards its sample
    skewed = torch.tensor([1.0, 0.0, 0.0])
    assert float(weighted_loss(losses, skewed)) == pytest.approx(float(losses.total[0]), rel=1e-6)
    outputs = [o.requires_grad_() for o in outputs]
    weighted_loss(objective(outputs, target), weights).backward()
    assert all(o.grad is not None and torch.isfinite(o.grad).all() for o in outputs)
    with pytest.raises(ValueError):
        objective(outputs[:1], target)
