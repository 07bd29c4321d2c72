"""Checks every writer of a derived object (RTSTRUCT, SEG) runs before it writes anything.

A contour on the wrong CT, or on the right CT but the wrong grid, is a clinical error: these
checks refuse such input with a message that says what to do.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import SimpleITK as sitk

from ..dicom.ct_series import CTSeries
from ..errors import GridMismatchError, StructureSetError
from ..geometry import Grid

GRID_TOLERANCE_MM = 1e-3


def check_mask_on_grid(name: str, mask: sitk.Image, grid: Grid) -> None:
    """Raise ``GridMismatchError`` unless ``mask`` lies on ``grid`` (every voxel within 1 um)."""
    if mask.GetDimension() != 3:
        raise GridMismatchError(f"Mask '{name}' is {mask.GetDimension()}D; a 3D mask on the CT's grid is needed.")
    other = Grid.of_image(mask)
    if other.matches(grid, tolerance_mm=GRID_TOLERANCE_MM):
        return
    details = other.differences(grid, GRID_TOLERANCE_MM)  # mask vs the CT
    raise GridMismatchError(
        f"Mask '{name}' is not on the CT's grid (mask vs CT: {'; '.join(details)}). A contour written from it would "
        "be in the wrong place. Resample the mask onto the CT image (nearest neighbour onto ct.image) or write it "
        "against the CT it was computed on."
    )


def check_binary(name: str, mask: sitk.Image) -> None:
    """Raise ``StructureSetError`` unless ``mask`` is binary: 0 outside and one positive value inside.

    A probability map (values between 0 and 1) or a label map (several values) is refused with
    what to do, rather than binarised at > 0 without a word.
    """
    array = sitk.GetArrayViewFromImage(mask)
    if array.size == 0:
        return
    high = array.max()
    if array.dtype == np.uint8 and high <= 1:
        return
    low = array.min()
    if low < 0 or not np.isfinite(low) or not np.isfinite(high):
        raise StructureSetError(f"Mask '{name}' holds negative or non-finite values (down to {float(low):g}); a mask "
                                "is 0 outside and one positive value inside.")
    if high == 0:
        return
    inside = np.count_nonzero(array)
    if inside != np.count_nonzero(array == high):
        raise StructureSetError(
            f"Mask '{name}' holds several values besides 0 (up to {float(high):g}): it is a label map or a "
            "probability map, not one structure. Threshold it (e.g. probability >= 0.5) or pick one label "
            "(label == n) first.")
    if float(high) != round(float(high)):
        raise StructureSetError(
            f"Mask '{name}' holds the value {float(high):g} inside, a fraction: it looks like a probability map. "
            "Threshold it first (e.g. >= 0.5); a mask is 0 outside and 1 inside.")


def check_writable(ct: CTSeries, masks: Mapping[str, sitk.Image]) -> None:
    """Raise unless ``masks`` can be written as a derived object referencing ``ct``.

    The CT must be referenceable and unresampled, the names usable (1-64 characters, no
    backslash, unique ignoring case) and every mask on the CT's grid.
    """
    if ct.regularization is not None:
        raise StructureSetError(
            f"This CT was resampled when loaded ({ct.regularization}), so its voxel slices are not the DICOM "
            "slices an RTSTRUCT must reference. Contours cannot be written on it; use a CT acquired without "
            "gantry tilt and with even slice spacing, as planning CTs are."
        )
    problems = ct.reference.problems_for_referencing()
    if problems:
        raise StructureSetError(
            f"The CT cannot be referenced: {'; '.join(problems)}. Re-export the CT from the scanner or PACS with "
            "valid identifiers, then run again."
        )
    if not masks:
        raise StructureSetError("No structure to write: give at least one mask.")
    seen = set()
    for name in masks:
        if not name or not name.strip() or len(name) > 64 or "\\" in name:
            raise StructureSetError(f"ROI name '{name}' is not usable: 1 to 64 characters, no backslash.")
        if name.lower() in seen:
            raise StructureSetError(f"ROI name '{name}' is given twice (names are compared case-insensitively).")
        seen.add(name.lower())
    for name, mask in masks.items():
        check_mask_on_grid(name, mask, ct.grid)
        check_binary(name, mask)
