"""Smooth random fields on a grid: correlated Gaussian noise with correlation lengths in mm.

Used where images are formed: the phantom's tissue texture and CT noise
(:mod:`ctv_core.phantom.texture`) and the appearance randomisation of training
(:mod:`ctv_core.training.synthesis`). Arrays are float32 in the grid's array order (e.g.
``[k, j, i]`` or ``[z, y, x]``); ``spacing`` gives the voxel size (mm) along each array axis in
that same order. Every field is drawn from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _kernel_norm(sigma_vox: float, truncate: float = 4.0) -> float:
    """Standard deviation left after scipy's Gaussian filter (``sigma_vox`` voxels, ``truncate``
    sigmas) of unit white noise along one axis; 1 below 0.3 voxels (treated as unfiltered)."""
    if sigma_vox < 0.3:
        return 1.0
    radius = int(truncate * sigma_vox + 0.5)
    x = np.arange(-radius, radius + 1, dtype=float)
    w = np.exp(-0.5 * (x / sigma_vox) ** 2)
    w /= w.sum()
    return float(np.sqrt(np.sum(w * w)))


def correlated_noise(rng: np.random.Generator, shape, spacing_kji, sigma_mm: float, axes=(0, 1, 2),
                     truncate: float = 4.0) -> np.ndarray:
    """Unit-variance Gaussian noise ``[k, j, i]`` float32 smoothed with a ``sigma_mm`` Gaussian
    (cut at ``truncate`` sigmas) along ``axes``; an axis whose sigma is under 0.3 voxels stays white."""
    field = rng.standard_normal(shape, dtype=np.float32)
    norm = 1.0
    for axis in axes:
        sv = sigma_mm / spacing_kji[axis]
        if sv < 0.3:
            continue
        ndimage.gaussian_filter1d(field, sv, axis=axis, output=field, mode="reflect", truncate=truncate)
        norm *= _kernel_norm(sv, truncate)
    field *= np.float32(1.0 / norm)
    return field


def coarse_noise(rng: np.random.Generator, shape, spacing_kji, sigma_mm: float, factor: int = 3) -> np.ndarray:
    """Like ``correlated_noise`` for long correlation lengths, computed on a coarser lattice.

    The field is drawn on every ``factor``-th voxel in-plane, smoothed and linearly upsampled,
    which costs far less than filtering the full grid.
    """
    fk = 1 if spacing_kji[0] * 2 > sigma_mm else factor
    small_shape = tuple(max(2, -(-n // f)) for n, f in zip(shape, (fk, factor, factor)))
    small_sp = (spacing_kji[0] * fk, spacing_kji[1] * factor, spacing_kji[2] * factor)
    small = correlated_noise(rng, small_shape, small_sp, sigma_mm)
    zoom = [n / m for n, m in zip(shape, small_shape)]
    out = ndimage.zoom(small, zoom, order=1, mode="nearest", grid_mode=False)
    out = out[: shape[0], : shape[1], : shape[2]]
    if out.shape != tuple(shape):
        out = np.pad(out, [(0, n - m) for n, m in zip(shape, out.shape)], mode="edge")
    return out.astype(np.float32, copy=False)
