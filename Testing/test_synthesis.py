"""Appearance randomisation: tissue fractions on the model grid and the synthesis transforms.

The tissue label maps here are drawn by hand (a block of muscle with a bone rod in fat), so
every expected CT number is known exactly.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk

from ctv_core.errors import TrainingError
from ctv_core.geometry import Grid
from ctv_core.inference.preprocessing import AIR_HU
from ctv_core.model.settings import PreprocessingConfig
from ctv_core.structures.label_maps import legend_from_names
from ctv_core.training.cases import prepare_case, synthesis_classes
from ctv_core.training.config import TrainingConfig
from ctv_core.training.synthesis import (RandomBlur, RandomFieldOfView, RandomStreaks, TissueIntensities,
                                         build_synthesis)
from ctv_core.training.synthesis_config import SynthesisConfig, default_tissue_hu

LEGEND = legend_from_names([(0, "AIR", "air"), (1, "FAT", "fat"), (2, "MUSCLE", "muscle"), (3, "BONE", "cortical_bone"),
                            (4, "GUT_GAS", "air")], "test")
TRUE_HU = {0: -1024.0, 1: -100.0, 2: 50.0, 3: 900.0, 4: -1024.0}  # air as beyond the CT


def _labelled_ct(direction=None) -> tuple[sitk.Image, np.ndarray]:
    """A 0.9 x 1.3 x 2.5 mm CT (oblique when asked) of a body of fat with a muscle block and a bone rod."""
    labels = np.zeros((60, 120, 110), dtype=np.uint8)
    labels[5:55, 15:105, 10:100] = 1
    labels[15:45, 30:80, 25:70] = 2
    labels[10:50, 50:62, 75:88] = 3
    labels[30:34, 20:25, 40:45] = 4
    hu = np.vectorize(TRUE_HU.get)(labels).astype(np.int16)
    grid = Grid(size=(110, 120, 60), spacing=(0.9, 1.3, 2.5), origin=(-40.0, -60.0, 100.0),
                direction=direction or (1, 0, 0, 0, 1, 0, 0, 0, 1))
    return grid.image(hu), labels


def _exact_config(**changes) -> SynthesisConfig:
    """Synthesis that draws exactly the true CT numbers (low = high, no texture) and nothing else."""
    tissues = {name: (v, v, 0.0, 0.0) for name, v in (("air", -1024.0), ("fat", -100.0), ("muscle", 50.0),
                                                      ("cortical_bone", 900.0))}
    base = dict(probability=1.0, tissue_hu=tissues, contrast_probability=0.0, bladder_contrast_probability=0.0,
                bias_hu=0.0, slice_thickness_mm=(1.0, 1.0), kernel_blur_mm=(0.0, 0.0), sharpen_probability=0.0,
                noise_sd_hu=(0.0, 0.0), streak_probability=0.0, fov_probability=0.0)
    base.update(changes)
    return SynthesisConfig(**base)


@pytest.mark.parametrize("oblique", [False, True])
def test_fractions_mix_ct_numbers_as_the_ct_itself_is_averaged(oblique):
    """Partial volume: the fraction-weighted true CT numbers give back the model-grid image of the CT
    (same averaging and interpolation), within the 1/255 quantisation of the fractions."""
    c, s = np.cos(0.3), np.sin(0.3)
    ct, labels = _labelled_ct((c, -s, 0, s, c, 0, 0, 0, 1) if oblique else None)
    config = PreprocessingConfig(spacing_mm=(4.0, 4.0, 4.0), hu_window=(-1024.0, 1000.0))
    case = prepare_case(ct, sitk.Cast(ct > 0, sitk.sitkUInt8), config, 8, (labels, LEGEND))
    assert synthesis_classes(LEGEND) == ("fat", "muscle", "cortical_bone")
    assert case.tissues.shape == (3, *case.image.shape) and case.tissues.dtype == np.uint8
    assert int(case.tissues.sum(axis=0).max()) <= 255 + 2
    partial = (case.tissues > 20) & (case.tissues < 235)
    assert partial.any(axis=0).sum() > 100  # boundaries are mixed, not nearest-neighbour labels
    synthesis = build_synthesis(synthesis_classes(LEGEND), _exact_config(), config.spacing_mm, config.hu_window)
    image, _ = synthesis.set_random_state(0)(case.tissues, np.zeros(case.image.shape, np.uint8))
    hu_of = (image + 1) / 2 * (1000 + 1024) - 1024
    real = (case.image + 1) / 2 * (1000 + 1024) - 1024
    assert np.abs(hu_of - real).max() < 12.0  # 1900 HU x 1/255 quantisation, at most a few steps
    assert np.abs(hu_of - real).mean() < 1.0


def test_synthesis_is_a_function_of_its_seed_and_varies():
    ct, labels = _labelled_ct()
    config = PreprocessingConfig()
    case = prepare_case(ct, sitk.Cast(ct > 0, sitk.sitkUInt8), config, 8, (labels, LEGEND))
    synthesis = build_synthesis(synthesis_classes(LEGEND), SynthesisConfig(probability=1.0), config.spacing_mm,
                                config.hu_window)
    a, _ = synthesis.set_random_state(5)(case.tissues, case.mask)
    b, _ = synthesis.set_random_state(5)(case.tissues, case.mask)
    c, _ = synthesis.set_random_state(6)(case.tissues, case.mask)
    assert a.dtype == np.float32 and a.shape == case.image.shape and -1 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.01


def test_tissue_means_come_from_the_configured_ranges_and_contrast_replaces_them():
    fractions = np.zeros((2, 4, 4, 4), dtype=np.uint8)
    fractions[0, :2] = 255  # fat in the lower half, muscle in the upper half
    fractions[1, 2:] = 255
    config = SynthesisConfig(probability=1.0, tissue_hu={"muscle": (30.0, 40.0, 0.0, 0.0), "fat": (-90, -80, 0, 0)},
                             contrast_hu={"muscle": (200.0, 210.0)}, contrast_probability=0.0)
    plain = TissueIntensities(("fat", "muscle"), config, (4.0, 4.0, 4.0))
    for seed in range(20):
        hu, _ = plain.set_random_state(seed)(fractions, np.zeros((4, 4, 4), np.uint8))
        assert np.all((hu[2:] >= 30) & (hu[2:] <= 40)) and np.all((hu[:2] >= -90) & (hu[:2] <= -80))
    enhanced = TissueIntensities(("fat", "muscle"), dataclasses.replace(config, contrast_probability=1.0),
                                 (4.0, 4.0, 4.0))
    hu, _ = enhanced.set_random_state(0)(fractions, np.zeros((4, 4, 4), np.uint8))
    assert np.all((hu[2:] >= 200) & (hu[2:] <= 210))
    with pytest.raises(TrainingError, match="No CT-number range for tissue class.*unknown_class.*synthesis.tissue_hu"):
        TissueIntensities(("fat", "unknown_class"), config, (4.0, 4.0, 4.0))


def test_field_of_view_cuts_the_body_but_never_the_target():
    hu = np.full((6, 80, 80), -1000.0, dtype=np.float32)
    yy, xx = np.mgrid[0:80, 0:80]
    body = (yy - 40) ** 2 / 30 ** 2 + (xx - 40) ** 2 / 38 ** 2 < 1
    hu[:, body] = 40.0
    mask = np.zeros(hu.shape, np.uint8)
    mask[2:4, 38:44, 8:14] = 1  # far lateral: the circle must grow to keep it
    cut = RandomFieldOfView(1.0, (0.5, 0.5)).set_random_state(1)
    out, kept = cut(hu.copy(), mask)
    assert np.array_equal(kept, mask)
    assert np.all(out[mask == 1] > -500)
    assert ((out == AIR_HU) & body[None]).sum() > 0  # some body is outside the reconstruction circle
    lateral = np.zeros_like(mask)
    lateral[:, 39:42, 76:78] = 1  # the other side, further out: cut
    assert np.all(out[lateral == 1] == AIR_HU)


def test_blur_follows_the_slice_thickness_and_streaks_stay_in_their_slices():
    hu = np.zeros((20, 16, 16), dtype=np.float32)
    hu[10:] = 100.0
    mask = np.zeros(hu.shape, np.uint8)
    thin, _ = RandomBlur((3.0, 3.0), (0.0, 0.0), (4.0, 4.0, 4.0)).set_random_state(0)(hu, mask)
    np.testing.assert_array_equal(thin, hu)  # thinner than the model voxel: nothing to add
    thick, _ = RandomBlur((8.0, 8.0), (0.0, 0.0), (4.0, 4.0, 4.0)).set_random_state(0)(hu, mask)
    assert 0 < thick[9, 8, 8] < 50 < thick[10, 8, 8] < 100  # the edge spreads along z only
    np.testing.assert_allclose(thick[:, 3], thick[:, 12])
    body = np.full((30, 64, 64), 40.0, dtype=np.float32)
    streaked, _ = RandomStreaks(1.0, (400.0, 400.0)).set_random_state(3)(body.copy(), np.zeros(body.shape, np.uint8))
    changed = np.abs(streaked - body).max(axis=(1, 2)) > 1.0
    assert 5 <= changed.sum() <= 13 and np.all(np.diff(np.flatnonzero(changed)) == 1)
    assert np.abs(streaked - body).max() > 100


def test_synthesis_settings_are_strict_and_name_the_setting():
    config = TrainingConfig.from_dict({"synthesis": {"probability": 0.5, "tissue_hu": {"fat": [-120, -60, 0, 10]}}})
    assert config.synthesis.tissue_hu["fat"] == (-120.0, -60.0, 0.0, 10.0)
    assert config.synthesis.tissue_hu["muscle"] == default_tissue_hu()["muscle"]  # the others keep defaults
    assert TrainingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert not TrainingConfig().synthesis.enabled  # off by default: the method's training
    for bad, named in [({"probability": 1.5}, "synthesis.probability"),
                       ({"tissue_hu": {"bone": [0, 1, 0, 1]}}, "unknown tissue class.*bone"),
                       ({"tissue_hu": {"fat": [-50, -100, 0, 1]}}, "synthesis.tissue_hu.fat"),
                       ({"tissue_hu": {"fat": [-50, -10]}}, "synthesis.tissue_hu.fat"),
                       ({"noise_sd_hu": [10, 5]}, "synthesis.noise_sd_hu"),
                       ({"fov_fraction": [0.0, 0.5]}, "synthesis.fov_fraction"),
                       ({"blur": 1}, "unknown setting.*blur")]:
        with pytest.raises(TrainingError, match=named):
            TrainingConfig.from_dict({"synthesis": bad})
