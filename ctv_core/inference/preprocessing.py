"""The one path from a CT to the network's input, and from the network's output back to the CT.

Forward (``prepare_input``), used by training and prediction alike:

1. The model grid: aligned with the LPS axes (identity direction) whatever the CT's
   orientation or patient position, at the model's spacing, its first voxel centre on the
   CT's lowest voxel centre in each LPS axis (so an axis-aligned CT at the model's spacing
   maps voxel for voxel).
2. The CT is averaged over whole voxels by the integer factor the spacings allow (SimpleITK
   BinShrink: cheap anti-aliasing), then linearly resampled onto the model grid (outside the
   CT: -1024 HU).
3. The body (largest connected part above ``body_threshold_hu``) sets a crop with a margin;
   the crop is padded (with air) to sizes the network accepts.
4. HU are clipped to the model's window and mapped onto [-1, 1].

Inverse (``probability_to_mask``): the probability is resampled linearly onto the CT grid and
thresholded there, so the mask is on the CT voxel for voxel. Only the CT region where the
interpolated probability can reach the threshold is resampled (``resample_to_ct``, which the
uncertainty map, :mod:`.uncertainty`, shares).

Arrays are ``[z, y, x]`` on the model grid (LPS-aligned), ``[k, j, i]`` on the CT grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import PreprocessingError
from ..geometry import Grid, nonzero_box
from ..model.settings import PreprocessingConfig
from .morphology import component_sizes, label_components

AIR_HU = -1024.0


@dataclass(frozen=True)
class ModelInput:
    """The network's input and where it lies.

    Attributes
    ----------
    array
        float32 ``[z, y, x]``, HU mapped onto [-1, 1].
    grid
        Its grid: LPS-aligned, cropped to the body, sizes multiples of the network's divisor.
    """

    array: np.ndarray
    grid: Grid


def model_grid(ct_grid: Grid, spacing_mm: tuple[float, float, float]) -> Grid:
    """The LPS-aligned grid at ``spacing_mm`` (x, y, z) covering every voxel centre of ``ct_grid``."""
    low, high = ct_grid.lps_bounds()
    spacing = np.asarray(spacing_mm, dtype=float)
    count = np.floor((high - low) / spacing + 1e-6).astype(int) + 1
    return Grid(size=tuple(int(c) for c in count), spacing=tuple(float(s) for s in spacing),
                origin=tuple(float(v) for v in low))


def resample_ct(ct: sitk.Image, grid: Grid, outside: float = AIR_HU) -> np.ndarray:
    """CT HU on ``grid`` as float32 ``[z, y, x]``: whole-voxel averaging first, then linear.

    ``outside`` is the value beyond the CT (air for HU; training resamples masks and tissue
    fractions by this same path).
    """
    ct_grid = Grid.of_image(ct)
    # Integer shrink factor per CT axis: how many CT voxels fit in a model voxel along it.
    along = np.abs(ct_grid.direction_matrix.T) @ np.asarray(grid.spacing)  # model spacing seen along each CT axis
    factors = [max(1, int(np.floor(a / s + 1e-6))) for a, s in zip(along, ct_grid.spacing)]
    source = sitk.Cast(ct, sitk.sitkFloat32)
    if max(factors) > 1:
        source = sitk.BinShrink(source, factors)
    reference = grid.image(np.zeros(grid.shape, dtype=np.uint8))
    resampled = sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, float(outside), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)


def _body_box(hu: np.ndarray, config: PreprocessingConfig, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index bounds [lo, hi) ``(z, y, x)`` of the largest part above the body threshold, with margin."""
    labels, count = label_components(hu > config.body_threshold_hu, fully_connected=False)
    if count == 0:
        raise PreprocessingError(
            f"No body found in the CT (no voxel above {config.body_threshold_hu:.0f} HU). Check that the series is "
            "a CT of a patient in Hounsfield units."
        )
    body = labels == int(np.argmax(component_sizes(labels, count))) + 1
    slices = nonzero_box(body)
    margin = np.ceil(config.margin_mm / spacing[::-1]).astype(int)  # spacing is (x, y, z)
    lo = np.array([s.start for s in slices]) - margin
    hi = np.array([s.stop for s in slices]) + margin
    return np.maximum(lo, 0), np.minimum(hi, hu.shape)


def _pad_to_multiple(lo: np.ndarray, hi: np.ndarray, divisor: int, minimum: int) -> tuple[np.ndarray, np.ndarray]:
    """Grow [lo, hi) symmetrically to a multiple of ``divisor`` (at least ``minimum``)."""
    length = hi - lo
    target = np.maximum(np.ceil(length / divisor).astype(int) * divisor, minimum)
    extra = target - length
    lo = lo - extra // 2
    return lo, lo + target


def crop(array: np.ndarray, lo: Sequence[int], hi: Sequence[int], fill: float) -> np.ndarray:
    """``array[lo:hi]`` (index bounds per axis, ``hi`` exclusive) where parts outside ``array`` are ``fill``.

    The box may reach beyond the array on any side, or lie wholly outside it (all ``fill``).
    The one crop of the project: the body crop of preprocessing and training's patches.
    """
    lo, hi = np.asarray(lo, dtype=int), np.asarray(hi, dtype=int)
    out = np.full(tuple(int(v) for v in hi - lo), fill, dtype=array.dtype)
    src_lo, src_hi = np.maximum(lo, 0), np.minimum(hi, array.shape)
    if (src_hi <= src_lo).any():
        return out
    dst_lo = src_lo - lo
    out[tuple(slice(a, a + (b - c)) for a, b, c in zip(dst_lo, src_hi, src_lo))] = \
        array[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))]
    return out


def normalise(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip HU to ``window`` and map it linearly onto [-1, 1] (float32)."""
    low, high = window
    out = np.clip(hu, low, high).astype(np.float32, copy=False)
    out -= (low + high) / 2
    out *= 2.0 / (high - low)
    return out


def prepare_input(ct: sitk.Image, config: PreprocessingConfig, divisor: int = 16) -> ModelInput:
    """The network input for a CT image in HU (see the module docstring for the steps)."""
    ct_grid = Grid.of_image(ct)
    full = model_grid(ct_grid, config.spacing_mm)
    hu = resample_ct(ct, full)
    lo, hi = _body_box(hu, config, np.asarray(full.spacing))
    if config.fixed_shape_zyx is not None:
        return _fixed_shape_input(ct, full, lo, hi, config, divisor)
    lo, hi = _pad_to_multiple(lo, hi, divisor, divisor)
    array = normalise(crop(hu, lo, hi, AIR_HU), config.hu_window)
    origin = full.index_to_lps(lo[::-1].astype(float))  # (z, y, x) -> (i, j, k)
    grid = Grid(size=tuple(int(v) for v in (hi - lo)[::-1]), spacing=full.spacing,
                origin=tuple(float(v) for v in origin))
    return ModelInput(array=array, grid=grid)


def _fixed_shape_input(ct, full: Grid, lo, hi, config: PreprocessingConfig, divisor: int) -> ModelInput:
    """The original method's input: the body's box squeezed to a fixed shape."""
    shape = np.asarray(config.fixed_shape_zyx)
    if (shape % divisor).any():
        raise PreprocessingError(f"fixed_shape_zyx {tuple(shape)} must be multiples of {divisor}.")
    first = full.index_to_lps(lo[::-1].astype(float))
    last = full.index_to_lps((hi - 1)[::-1].astype(float))
    spacing = (last - first) / np.maximum(shape[::-1] - 1, 1)
    grid = Grid(size=tuple(int(v) for v in shape[::-1]), spacing=tuple(float(max(s, 1e-3)) for s in spacing),
                origin=tuple(float(v) for v in first))
    return ModelInput(array=normalise(resample_ct(ct, grid), config.hu_window), grid=grid)


def resample_to_ct(probability: np.ndarray, grid: Grid, ct_grid: Grid,
                   floor: float) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Resample a ``[z, y, x]`` probability on ``grid`` linearly onto the part of the CT grid where it can reach ``floor``.

    That part is the CT box covering the model voxels at or above ``floor``, grown by one voxel;
    elsewhere the interpolated probability is below ``floor``. Returns the box as index slices
    ``[k, j, i]`` of ``ct_grid`` and the float32 probability on it, or None when no voxel reaches
    ``floor`` or the box misses the CT.
    """
    above = probability >= floor
    if not above.any():
        return None
    box = nonzero_box(above)
    lo = np.array([max(s.start - 1, 0) for s in box])
    hi = np.array([min(s.stop + 1, n) for s, n in zip(box, probability.shape)])  # exclusive, (z, y, x)
    corners = np.array([[x, y, z] for x in (lo[2], hi[2] - 1) for y in (lo[1], hi[1] - 1) for z in (lo[0], hi[0] - 1)],
                       dtype=float)
    ct_index = ct_grid.lps_to_index(grid.index_to_lps(corners))
    first = np.maximum(np.floor(ct_index.min(axis=0)).astype(int), 0)
    last = np.minimum(np.ceil(ct_index.max(axis=0)).astype(int), np.asarray(ct_grid.size) - 1)
    if (last < first).any():
        return None
    sub = Grid(size=tuple(int(v) for v in last - first + 1), spacing=ct_grid.spacing,
               origin=tuple(float(v) for v in ct_grid.index_to_lps(first.astype(float))), direction=ct_grid.direction)
    source = grid.image(np.ascontiguousarray(probability, dtype=np.float32))
    reference = sub.image(np.zeros(sub.shape, dtype=np.uint8))
    resampled = sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    region = tuple(slice(int(a), int(b) + 1) for a, b in zip(first[::-1], last[::-1]))
    return region, sitk.GetArrayFromImage(resampled)


def probability_to_mask(probability: np.ndarray, grid: Grid, ct_grid: Grid, threshold: float) -> np.ndarray:
    """Resample a ``[z, y, x]`` probability on ``grid`` onto the CT grid and threshold it.

    Returns a uint8 ``[k, j, i]`` mask on ``ct_grid``. Only the CT region where the linearly
    interpolated probability can reach ``threshold`` is resampled (:func:`resample_to_ct`);
    elsewhere the mask is 0 by construction.
    """
    mask = np.zeros(ct_grid.shape, dtype=np.uint8)
    resampled = resample_to_ct(probability, grid, ct_grid, threshold)
    if resampled is not None:
        region, values = resampled
        mask[region] = values >= threshold
    return mask
