"""Checks that a CT can be a pelvic planning CT before anything is predicted on it.

A planning CT for cervical-cancer radiotherapy covers the pelvis from above the aortic
bifurcation to below the ischial tuberosities: 200-400 mm along the patient axis. A series of a
few slices, or one covering a few centimetres, cannot hold the CTV; predicting on it gives an
empty or truncated contour that could be mistaken for a result, so it is refused with the reason.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..errors import InsufficientCoverageError
from ..geometry import Grid

#: The least extent along the patient's head-feet axis a CT must cover, mm (a CTV spans ~150-250 mm).
MIN_EXTENT_MM = 100.0
#: The least number of slices.
MIN_SLICES = 3


def craniocaudal_extent_mm(image: sitk.Image) -> float:
    """The length (mm) the CT's voxels cover along LPS z (head-feet), whole voxels counted."""
    grid = Grid.of_image(image)
    low, high = grid.lps_bounds()
    step = np.abs(grid.direction_matrix[2]) @ np.asarray(grid.spacing)  # one voxel's reach along z
    return float(high[2] - low[2] + step)


def check_pelvic_coverage(image: sitk.Image) -> None:
    """Raise ``InsufficientCoverageError`` unless ``image`` has enough slices and millimetres to hold a CTV."""
    slices = image.GetSize()[2]
    extent = craniocaudal_extent_mm(image)
    if slices < MIN_SLICES or extent < MIN_EXTENT_MM:
        raise InsufficientCoverageError(
            f"The CT has {slices} slice(s) covering {extent:.0f} mm along the patient's head-feet axis; CTV "
            f"delineation needs at least {MIN_SLICES} slices and {MIN_EXTENT_MM:.0f} mm (a pelvic planning CT covers "
            "200-400 mm, from above the aortic bifurcation to below the ischial tuberosities). Give the whole "
            "planning CT series; if it was split on export, export it again as one series."
        )
