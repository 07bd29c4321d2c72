"""Moving a mask between two grids whose voxels coincide, exactly and without interpolation.

A segment's labelmap, the CT volume in the scene and the CT read back from DICOM describe the
same voxels with different extents, and possibly with axes reversed or swapped (a series
sorted the other way). When every voxel centre of one grid is a voxel centre of the other,
copying is exact; otherwise the mask was drawn on another CT (or resampled) and an RTSTRUCT on
this CT would misplace it: callers refuse then. Grids are LPS ``Grid`` objects (mm); arrays
are indexed ``[k, j, i]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import Grid

#: Voxel centres of the two grids must coincide within this fraction of a voxel.
TOLERANCE_VOXELS = 0.01


@dataclass(frozen=True)
class LatticeMap:
    """How target voxel (i, j, k) reads the source: along target axis ``a`` the source axis is
    ``axes[a]`` and the source index is ``offsets[a] + signs[a] * t_a``."""

    axes: tuple[int, int, int]
    signs: tuple[int, int, int]
    offsets: tuple[int, int, int]


def latticeMap(source: Grid, target: Grid, tolerance: float = TOLERANCE_VOXELS) -> LatticeMap | None:
    """The map from ``target`` voxels to ``source`` voxels, or None when their centres do not coincide."""
    scale_s = np.diag(1.0 / np.asarray(source.spacing))
    relation = scale_s @ source.direction_matrix.T @ target.direction_matrix @ np.diag(target.spacing)
    shift = scale_s @ source.direction_matrix.T @ (np.asarray(target.origin) - np.asarray(source.origin))
    rounded = np.rint(relation)
    if not (np.abs(rounded).sum(axis=0) == 1).all() or not (np.abs(rounded).sum(axis=1) == 1).all():
        return None
    offsets = np.rint(shift)
    corners = np.array([[i, j, k] for i in (0, target.size[0] - 1) for j in (0, target.size[1] - 1)
                        for k in (0, target.size[2] - 1)], dtype=float)
    error = (corners @ relation.T + shift) - (corners @ rounded.T + offsets)
    if np.abs(error).max() > tolerance:
        return None
    axes = tuple(int(np.flatnonzero(rounded[:, a])[0]) for a in range(3))
    signs = tuple(int(rounded[axes[a], a]) for a in range(3))
    return LatticeMap(axes=axes, signs=signs, offsets=tuple(int(offsets[axes[a]]) for a in range(3)))


def _axis_slices(n_target: int, n_source: int, sign: int, offset: int) -> tuple[slice, slice] | None:
    """Target and source slices along one axis for source index = offset + sign * target index."""
    t = np.arange(n_target)
    s = offset + sign * t
    inside = np.flatnonzero((s >= 0) & (s < n_source))
    if inside.size == 0:
        return None
    t0, t1 = int(inside[0]), int(inside[-1]) + 1
    s0, s1 = int(s[t0]), int(s[t1 - 1])
    if sign > 0:
        return slice(t0, t1), slice(s0, s1 + 1)
    return slice(t0, t1), slice(s0, s1 - 1 if s1 > 0 else None, -1)


def copyOntoGrid(array: np.ndarray, source: Grid, target: Grid, mapping: LatticeMap) -> tuple[np.ndarray, int]:
    """``array`` (``[k, j, i]`` on ``source``) copied onto ``target``; zero where the source has no voxel.

    Returns the array on ``target`` and the number of non-zero source voxels that fall outside it.
    """
    out = np.zeros(target.shape, dtype=array.dtype)
    # NumPy axis of the source array feeding target numpy axes (k, j, i): grid axis b is numpy axis 2 - b.
    moved = np.transpose(array, [2 - mapping.axes[2], 2 - mapping.axes[1], 2 - mapping.axes[0]])
    target_slices, source_slices = [], []
    for a in (2, 1, 0):
        pair = _axis_slices(target.size[a], source.size[mapping.axes[a]], mapping.signs[a], mapping.offsets[a])
        if pair is None:
            return out, int(np.count_nonzero(array))
        target_slices.append(pair[0])
        source_slices.append(pair[1])
    out[tuple(target_slices)] = moved[tuple(source_slices)]
    return out, int(np.count_nonzero(array)) - int(np.count_nonzero(out))


def isSameLattice(source: Grid, target: Grid, mapping: LatticeMap | None) -> bool:
    """True when ``mapping`` pairs every voxel of ``target`` with one of ``source`` and none is left over:
    the same voxels, possibly with axes reversed or swapped."""
    if mapping is None:
        return False
    for a in range(3):
        n = target.size[a]
        if source.size[mapping.axes[a]] != n:
            return False
        if mapping.offsets[a] != (0 if mapping.signs[a] > 0 else n - 1):
            return False
    return True
