"""Where Slicer's RAS meets ctv_core's LPS: the one conversion between the two frames.

Slicer places a voxel with an IJK-to-RAS matrix (right, anterior, superior; mm); ctv_core and
DICOM describe the same voxel in patient coordinates LPS (left, posterior, superior; mm) with a
``Grid`` (size, spacing, origin and direction, SimpleITK's convention; see
``ctv_core.geometry``). The two frames differ by a half turn about the superior axis, so
``LPS = diag(-1, -1, 1) @ RAS`` and the same matrix takes LPS back to RAS. Every conversion in
the Slicer module and the review station goes through :func:`gridFromIjkToRas` and its inverse
:func:`ijkToRasOfGrid`; the module's ``volume_to_image`` and ``import_mask`` are the public doors.

Axis order: IJK is Slicer's (i along a row, j down the columns, k across slices) and equals
ctv_core's (i, j, k); NumPy arrays of both are indexed ``[k, j, i]``.
"""

from __future__ import annotations

import numpy as np
import vtk

from ..geometry import Grid

#: RAS -> LPS (and LPS -> RAS: the matrix is its own inverse).
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def matrixToArray(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """A vtkMatrix4x4 as a 4 x 4 float64 array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def arrayToMatrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """A 4 x 4 array as a vtkMatrix4x4."""
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def gridFromIjkToRas(ijkToRas: np.ndarray, size: tuple[int, int, int]) -> Grid:
    """The LPS grid of ``size`` voxels (i, j, k) placed by a 4 x 4 IJK-to-RAS matrix (mm).

    Spacing is the length of each matrix column; the direction's columns are the unit axes
    turned into LPS; the origin is the centre of voxel (0, 0, 0) in LPS.
    """
    ijkToRas = np.asarray(ijkToRas, dtype=float)
    columns = ijkToRas[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"IJK-to-RAS matrix with a zero-length axis: {ijkToRas.tolist()}")
    direction = LPS_FROM_RAS @ (columns / spacing)
    origin = LPS_FROM_RAS @ ijkToRas[:3, 3]
    return Grid(size=tuple(int(s) for s in size), spacing=tuple(float(s) for s in spacing),
                origin=tuple(float(o) for o in origin), direction=tuple(float(d) for d in direction.flatten()))


def ijkToRasOfGrid(grid: Grid) -> np.ndarray:
    """The 4 x 4 IJK-to-RAS matrix of an LPS grid (inverse of :func:`gridFromIjkToRas`)."""
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_FROM_RAS @ grid.direction_matrix @ np.diag(grid.spacing)
    matrix[:3, 3] = LPS_FROM_RAS @ np.asarray(grid.origin, dtype=float)
    return matrix


def gridOfVolume(volumeNode) -> Grid:
    """The LPS grid of a volume node's voxels (its IJK-to-RAS matrix and image dimensions)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return gridFromIjkToRas(matrixToArray(matrix), volumeNode.GetImageData().GetDimensions())


def gridOfOrientedImage(image) -> Grid:
    """The LPS grid of a vtkOrientedImageData (a segment's labelmap), from the first voxel of its extent."""
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    ijkToRas = matrixToArray(matrix)
    extent = image.GetExtent()
    first = np.array([extent[0], extent[2], extent[4], 1.0])
    ijkToRas[:3, 3] = (ijkToRas @ first)[:3]
    size = (extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1)
    return gridFromIjkToRas(ijkToRas, size)
