"""What the clinician sees: Slicer's own slice views and 3D view (slicer-core, rendered off-screen) show an
imported structure on the patient's side it is on, in every patient position.

Slicer draws axial and coronal views in the radiological convention: the patient's left on the
right of the screen; anterior at the top of an axial view, superior at the top of a coronal one.
A structure placed on the patient's left, anterior and cranial must appear there: a mirrored or
shifted contour would show on the wrong side.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import axial_grid, write_linear_series
from slicer_support import load_dicom_volume
from slicer_views import colour_mask, render_3d, render_slice

from ctv_core import load_ct_series

MAGENTA = (255, 0, 255)


@pytest.mark.parametrize("position,oblique", [("HFS", 0.0), ("FFS", 0.0), ("HFP", 0.0), ("FFP", 10.0)])
def test_a_left_anterior_cranial_structure_shows_there(slicer_lib, mrml_scene, tmp_path, position, oblique):
    grid = axial_grid(position, size=(60, 50, 16), spacing=(2.0, 2.0, 3.0), oblique_deg=oblique)
    folder = write_linear_series(tmp_path / "ct", grid, position)
    ct = load_ct_series(folder)
    volume = load_dicom_volume(mrml_scene, folder)
    x, y, z = ct.grid.axis_coordinates()
    centre = ct.grid.index_to_lps((np.asarray(ct.grid.size) - 1) / 2)
    left, anterior, cranial = x - centre[0], centre[1] - y, z - centre[2]  # LPS: +x left, -y anterior, +z cranial
    blob = (left > 12) & (left < 40) & (anterior > 8) & (anterior < 30) & (cranial > 3) & (cranial < 15)
    slicer_lib.CTVDelineationLogic(mrml_scene).import_mask(volume, ct.grid.image(blob.astype(np.uint8)))

    axial = colour_mask(render_slice(mrml_scene, volume, "Axial", offset=centre[2] + 9, size=(200, 200)), MAGENTA)
    rows, columns = np.nonzero(axial)
    assert len(rows) > 50
    # the patient's left on the right of the screen, anterior at the top
    assert columns.mean() > 110 and rows.mean() < 90, (position, columns.mean(), rows.mean())
    # coronal view: offset along its normal, anterior (RAS y = -LPS y)
    coronal = colour_mask(render_slice(mrml_scene, volume, "Coronal", offset=-(centre[1] - 19), size=(200, 200)),
                          MAGENTA)
    rows, columns = np.nonzero(coronal)
    assert len(rows) > 50
    assert columns.mean() > 110 and rows.mean() < 100, (position, columns.mean(), rows.mean())  # left, cranial

    node = mrml_scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    node.CreateClosedSurfaceRepresentation()
    three_d = colour_mask(render_3d(mrml_scene, size=(200, 200)), MAGENTA, tolerance=120)
    assert three_d.sum() > 200
