"""Where RAS meets LPS: the CT out of a volume node, a mask into a segment, on real MRML (slicer-core).

Volume nodes are built as Slicer's DICOM loader builds them (``slicer_support.load_dicom_volume``,
from the DICOM attributes, not through ctv_core), in all four patient positions, oblique and
anisotropic; segments are read back through VTK and compared in patient coordinates.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import axial_grid, write_linear_series
from slicer_support import load_dicom_volume, ras, require_slicer

from ctv_core import GridMismatchError, load_ct_series
from ctv_core.geometry import Grid

CASES = {
    "HFS": dict(position="HFS"),
    "FFS": dict(position="FFS"),
    "HFP": dict(position="HFP"),
    "FFP": dict(position="FFP"),
    "oblique": dict(position="HFS", oblique_deg=17.0),
    "anisotropic": dict(position="FFP", spacing=(0.7, 1.9, 3.0), oblique_deg=-9.0),
}


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Real DICOM CT series (the linear-HU CT of conftest) for each case, and their ctv_core load."""
    root = tmp_path_factory.mktemp("slicer-geometry")
    out = {}
    for name, case in CASES.items():
        grid = axial_grid(case["position"], spacing=case.get("spacing", (1.5, 1.2, 3.0)),
                          oblique_deg=case.get("oblique_deg", 0.0))
        folder = write_linear_series(root / name, grid, case["position"])
        out[name] = (folder, load_ct_series(folder))
    return out


def _asymmetric_mask(grid: Grid) -> np.ndarray:
    """A mask that tells every axis and sign apart: left, anterior and cranial parts of the grid."""
    x, y, z = grid.axis_coordinates()
    centre = grid.index_to_lps((np.asarray(grid.size) - 1) / 2)
    return ((x > centre[0] + 3) & (y < centre[1] + 4) & (z > centre[2] - 2)
            | (np.abs(x - centre[0] + 6) < 2) & (y > centre[1])).astype(np.uint8)


def _segment_points_lps(segmentation_node, segment_id: str) -> np.ndarray:
    """LPS centres (mm) of the voxels a segment holds, read straight from its labelmap through VTK."""
    slicer = require_slicer()
    from vtk.util import numpy_support

    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    labelmap = segment.GetRepresentation("Binary labelmap")
    extent = labelmap.GetExtent()
    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[::-1])
    k, j, i = np.nonzero(values == segment.GetLabelValue())
    matrix = slicer.util.arrayFromVTKMatrix(_image_to_world(labelmap))
    index = np.column_stack([i + extent[0], j + extent[2], k + extent[4], np.ones(len(i))])
    points_ras = (index @ matrix.T)[:, :3]
    return np.array([ras(p) for p in points_ras])  # RAS -> LPS: the same sign change, written independently


def _image_to_world(image):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return matrix


def _sorted_rows(points: np.ndarray) -> np.ndarray:
    return points[np.lexsort(np.round(points, 3).T[::-1])]


@pytest.mark.parametrize("case", list(CASES))
def test_volume_to_image_equals_load_ct_series(slicer_lib, mrml_scene, series, case):
    folder, ct = series[case]
    volume = load_dicom_volume(mrml_scene, folder)
    image = slicer_lib.CTVDelineationLogic(mrml_scene).volume_to_image(volume)
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(ct.image))
    assert Grid.of_image(image).matches(ct.grid, tolerance_mm=1e-4), Grid.of_image(image).differences(ct.grid, 1e-4)
    assert np.allclose(image.GetDirection(), ct.image.GetDirection(), atol=1e-9)


@pytest.mark.parametrize("case", list(CASES))
def test_import_mask_puts_the_segment_on_the_same_patient_points(slicer_lib, mrml_scene, series, case):
    slicer = require_slicer()
    folder, ct = series[case]
    volume = load_dicom_volume(mrml_scene, folder)
    mask = _asymmetric_mask(ct.grid)
    node = slicer_lib.CTVDelineationLogic(mrml_scene).import_mask(volume, ct.grid.image(mask))
    segment_id = node.GetSegmentation().GetSegmentIdBySegmentName("CTV")
    expected = ct.grid.index_to_lps(np.argwhere(mask)[:, ::-1])
    found = _segment_points_lps(node, segment_id)
    assert len(found) == mask.sum() > 50
    assert np.abs(_sorted_rows(found) - _sorted_rows(expected)).max() < 1e-3
    # and Slicer's own reader of segments agrees voxel for voxel on the CT's volume
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, volume) != 0, mask != 0)


def test_patient_frame_round_trip_and_sign_convention(ctv_scene, slicer_lib):
    frame = ctv_scene.patient_frame
    rng = np.random.default_rng(3)
    for _ in range(20):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        matrix = np.eye(4)
        matrix[:3, :3] = q @ np.diag(rng.uniform(0.3, 6.0, 3))
        matrix[:3, 3] = rng.uniform(-400, 400, 3)
        grid = frame.gridFromIjkToRas(matrix, (7, 9, 11))
        assert np.allclose(frame.ijkToRasOfGrid(grid), matrix, atol=1e-9)
        corner = np.array([6, 8, 10])
        assert np.allclose(grid.index_to_lps(corner), ras((matrix @ np.append(corner, 1))[:3]), atol=1e-9)
    # Slicer's default: IJK = RAS axes; the voxel at RAS (10, 20, 30) is at LPS (-10, -20, 30)
    identity = np.eye(4)
    identity[:3, 3] = (10, 20, 30)
    grid = frame.gridFromIjkToRas(identity, (2, 2, 2))
    assert grid.origin == (-10.0, -20.0, 30.0) and np.allclose(grid.direction_matrix, np.diag([-1, -1, 1]))


def test_lattice_copies_exactly_across_flipped_and_swapped_axes_and_refuses_other_lattices(ctv_scene, slicer_lib):
    lattice = ctv_scene.lattice
    source = axial_grid("HFP", size=(9, 7, 5), spacing=(1.1, 0.9, 2.5), oblique_deg=12.0)
    rng = np.random.default_rng(1)
    array = (rng.random(source.shape) > 0.5).astype(np.uint8)
    direction = source.direction_matrix
    # target: axes swapped (i <-> k) and j reversed, shifted by whole voxels, partly outside the source
    d_target = np.column_stack([direction[:, 2], -direction[:, 1], direction[:, 0]])
    spacing_t = (source.spacing[2], source.spacing[1], source.spacing[0])
    origin_t = source.index_to_lps(np.array([1, 5, -2]))
    target = Grid(size=(4, 8, 10), spacing=spacing_t, origin=tuple(origin_t), direction=tuple(d_target.flatten()))
    mapping = lattice.latticeMap(source, target)
    assert mapping is not None
    copied, outside = lattice.copyOntoGrid(array, source, target, mapping)
    expected = np.zeros(target.shape, np.uint8)
    for k, j, i in np.ndindex(target.shape):  # brute force through patient coordinates
        s = np.rint(source.lps_to_index(target.index_to_lps(np.array([i, j, k])))).astype(int)
        if np.all(s >= 0) and np.all(s < source.size):
            expected[k, j, i] = array[s[2], s[1], s[0]]
    assert np.array_equal(copied, expected)
    assert outside == array.sum() - expected.sum() > 0
    half = Grid(size=target.size, spacing=spacing_t, origin=tuple(origin_t + d_target[:, 0] * spacing_t[0] / 2),
                direction=target.direction)
    assert lattice.latticeMap(source, half) is None
    finer = Grid(size=target.size, spacing=(spacing_t[0] / 2, *spacing_t[1:]), origin=target.origin,
                 direction=target.direction)
    assert lattice.latticeMap(source, finer) is None


def test_replacing_the_ctv_keeps_every_other_segment(ctv_scene, slicer_lib, mrml_scene, series):
    folder, ct = series["HFS"]
    volume = load_dicom_volume(mrml_scene, folder)
    logic = slicer_lib.CTVDelineationLogic(mrml_scene)
    first = np.zeros(ct.grid.shape, np.uint8)
    first[2:6, 5:20, 5:30] = 1
    node = logic.import_mask(volume, ct.grid.image(first))
    bladder = np.zeros(ct.grid.shape, np.uint8)
    bladder[4:9, 10:30, 20:40] = 1  # overlaps the CTV
    logic.import_mask(volume, ct.grid.image(bladder), node, name="Bladder")
    rectum = np.zeros(ct.grid.shape, np.uint8)
    rectum[0:3, 30:38, 2:8] = 1
    node, rectum_id = ctv_scene.conversion.importMask(volume, ct.grid.image(rectum), node, "Rectum")
    node.GetSegmentation().CollapseBinaryLabelmaps(False)  # as the Segment Editor shares layers
    ids_before = [node.GetSegmentation().GetNthSegmentID(n) for n in range(3)]
    second = np.zeros(ct.grid.shape, np.uint8)
    second[6:11, 25:35, 10:15] = 1
    logic.import_mask(volume, ct.grid.image(second), node)
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())] == ids_before
    grid = ctv_scene.patient_frame.gridOfVolume(volume)
    for name, expected in (("CTV", second), ("Bladder", bladder), ("Rectum", rectum)):
        got = ctv_scene.conversion.segmentMask(node, segmentation.GetSegmentIdBySegmentName(name), grid).array
        assert np.array_equal(got, expected), name


def test_import_refuses_masks_and_segmentations_of_another_ct(slicer_lib, mrml_scene, series):
    slicer = require_slicer()
    logic = slicer_lib.CTVDelineationLogic(mrml_scene)
    volume = load_dicom_volume(mrml_scene, series["HFS"][0], "HFS")
    other = load_dicom_volume(mrml_scene, series["anisotropic"][0], "anisotropic")
    other_ct = series["anisotropic"][1]
    with pytest.raises(GridMismatchError, match="not on the voxels of the CT 'HFS'"):
        logic.import_mask(volume, other_ct.grid.image(np.ones(other_ct.grid.shape, np.uint8)))
    node = logic.import_mask(other, other_ct.grid.image(np.ones(other_ct.grid.shape, np.uint8)))
    ct = series["HFS"][1]
    with pytest.raises(GridMismatchError, match="made on another image than the CT 'HFS'"):
        logic.import_mask(volume, ct.grid.image(np.ones(ct.grid.shape, np.uint8)), node)
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "Shift")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(slicer_lib.SceneInputError, match="under the transform 'Shift'"):
        logic.volume_to_image(volume)
    label = mrml_scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "Labels")
    slicer.util.updateVolumeFromArray(label, np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(slicer_lib.SceneInputError, match="is not a CT volume"):
        logic.volume_to_image(label)
    with pytest.raises(slicer_lib.SceneInputError, match="No CT selected"):
        logic.volume_to_image(None)


def test_review_steps_through_the_slices_that_hold_the_ctv(slicer_lib, mrml_scene, series):
    folder, ct = series["FFS"]
    volume = load_dicom_volume(mrml_scene, folder)
    mask = np.zeros(ct.grid.shape, np.uint8)
    mask[[2, 3, 7], 10:14, 10:14] = 1
    node = slicer_lib.CTVDelineationLogic(mrml_scene).import_mask(volume, ct.grid.image(mask))
    segment_id = node.GetSegmentation().GetSegmentIdBySegmentName("CTV")
    offsets = slicer_lib.segmentSliceOffsets(node, segment_id, volume, (0, 0, 1))
    # S of RAS = S of LPS; feet-first, slice k runs towards the feet, so the order reverses
    expected = sorted(ct.grid.index_to_lps(np.array([0, 0, k]))[2] for k in (2, 3, 7))
    assert np.allclose(offsets, expected, atol=1e-3)
    player = slicer_lib.ReviewPlayer(offsets)
    player.startAt(expected[1] + 0.1)
    assert [player.step(1), player.step(1), player.step(-1)] == [offsets[2], offsets[0], offsets[2]]
    assert player.position() == "CTV slice 3 of 3"
    assert slicer_lib.ReviewPlayer([]).step(1) is None
