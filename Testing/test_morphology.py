"""The prediction path's morphology through SimpleITK (ctv_core/inference/morphology.py) and its sigmoid equal SciPy's
(that a prediction imports no SciPy is tested in test_engines.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctv_core.inference.morphology import component_sizes, distance_to, fill_holes_by_slice, label_components
from ctv_core.inference.sliding_window import sigmoid


def _blobs(seed: int, shape=(12, 40, 50), fraction=0.45) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.binary_opening(rng.random(shape) > fraction)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fully_connected", [True, False])
def test_components_are_scipys_with_the_same_connectivity(seed, fully_connected):
    mask = _blobs(seed)
    structure = np.ones((3, 3, 3), dtype=bool) if fully_connected else None
    expected, count = ndimage.label(mask, structure=structure)
    labels, found = label_components(mask, fully_connected=fully_connected)
    assert found == count > 10
    assert sorted(component_sizes(labels, found)) == sorted(np.bincount(expected.ravel())[1:])
    # the same partition: each of our parts is exactly one of scipy's
    pairs = np.unique(np.stack([labels[mask], expected[mask]]), axis=1)
    assert pairs.shape[1] == count
    assert ((labels == 0) == ~mask).all()


def test_components_of_an_empty_or_uint8_mask():
    labels, count = label_components(np.zeros((3, 4, 5), dtype=np.uint8), fully_connected=True)
    assert count == 0 and not labels.any()
    mask = np.zeros((3, 4, 5), dtype=np.uint8)
    mask[0, 0, 0] = 7
    mask[2, 3, 4] = 1
    labels, count = label_components(mask, fully_connected=True)
    assert count == 2 and list(component_sizes(labels, count)) == [1, 1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_holes_are_filled_slice_by_slice_as_scipy_fills_each_slice(seed):
    mask = _blobs(seed, shape=(9, 60, 70), fraction=0.35)
    expected = np.stack([ndimage.binary_fill_holes(plane) for plane in mask])
    assert (expected != mask).sum() > 20  # there are holes to fill
    np.testing.assert_array_equal(fill_holes_by_slice(mask), expected)


def test_a_hole_is_filled_in_its_own_slice_only_and_a_diagonal_gap_keeps_it_a_hole():
    mask = np.zeros((3, 7, 7), dtype=bool)
    mask[1, 1:6, 1:6] = True
    mask[1, 3, 3] = False          # a hole in slice 1
    mask[0, 3, 3] = False          # slice 0 is empty: nothing to fill
    ring = np.zeros((7, 7), dtype=bool)
    ring[2:5, 2:5] = True
    ring[3, 3] = False
    ring[2, 2] = False             # a corner open diagonally: background still 4-disconnected from the border
    mask[2] = ring
    filled = fill_holes_by_slice(mask)
    assert filled[1, 3, 3] and not filled[0].any()
    np.testing.assert_array_equal(filled[2], ndimage.binary_fill_holes(ring))


def test_distance_is_scipys_exact_euclidean_distance_in_mm():
    rng = np.random.default_rng(4)
    bone = rng.random((20, 30, 40)) > 0.995
    expected = ndimage.distance_transform_edt(~bone, sampling=2.5)
    distance = distance_to(bone, 2.5)
    assert distance.dtype == np.float32 and distance.shape == bone.shape
    np.testing.assert_allclose(distance, expected, atol=1e-4)
    assert (distance[bone] == 0).all()


def test_sigmoid_is_the_logistic_function_without_overflow():
    from scipy.special import expit

    logits = np.array([-1e4, -100.0, -8.0, -0.5, 0.0, 0.5, 8.0, 100.0, 1e4], dtype=np.float32)
    p = sigmoid(logits)
    assert p.dtype == np.float32 and p[4] == 0.5
    np.testing.assert_allclose(p, expit(logits.astype(np.float64)), atol=1e-7)
    assert (np.diff(p) >= 0).all() and p[0] == 0.0 and p[-1] == 1.0

