"""Image grids in DICOM patient coordinates: the one place axis order and frame are defined.

Conventions used everywhere in ctv_core:

* Coordinates are DICOM patient coordinates (LPS): +x towards the patient's left, +y towards
  the patient's posterior, +z towards the patient's head, in millimetres.
* A grid is described the SimpleITK way: ``size`` and ``spacing`` are ordered (i, j, k) =
  (column, row, slice); ``origin`` is the centre of voxel (0, 0, 0) in LPS mm; ``direction``
  is a 3x3 matrix, stored row-major as a flat 9-tuple, whose *columns* are the LPS unit vectors
  of the i, j and k axes. For a DICOM slice, column 0 is the row direction cosine of
  ImageOrientationPatient (first three values), column 1 the column direction cosine (last
  three values) and column 2 their cross product, the slice normal.
* NumPy arrays are indexed ``[k, j, i]`` (slice, row, column), as returned by
  ``SimpleITK.GetArrayFromImage``.

Slicer's RAS frame is not spoken here; the Slicer module converts in one function of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import SimpleITK as sitk

#: ImageOrientationPatient of an axial slice for each DICOM PatientPosition.
#: Head-first supine is the identity; feet-first flips left-right (the scanner's x axis points
#: to the patient's right); prone flips both left-right and anterior-posterior.
PATIENT_POSITION_IOP: dict[str, tuple[float, float, float, float, float, float]] = {
    "HFS": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "FFS": (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "HFP": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    "FFP": (1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
}


def nonzero_box(array: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box (index slices, one per axis of ``array``) holding its nonzero voxels; None when there is none.

    Found from one projection per axis, so no array of ``array``'s size is made (a CT-sized mask costs nothing
    more than reading it).
    """
    box = []
    for axis in range(array.ndim):
        hit = np.flatnonzero(array.any(axis=tuple(a for a in range(array.ndim) if a != axis)))
        if not len(hit):
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def direction_from_iop(iop: tuple[float, ...] | list[float]) -> np.ndarray:
    """Return the 3x3 direction matrix (columns = i, j, k axes in LPS) for an orientation.

    ImageOrientationPatient holds the row direction cosine then the column direction cosine,
    written with limited decimals; they are made exactly orthonormal here (row normalised,
    column orthogonalised against it) and the k axis is their cross product, the slice normal.

    Raises
    ------
    ValueError
        When the cosines are not unit vectors at right angles (within 1e-3): not an image plane.
    """
    row = np.asarray(iop[:3], dtype=float)
    col = np.asarray(iop[3:6], dtype=float)
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise ValueError(f"ImageOrientationPatient {list(iop)} is not two orthogonal unit vectors")
    row = row / np.linalg.norm(row)
    col = col - (col @ row) * row
    col = col / np.linalg.norm(col)
    return np.column_stack([row, col, np.cross(row, col)])


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid in LPS.

    Attributes
    ----------
    size
        Number of voxels along (i, j, k) = (columns, rows, slices).
    spacing
        Voxel spacing in mm along (i, j, k).
    origin
        LPS position in mm of the centre of voxel (0, 0, 0).
    direction
        Row-major flat 3x3 matrix whose columns are the i, j, k unit vectors in LPS.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @classmethod
    def of_image(cls, image: sitk.Image) -> Grid:
        """The grid of a 3D SimpleITK image."""
        return cls(
            size=tuple(int(s) for s in image.GetSize()),
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """NumPy shape ``(k, j, i)`` of an array on this grid."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def voxel_cc(self) -> float:
        """Volume of one voxel in cm³ (ml)."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def direction_matrix(self) -> np.ndarray:
        """3x3 direction matrix; columns are the i, j, k unit vectors in LPS."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_lps(self, index: np.ndarray) -> np.ndarray:
        """LPS mm of continuous voxel indices given as ``(..., 3)`` arrays in (i, j, k) order."""
        index = np.asarray(index, dtype=float)
        scaled = index * np.asarray(self.spacing)
        return scaled @ self.direction_matrix.T + np.asarray(self.origin)

    def nonzero_points(self, array: np.ndarray) -> np.ndarray:
        """LPS mm ``(N, 3)`` (x, y, z) of the centre of every nonzero voxel of a ``[k, j, i]`` array on this grid.

        Searched within the array's :func:`nonzero_box` only (a CTV fills a small part of a CT).
        """
        box = nonzero_box(array)
        if box is None:
            return np.zeros((0, 3))
        index = np.argwhere(array[box])
        index += np.array([s.start for s in box])
        return self.index_to_lps(index[:, ::-1].astype(float))

    def lps_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Smallest and largest LPS coordinates (x, y, z mm) of the voxel centres: the box of the eight corner voxels."""
        last = np.asarray(self.size) - 1
        corners = np.array([[i, j, k] for i in (0, last[0]) for j in (0, last[1]) for k in (0, last[2])], dtype=float)
        points = self.index_to_lps(corners)
        return points.min(axis=0), points.max(axis=0)

    def lps_to_index(self, points: np.ndarray) -> np.ndarray:
        """Continuous (i, j, k) indices of ``(..., 3)`` LPS points in mm."""
        points = np.asarray(points, dtype=float) - np.asarray(self.origin)
        return (points @ self.direction_matrix) / np.asarray(self.spacing)

    def axis_coordinates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """LPS coordinates of every voxel centre as three ``(k, j, i)`` float32 arrays (x, y, z).

        Memory: three float32 arrays of the grid's shape.
        """
        d = self.direction_matrix * np.asarray(self.spacing)  # column c = step along axis c
        i = np.arange(self.size[0], dtype=np.float32)
        j = np.arange(self.size[1], dtype=np.float32)
        k = np.arange(self.size[2], dtype=np.float32)
        coords = []
        for axis in range(3):
            c = (
                self.origin[axis]
                + d[axis, 2] * k[:, None, None]
                + d[axis, 1] * j[None, :, None]
                + d[axis, 0] * i[None, None, :]
            )
            coords.append(np.broadcast_to(c, self.shape).astype(np.float32))
        return coords[0], coords[1], coords[2]

    def image(self, array: np.ndarray) -> sitk.Image:
        """Wrap a ``(k, j, i)`` array as a SimpleITK image on this grid."""
        if array.shape != self.shape:
            raise ValueError(f"array shape {array.shape} does not match grid shape {self.shape}")
        import SimpleITK as sitk  # here, not at import: SimpleITK takes 100 MB that geometry alone does not need

        image = sitk.GetImageFromArray(array)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def _corners(self) -> np.ndarray:
        return np.array(
            [[0, 0, 0], [self.size[0] - 1, self.size[1] - 1, self.size[2] - 1], [self.size[0] - 1, 0, 0],
             [0, self.size[1] - 1, 0], [0, 0, self.size[2] - 1]],
            dtype=float,
        )

    def displacement_mm(self, other: Grid) -> float:
        """Largest distance (mm) between corresponding voxel centres of two grids of one size (inf otherwise).

        The grids are affine, so the largest distance is at one of the corners checked.
        """
        if self.size != other.size:
            return float("inf")
        corners = self._corners()
        return float(np.linalg.norm(self.index_to_lps(corners) - other.index_to_lps(corners), axis=1).max())

    def matches(self, other: Grid, tolerance_mm: float = 1e-3) -> bool:
        """True when both grids have the same size and place every voxel within ``tolerance_mm``."""
        return self.displacement_mm(other) <= tolerance_mm

    def differences(self, other: Grid, tolerance_mm: float = 1e-3) -> list[str]:
        """What differs from ``other`` and by how much (never empty when the grids do not match), for messages.

        Sizes, spacings (mm), origins (mm) and directions are compared exactly and shown to the
        precision that tells them apart; for grids of one size the largest displacement of a
        voxel centre comes first.
        """
        def shown(values, digits):
            return "(" + ", ".join(f"{float(v):.{digits}f}" for v in values) + ")"

        details = []
        if self.size != other.size:
            details.append(f"size {self.size} vs {other.size}")
        else:
            details.append(f"voxel centres up to {self.displacement_mm(other):.4g} mm apart "
                           f"(tolerance {tolerance_mm:g} mm)")
        for name, mine, theirs, unit in (("spacing", self.spacing, other.spacing, " mm"),
                                         ("origin", self.origin, other.origin, " mm"),
                                         ("direction", self.direction, other.direction, "")):
            gap = float(np.max(np.abs(np.subtract(mine, theirs))))
            if gap > 0:
                digits = min(9, max(3, int(np.ceil(-np.log10(gap))) + 1))
                details.append(f"{name} {shown(mine, digits)} vs {shown(theirs, digits)}{unit}")
        return details
