"""Learned sample weights for noisy labels (QAM/OCM) and the label-noise simulator.

The weighting's maths is checked against autograd of the method's joint loss written out
directly; the toy task (discs, a twin pair with a clean and a shifted label) trains for a few
seconds. The experiments' commands run at toy size in :mod:`test_noisy_label_experiments`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ctv_core.errors import TrainingError
from ctv_core.training.config import TrainingConfig
from ctv_core.training.label_noise import (ClinicianStyle, assign_clinicians, clinic_label, grow, noisy_case_ids,
                                           simulate_clinic_noise, simulate_label_noise)
from ctv_core.training.objective import DeepSupervisionObjective, UniformWeighting
from ctv_core.training.quality import QualityAwareWeighting, QualityAwarenessNet, bounded_scores
from ctv_core.training.quality_config import QualityConfig
from ctv_core.training.step import Trainables, train_step


class TinySegmenter(nn.Module):
    """Two convolutions, no batch norm (so micro-batches and the whole batch compute the same function)."""

    def __init__(self, dims: int = 2) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.net = nn.Sequential(conv(1, 6, 3, padding=1), nn.ReLU(), conv(6, 1, 3, padding=1))

    def forward(self, x, return_all_passes: bool = False):
        out = self.net(x)
        return [out] if return_all_passes else out


def _trainables(segmenter: nn.Module, weighting, lr: float = 1e-2) -> Trainables:
    return Trainables({"network": segmenter, **weighting.modules},
                      {"network": torch.optim.Adam(segmenter.parameters(), lr=lr), **weighting.optimizers},
                      torch.amp.GradScaler("cuda", enabled=False), segmenter)


def _batch(count: int = 6, size: int = 16, seed: int = 0, dims: int = 2):
    g = torch.Generator().manual_seed(seed)
    shape = (count, 1) + (size,) * dims
    return torch.randn(shape, generator=g), (torch.rand(shape, generator=g) > 0.6).float()


def _qam(ocm: bool = True, lam: float = 2.0, widths=(4, 8), dims: int = 2, micro_batch=None, spread: float = 0.0):
    """A QAM whose head is not zero (``spread``) so that the samples' scores differ from the start."""
    torch.manual_seed(3)
    weighting = QualityAwareWeighting(QualityConfig(enabled=True, overfitting_control=ocm, ocm_lambda=lam,
                                                    widths=widths), 2, dims, micro_batch)
    if spread:
        with torch.no_grad():
            weighting.net.head.weight.normal_(0.0, spread)
    return weighting


# --------------------------------------------------------------------------- weighting maths


class MeanScorer(nn.Module):
    """Stands in for the QAM: raw score = 100 x the image channel's mean (scores spread far beyond lambda)."""

    def forward(self, x):
        return 100.0 * x[:, 0].flatten(1).mean(1)


def test_weights_sum_to_one_and_the_ocm_bounds_their_ratio():
    images, masks = _batch(count=12)
    images = images - images.flatten(1).mean(1)[:, None, None, None] + torch.linspace(-1, 1, 12)[:, None, None, None]
    ids = [str(i) for i in range(12)]
    for lam in (0.5, 2.0):
        weighting = _qam(lam=lam)
        weighting.net = MeanScorer()
        plan = weighting.plan(images, masks, ids)
        assert float(plan.weights.sum()) == pytest.approx(1.0, abs=1e-6)
        assert plan.raw_scores.tolist() == pytest.approx(torch.linspace(-100, 100, 12).tolist(), abs=1e-3)
        assert torch.all(plan.scores.abs() < lam + 1e-6)
        assert torch.allclose(plan.scores, lam * torch.tanh(plan.raw_scores))
        ratio = float(plan.weights.max() / plan.weights.min())
        assert ratio <= math.exp(2 * lam) * (1 + 1e-5)
        assert ratio > 0.99 * math.exp(2 * lam)  # scores this spread reach the bound
    weighting = _qam(ocm=False)
    weighting.net = MeanScorer()
    unbounded = weighting.plan(images, masks, ids)
    assert float(unbounded.weights.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(unbounded.weights.max() / unbounded.weights.min()) > 1e6  # without the OCM: no bound
    assert torch.equal(unbounded.scores, unbounded.raw_scores)
    # the real QAM starts by scoring every sample 0: training starts from the plain mean
    fresh = _qam().plan(images, masks, ids)
    assert torch.allclose(fresh.weights, torch.full((12,), 1 / 12))
    assert bounded_scores(torch.tensor([100.0, -100.0]), 2.0).tolist() == pytest.approx([2.0, -2.0])


@pytest.mark.parametrize("micro_batch", [None, 1, 4])
def test_step_gives_both_networks_the_gradients_of_the_joint_loss(micro_batch):
    """train_step's two-call weighting == autograd of sum(softmax(lambda tanh(QAM)) * L), any micro-batch."""
    images, masks = _batch(count=6)
    objective = DeepSupervisionObjective((1.0,))
    torch.manual_seed(1)
    segmenter = TinySegmenter()
    weighting = _qam(spread=2.0, micro_batch=micro_batch)
    # the reference: the joint loss in one graph, as the method writes it
    reference_seg, reference_qam = TinySegmenter(), _qam(spread=2.0)
    reference_seg.load_state_dict(segmenter.state_dict())
    reference_qam.net.load_state_dict(weighting.net.state_dict())
    scores = 2.0 * torch.tanh(reference_qam.net(torch.cat((images, masks), 1)))
    joint = (torch.softmax(scores, 0) * objective([reference_seg(images)], masks).total).sum()
    joint.backward()
    trainables = _trainables(segmenter, weighting)
    for optimizer in trainables.optimizers.values():  # look at the gradients, not the step
        optimizer.step = lambda *a, **k: None
    result = train_step(trainables, objective, weighting, images, masks, list("abcdef"), learning_rates={},
                        micro_batch=micro_batch)
    assert result.loss == pytest.approx(float(joint.detach()), rel=1e-5)
    for mine, theirs in ((segmenter, reference_seg), (weighting.net, reference_qam.net)):
        for (name, p), q in zip(mine.named_parameters(), theirs.parameters()):
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name  # gradients reach both networks
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7)


def test_uniform_weighting_in_micro_batches_is_the_batch_mean():
    images, masks = _batch(count=5, dims=3, size=8)
    objective = DeepSupervisionObjective((1.0,))
    grads = []
    for micro_batch in (None, 2):
        torch.manual_seed(0)
        segmenter = TinySegmenter(dims=3)
        trainables = _trainables(segmenter, UniformWeighting())
        trainables.optimizers["network"].step = lambda *a, **k: None
        result = train_step(trainables, objective, UniformWeighting(), images, masks, list("abcde"),
                            learning_rates={}, micro_batch=micro_batch)
        assert result.plan.weights.tolist() == pytest.approx([0.2] * 5)
        assert result.loss == pytest.approx(float(result.losses.mean()), rel=1e-6)
        grads.append([p.grad.clone() for p in segmenter.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.fixture
def one_thread():
    """Small tensors: one thread is faster than two fighting over shared cores (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_corrupted_label_weighs_less_than_its_clean_twin_after_a_short_training(one_thread):
    """Discs on noise; 5 of 16 labels shifted by 9 px, and one image twice: clean and shifted label."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    images, labels, case_ids = [], [], []
    for n in range(16):
        cy, cx, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(4, 8)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        images.append(disc + rng.normal(0, 0.2, disc.shape))
        labels.append(np.roll(disc, 9, axis=1) if n < 5 else disc)
        case_ids.append(f"noisy{n}" if n < 5 else f"clean{n}")
    images.append(images[-1])
    labels.append(np.roll(labels[-1], 9, axis=1))
    case_ids[-1:] = ["twin_clean", "twin_noisy"]
    x = torch.tensor(np.stack(images), dtype=torch.float32)[:, None]
    y = torch.tensor(np.stack(labels), dtype=torch.float32)[:, None]
    torch.manual_seed(0)
    segmenter = TinySegmenter()
    weighting = QualityAwareWeighting(QualityConfig(enabled=True, widths=(8, 16), learning_rate=3e-3), 2, 2)
    trainables = _trainables(segmenter, weighting)
    objective = DeepSupervisionObjective((1.0,))
    for step in range(60):
        result = train_step(trainables, objective, weighting, x, y, case_ids, learning_rates={}, step=step)
    weights = dict(zip(case_ids, result.plan.weights.tolist()))
    assert weights["twin_noisy"] < 0.5 * weights["twin_clean"], weights
    noisy = [w for c, w in weights.items() if c.startswith("noisy")]
    clean = [w for c, w in weights.items() if c.startswith("clean")]
    assert max(noisy) < min(clean), weights
    assert result.plan.weights.max() / result.plan.weights.min() <= math.exp(4) * (1 + 1e-5)


def test_qam_takes_2d_and_3d_inputs_and_strides():
    net3 = QualityAwarenessNet(2, 3, widths=(4, 8, 8), input_stride=2)
    assert net3(torch.zeros(3, 2, 8, 12, 10)).shape == (3,)  # odd sizes: pools round up
    assert QualityAwarenessNet(4, 2, widths=(4,))(torch.zeros(2, 4, 5, 7)).shape == (2,)
    with pytest.raises(ValueError, match=r"\[B, C, z, y, x\]"):
        net3(torch.zeros(1, 2, 8, 8))


def test_quality_configuration_is_strict_and_refuses_a_batch_of_one():
    config = TrainingConfig.from_dict({"quality": {"enabled": True, "widths": [8, 16]},
                                       "sampling": {"batch_size": 8, "micro_batch": 1}})
    assert config.quality.widths == (8, 16) and config.sampling.micro_batch == 1
    assert TrainingConfig.from_dict(config.to_dict()) == config
    assert TrainingConfig().quality.enabled is False and TrainingConfig().quality.ocm_lambda == 2.0
    with pytest.raises(TrainingError, match="batch_size >= 2.*micro_batch"):
        TrainingConfig.from_dict({"quality": {"enabled": True}, "sampling": {"batch_size": 1}})
    with pytest.raises(TrainingError, match="unknown setting.*lambda"):
        TrainingConfig.from_dict({"quality": {"lambda": 2}})
    with pytest.raises(TrainingError, match="quality.ocm_lambda"):
        TrainingConfig.from_dict({"quality": {"ocm_lambda": 0}})
    with pytest.raises(TrainingError, match="sampling.micro_batch"):
        TrainingConfig.from_dict({"sampling": {"micro_batch": 0}})


# --------------------------------------------------------------------------- label noise


def _disc(size=64, radius=12.0, centre=(32, 30)) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def _radius(mask: np.ndarray) -> float:
    return math.sqrt(mask.sum() / math.pi)


def test_grow_moves_the_boundary_by_the_distance_in_pixels_or_mm():
    disc = _disc()
    for d in (3, 8):
        assert _radius(grow(disc, d)) == pytest.approx(12 + d, abs=0.6)
        assert _radius(grow(disc, -d)) == pytest.approx(12 - d, abs=0.6)
    assert np.array_equal(grow(disc, 0), disc)
    assert not grow(disc, -20).any()
    # anisotropic mm: a 2-slice slab at 5 mm slices grown by 5 mm gains one slice each side, 5 px in-plane at 1 mm
    slab = np.zeros((10, 40, 40), bool)
    slab[4:6, 10:30, 10:30] = True
    grown = grow(slab, 5.0, spacing=(5.0, 1.0, 1.0))
    assert np.flatnonzero(grown.any(axis=(1, 2))).tolist() == [3, 4, 5, 6]
    assert np.flatnonzero(grown[4].any(axis=0)).tolist() == list(range(5, 35))
    assert np.array_equal(grow(grown, -5.0, spacing=(5.0, 1.0, 1.0)) & slab, slab)


def test_label_noise_corrupts_the_fraction_within_the_range_per_structure_and_is_seeded():
    labels = {f"case{n:02d}": np.stack([_disc(radius=14), _disc(radius=9, centre=(20, 40))]) for n in range(20)}
    noisy, record = simulate_label_noise(labels, 0.25, (5, 13), seed=4)
    assert sorted(record) == noisy_case_ids(list(labels), 0.25, 4) and len(record) == 5
    operations = set()
    for case_id, label in labels.items():
        if case_id not in record:
            assert np.array_equal(noisy[case_id], label)
            continue
        assert len(record[case_id]) == 2  # every structure of a corrupted case
        for change in record[case_id]:
            assert 5 <= change.distance <= 13
            operations.add(change.operation)
            before, after = label[change.structure], noisy[case_id][change.structure]
            sign = 1 if change.operation == "dilate" else -1
            assert np.array_equal(after, grow(before, sign * change.distance))
    assert operations == {"erode", "dilate"}
    again, record_again = simulate_label_noise(labels, 0.25, (5, 13), seed=4)
    assert record_again == record and all(np.array_equal(again[c], noisy[c]) for c in labels)
    _, other = simulate_label_noise(labels, 0.25, (5, 13), seed=5)
    assert other != record
    assert len(simulate_label_noise(labels, 0.75, (1, 8), seed=0)[1]) == 15
    assert simulate_label_noise(labels, 0.0, (1, 8), seed=0)[1] == {}
    # a case's corruption depends on the seed and its id, not on the other cases
    fewer = {c: labels[c] for c in sorted(record)}
    _, all_chosen = simulate_label_noise(fewer, 1.0, (5, 13), seed=4)
    assert all_chosen == record
    with pytest.raises(ValueError, match="range"):
        simulate_label_noise(labels, 0.5, (8, 1), seed=0)
    with pytest.raises(ValueError, match="fraction"):
        simulate_label_noise(labels, 1.5, (1, 8), seed=0)


def test_clinic_noise_has_a_systematic_margin_per_clinician_and_skips_slices():
    zz, yy, xx = np.mgrid[:40, :48, :48]
    spacing = (3.0, 1.5, 1.5)
    # an ellipsoid of semi-axes 45 mm (z), 24 mm, 24 mm
    truth = ((zz - 20) * 3.0 / 45) ** 2 + ((yy - 24) * 1.5 / 24) ** 2 + ((xx - 24) * 1.5 / 24) ** 2 <= 1
    styles = [ClinicianStyle("exact"), ClinicianStyle("generous", margin_mm=6.0),
              ClinicianStyle("tight", margin_mm=-4.5), ClinicianStyle("skips", skip_fraction=0.4)]
    assert styles[0].exact and not styles[3].exact
    rng = np.random.default_rng(0)
    generous, noise = clinic_label(truth, spacing, styles[1], rng)
    assert noise.margin_mm == 6.0 and noise.skipped_slices == ()
    assert np.array_equal(generous, grow(truth, 6.0, spacing))
    # along x (1.5 mm pixels) the generous contour is 4 px wider each side; along z (3 mm) 2 slices
    row = truth[20, 24]
    assert generous[20, 24].sum() - row.sum() == 8
    assert generous.any(axis=(1, 2)).sum() - truth.any(axis=(1, 2)).sum() == 4
    tight, _ = clinic_label(truth, spacing, styles[2], rng)
    assert tight[20, 24].sum() - row.sum() == -6
    skipped, noise = clinic_label(truth, spacing, styles[3], np.random.default_rng(1))
    drawn_slices = np.flatnonzero(truth.any(axis=(1, 2)))
    assert set(noise.skipped_slices) <= set(drawn_slices.tolist()) and noise.skipped_slices
    assert 0.15 < len(noise.skipped_slices) / drawn_slices.size < 0.65
    for z in drawn_slices:
        assert np.array_equal(skipped[z], np.zeros_like(truth[z]) if z in noise.skipped_slices else truth[z])
    # spread around the systematic margin
    spread = ClinicianStyle("spread", margin_mm=3.0, margin_sd_mm=1.0)
    margins = [clinic_label(truth, spacing, spread, np.random.default_rng(s))[1].margin_mm for s in range(30)]
    assert abs(np.mean(margins) - 3.0) < 0.5 and 0.5 < np.std(margins) < 1.6
    # every case to a clinician, dealt evenly, seeded
    cases = [f"c{n}" for n in range(10)]
    assigned = assign_clinicians(cases, styles, seed=2)
    assert sorted(np.unique(list(assigned.values()), return_counts=True)[1].tolist()) == [2, 2, 3, 3]
    assert assign_clinicians(cases, styles, seed=2) == assigned != assign_clinicians(cases, styles, seed=3)
    masks = {c: truth for c in cases}
    noisy, record = simulate_clinic_noise(masks, {c: spacing for c in cases}, styles, seed=2)
    assert {c: r.clinician for c, r in record.items()} == assigned
    assert all(np.array_equal(noisy[c], truth) for c in cases if assigned[c] == "exact")
    with pytest.raises(ValueError, match="skip_fraction"):
        ClinicianStyle("bad", skip_fraction=1.0)
