"""Where the slices of a series lie, and how to put a non-rectilinear stack on a regular grid.

Owns the slice-order and spacing rules of ``load_ct_series``:

* Slices are ordered by ImagePositionPatient projected on the slice normal
  (row cosine x column cosine), never by InstanceNumber or file name.
* The regular spacing ``g`` is the smallest gap between neighbouring slices that is at least
  half the median gap (so one stray overlapping slice does not set it). A gap is regular when
  it is within ``max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_FRACTION * g)`` of ``g``.
* A gap that is an integer multiple (>= 2) of ``g`` within that tolerance means missing
  slices, which is refused unless the caller accepts resampling across the gap.
* Any other irregular gap (a protocol with changing spacing) and any in-plane drift of the
  slice positions (gantry tilt, which shears the stack) are resampled onto a rectilinear grid
  by ``regularize_slices``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DuplicateSliceError, MissingSlicesError

SPACING_TOLERANCE_MM = 0.02
SPACING_TOLERANCE_FRACTION = 0.01
IN_PLANE_TOLERANCE_MM = 0.05
DUPLICATE_TOLERANCE_MM = 0.01


@dataclass(frozen=True)
class SliceLayout:
    """Positions of a series' slices relative to its first slice (after ordering).

    Attributes
    ----------
    order
        Indices that sort the input slices by position along the normal.
    normal_mm
        Position of each ordered slice along the slice normal, mm, starting at 0.
    in_plane_mm
        ``(n, 2)`` offset of each ordered slice along the row and column directions, mm.
    spacing
        The regular spacing along the normal, mm.
    missing
        Human-readable description of gaps that look like missing slices (empty if none).
    irregular
        True when the gaps are not all regular (missing or changing spacing).
    tilt_deg
        Gantry tilt implied by in-plane drift, degrees (0 when none).
    """

    order: np.ndarray
    normal_mm: np.ndarray
    in_plane_mm: np.ndarray
    spacing: float
    missing: tuple[str, ...]
    irregular: bool
    tilt_deg: float

    @property
    def needs_regularization(self) -> bool:
        return self.irregular or bool(np.abs(self.in_plane_mm).max(initial=0.0) > IN_PLANE_TOLERANCE_MM)


def spacing_tolerance(spacing: float) -> float:
    """Allowed deviation of a gap from the regular spacing, mm."""
    return max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_FRACTION * spacing)


def analyse_slice_positions(
    positions: np.ndarray, direction: np.ndarray, labels: list[str], default_spacing: float | None = None
) -> SliceLayout:
    """Order slices and classify their spacing.

    Parameters
    ----------
    positions
        ``(n, 3)`` ImagePositionPatient of each slice, LPS mm.
    direction
        3x3 matrix whose columns are the row cosine, column cosine and slice normal (LPS).
    labels
        A name per slice (file path) for error messages.
    default_spacing
        Spacing to report for a single slice (SliceThickness), mm.

    Raises
    ------
    DuplicateSliceError
        Two slices at the same position.
    """
    row, col, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    s = positions @ normal
    order = np.argsort(s, kind="stable")
    s = s[order]
    rel = positions[order] - positions[order[0]]
    normal_mm = s - s[0]
    in_plane = np.column_stack([rel @ row, rel @ col])
    if len(s) == 1:
        spacing = float(default_spacing or 1.0)
        return SliceLayout(order, normal_mm, in_plane, spacing, (), False, 0.0)

    gaps = np.diff(s)
    dup = np.flatnonzero(gaps < DUPLICATE_TOLERANCE_MM)
    if dup.size:
        a, b = labels[order[dup[0]]], labels[order[dup[0] + 1]]
        raise DuplicateSliceError(
            f"{dup.size} pair(s) of different slices lie at the same position, e.g. {a} and {b} "
            f"(at {s[dup[0]]:.2f} mm along the slice normal). The series mixes two acquisitions or "
            "reconstructions; export the one you want on its own, or pick it by SeriesInstanceUID."
        )
    median = float(np.median(gaps))
    spacing = float(gaps[gaps >= 0.5 * median].min())
    tol = spacing_tolerance(spacing)
    regular = np.abs(gaps - spacing) <= tol
    multiples = np.rint(gaps / spacing)
    missing_mask = ~regular & (multiples >= 2) & (np.abs(gaps - multiples * spacing) <= tol * multiples)
    missing = tuple(
        f"{int(multiples[g]) - 1} slice(s) between {labels[order[g]]} and {labels[order[g + 1]]} "
        f"(gap {gaps[g]:.2f} mm, spacing {spacing:.2f} mm)"
        for g in np.flatnonzero(missing_mask)
    )
    drift = float(np.hypot(*(in_plane[-1])) / normal_mm[-1]) if normal_mm[-1] > 0 else 0.0
    tilt = float(np.degrees(np.arctan(drift))) if np.abs(in_plane).max() > IN_PLANE_TOLERANCE_MM else 0.0
    return SliceLayout(order, normal_mm, in_plane, spacing, missing, bool((~regular).any()), tilt)


def check_missing(layout: SliceLayout, allow_resampling_gaps: bool) -> None:
    """Refuse a series with missing slices unless resampling across gaps is allowed."""
    if layout.missing and not allow_resampling_gaps:
        raise MissingSlicesError(
            "The CT series has missing slices: " + "; ".join(layout.missing) + ". A contour on an incomplete "
            "CT is unsafe. Re-export the complete series from the scanner or PACS; if the gaps were "
            "acquired on purpose, allow resampling across them (load_ct_series(..., "
            "allow_resampling_gaps=True), or --allow-gaps on the command line)."
        )


@dataclass(frozen=True)
class RegularGrid:
    """Placement of a regularized stack: in-plane and normal offsets from the first slice."""

    origin_offset: tuple[float, float]  # (row-direction, column-direction) mm of voxel (0, 0, *)
    size: tuple[int, int, int]  # (i, j, k)


def regularize_slices(
    slices: list[np.ndarray], layout: SliceLayout, pixel_spacing: tuple[float, float], pad_value: float
) -> tuple[np.ndarray, RegularGrid]:
    """Resample an ordered stack of slices onto a rectilinear grid.

    Each output slice lies on a plane perpendicular to the normal, ``layout.spacing`` apart,
    starting at the first slice. Its value at an in-plane point is interpolated linearly
    between the two acquired slices that bracket the plane, each sampled (bilinearly) at the
    point's projection onto that slice's own plane, so a sheared (tilted) stack comes back
    unsheared and an unevenly spaced stack evenly spaced. The in-plane extent grows to hold
    every acquired pixel; points outside all slices get ``pad_value``.

    Parameters
    ----------
    slices
        2D ``[row, column]`` arrays in the order of ``layout`` (already sorted).
    pixel_spacing
        (column spacing along the row direction, row spacing along the column direction), mm.

    Returns
    -------
    volume
        float32 ``[k, j, i]``.
    grid
        where voxel (0, 0, 0) lies relative to the first slice's first pixel, and the size.
    """
    from scipy import ndimage  # here: judging positions (the DICOM node's series) needs no scipy

    sx, sy = pixel_spacing
    rows, cols = slices[0].shape
    u, v = layout.in_plane_mm[:, 0], layout.in_plane_mm[:, 1]
    u0, v0 = float(u.min()), float(v.min())
    size_i = int(round((u.max() - u0) / sx)) + cols
    size_j = int(round((v.max() - v0) / sy)) + rows
    size_k = int(np.floor(layout.normal_mm[-1] / layout.spacing + 1e-6)) + 1
    volume = np.empty((size_k, size_j, size_i), dtype=np.float32)
    cache: dict[int, np.ndarray] = {}

    def in_plane(m: int) -> np.ndarray:
        if m not in cache:
            offset = ((v0 - v[m]) / sy, (u0 - u[m]) / sx)
            cache[m] = ndimage.affine_transform(
                slices[m].astype(np.float32), np.eye(2), offset=offset, output_shape=(size_j, size_i),
                order=1, mode="constant", cval=pad_value,
            )
        return cache[m]

    s = layout.normal_mm
    for t in range(size_k):
        pos = t * layout.spacing
        a = int(np.clip(np.searchsorted(s, pos, side="right") - 1, 0, len(s) - 1))
        b = min(a + 1, len(s) - 1)
        w = 0.0 if b == a else float(np.clip((pos - s[a]) / (s[b] - s[a]), 0.0, 1.0))
        volume[t] = in_plane(a) if w == 0.0 else (1.0 - w) * in_plane(a) + w * in_plane(b)
        for m in [m for m in cache if m < a]:
            del cache[m]
    return volume, RegularGrid((u0, v0), (size_i, size_j, size_k))
