"""Export RTSTRUCT from the Slicer module: what the clinician edited, on the CT's own DICOM series,
read back by plastimatch and checked by dciodvfy; and every refusal, with nothing written."""

from __future__ import annotations

import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import axial_grid, require_tool, write_linear_series
from slicer_support import FolderDicomDatabase, load_dicom_volume, require_slicer
from test_rtstruct import _plastimatch_masks, dice

from ctv_core import GridMismatchError, StructureSetError, load_ct_series, read_rtstruct


@pytest.fixture
def case(ctv_scene, slicer_lib, mrml_scene, pelvis_phantom):
    """The phantom CT as the DICOM module loads it, with the truth CTV and bladder as segments."""
    ct = load_ct_series(pelvis_phantom.ct_dir)
    volume = load_dicom_volume(mrml_scene, pelvis_phantom.ct_dir)
    logic = slicer_lib.CTVDelineationLogic(mrml_scene, dicomFiles=FolderDicomDatabase(pelvis_phantom.ct_dir))
    truth = {name: sitk.ReadImage(str(pelvis_phantom.masks[name])) for name in ("CTV", "Bladder")}
    node, _ = ctv_scene.conversion.importMask(volume, truth["CTV"], None, "CTV", terminology=logic.terminology,
                                              tags={"ModelId": "test-model 1.0"})
    logic.import_mask(volume, truth["Bladder"], node, name="Bladder")
    return logic, ct, volume, node, {k: sitk.GetArrayFromImage(v) for k, v in truth.items()}


def _edit(node, name, volume, array):
    """Change a segment as the Segment Editor would: through Slicer's own labelmap update."""
    slicer = require_slicer()
    segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(name)
    slicer.util.updateSegmentBinaryLabelmapFromArray(array.astype(np.uint8), node, segment_id, volume)


def test_the_edited_segments_go_out_on_the_cts_own_uids(case, tmp_path):
    logic, ct, volume, node, truth = case
    edited = truth["CTV"].copy()
    z = np.flatnonzero(edited.any(axis=(1, 2)))
    edited[z[-len(z) // 3:]] = 0          # the clinician cuts the cranial third
    edited[z[0]:z[0] + 4, 90:110, 60:80] = 1  # and adds a node region
    _edit(node, "CTV", volume, edited)
    node.GetSegmentation().CollapseBinaryLabelmaps(False)
    written = logic.export_rtstruct(node, volume, tmp_path / "rs.dcm")
    assert written.rois == ["CTV", "Bladder"] and written.algorithm is None  # edited: not "AUTOMATIC"
    assert written.seriesInstanceUID == ct.reference.series_instance_uid

    back = read_rtstruct(written.path, ct, roi=None)
    assert np.array_equal(sitk.GetArrayFromImage(back["CTV"]) != 0, edited != 0)
    assert np.array_equal(sitk.GetArrayFromImage(back["Bladder"]) != 0, truth["Bladder"] != 0)
    theirs = _plastimatch_masks(require_tool("plastimatch"), written.path, ct.folder, tmp_path / "pm")
    resampled = sitk.Resample(ct.grid.image(edited), theirs["CTV"], sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    original = sitk.Resample(ct.grid.image(truth["CTV"]), theirs["CTV"], sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    plastimatch_ctv = sitk.GetArrayFromImage(theirs["CTV"]) != 0
    assert dice(sitk.GetArrayFromImage(resampled) != 0, plastimatch_ctv) >= 0.99
    assert dice(sitk.GetArrayFromImage(original) != 0, plastimatch_ctv) < 0.9  # plastimatch sees the edit

    ds = pydicom.dcmread(written.path)
    ct_uids = set(ct.reference.sop_instance_uids)
    assert ds.StudyInstanceUID == ct.reference.study_instance_uid and ds.FrameOfReferenceUID == \
        ct.reference.frame_of_reference_uid and ds.SeriesInstanceUID != ct.reference.series_instance_uid
    series = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == ct.reference.series_instance_uid
    assert {item.ReferencedSOPInstanceUID for item in series.ContourImageSequence} == ct_uids
    for roi in ds.ROIContourSequence:
        assert {c.ContourImageSequence[0].ReferencedSOPInstanceUID for c in roi.ContourSequence} <= ct_uids
    assert [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence] == ["CTV", "ORGAN"]
    assert ds.ApprovalStatus == "UNAPPROVED"
    report = subprocess.run([require_tool("dciodvfy"), str(written.path)], capture_output=True, text=True)
    errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], errors


def test_an_unedited_prediction_is_automatic_and_a_renamed_ctv_is_still_typed_ctv(case, tmp_path, slicer_lib):
    logic, ct, volume, node, truth = case
    segmentation = node.GetSegmentation()
    segmentation.RemoveSegment(segmentation.GetSegmentIdBySegmentName("Bladder"))
    written = logic.export_rtstruct(node, volume, tmp_path / "auto.dcm")
    ds = pydicom.dcmread(written.path)
    assert ds.StructureSetROISequence[0].ROIGenerationAlgorithm == "AUTOMATIC"
    assert ds.StructureSetROISequence[0].ROIGenerationDescription == "test-model 1.0"
    segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("CTV")).SetName("Target volume")
    written = logic.export_rtstruct(node, volume, tmp_path / "renamed.dcm")
    ds = pydicom.dcmread(written.path)
    assert ds.StructureSetROISequence[0].ROIName == "Target volume"
    assert ds.RTROIObservationsSequence[0].RTROIInterpretedType == "CTV"


def test_a_ct_stacked_the_other_way_exports_the_same_voxels(slicer_lib, mrml_scene, pelvis_phantom, tmp_path):
    ct = load_ct_series(pelvis_phantom.ct_dir)
    volume = load_dicom_volume(mrml_scene, pelvis_phantom.ct_dir, descending=True)
    logic = slicer_lib.CTVDelineationLogic(mrml_scene, dicomFiles=FolderDicomDatabase(pelvis_phantom.ct_dir))
    image = logic.volume_to_image(volume)
    assert image.GetDirection()[8] < 0  # k runs against the slice normal here
    mask = sitk.ReadImage(str(pelvis_phantom.masks["Rectum"]))
    on_volume = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    node = logic.import_mask(volume, on_volume, name="Rectum")
    written = logic.export_rtstruct(node, volume, tmp_path / "rs.dcm")
    back = read_rtstruct(written.path, ct, roi="Rectum")["Rectum"]
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(mask) != 0)


def test_refusals_say_what_to_do_and_write_nothing(case, slicer_lib, mrml_scene, tmp_path, pelvis_phantom):
    slicer = require_slicer()
    logic, ct, volume, node, truth = case
    path = tmp_path / "rs.dcm"

    def refused(kind, match, segmentation=node, ct_volume=volume, folder=None):
        with pytest.raises(kind, match=match):
            logic.export_rtstruct(segmentation, ct_volume, path, ct_folder=folder)
        assert not path.exists() and not list(tmp_path.glob(".rs.dcm*"))

    other = write_linear_series(tmp_path / "other", axial_grid("HFS"), "HFS")
    refused(StructureSetError, "does not hold the CT 'CT'", folder=other)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml_scene)
    hierarchy.SetItemUID(hierarchy.GetItemByDataNode(volume), "DICOM", "")  # series unknown: instances compared
    refused(StructureSetError, "is not the CT 'CT' in the scene", folder=other)
    logic.dicomFiles = FolderDicomDatabase(other)
    refused(StructureSetError, "are not in Slicer's DICOM database any more")
    logic.dicomFiles = FolderDicomDatabase(pelvis_phantom.ct_dir)

    # a CT that did not come from DICOM: refused without a folder; with one only if it holds the same voxels
    plain = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "From NRRD")
    plain.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(slicer.util.arrayFromVTKMatrix(_ijk_to_ras(volume))))
    slicer.util.updateVolumeFromArray(plain, slicer.util.arrayFromVolume(volume).copy())
    refused(StructureSetError, "was not loaded from DICOM", ct_volume=plain)
    assert logic.export_rtstruct(node, plain, path, ct_folder=pelvis_phantom.ct_dir).rois == ["CTV", "Bladder"]
    path.unlink()
    slicer.util.arrayFromVolume(plain)[5, 100, 100] += 300
    slicer.util.arrayFromVolumeModified(plain)
    refused(StructureSetError, "other voxel values: it is another CT", ct_volume=plain, folder=pelvis_phantom.ct_dir)

    # a segment on another lattice (oversampled): a contour from it would be misplaced
    fine = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Oversampled")
    oversampled = slicer.vtkOrientedImageData()
    oversampled.SetDimensions(40, 40, 10)
    oversampled.AllocateScalars(3, 1)  # VTK_UNSIGNED_CHAR
    oversampled.GetPointData().GetScalars().Fill(1)
    matrix = slicer.util.arrayFromVTKMatrix(_ijk_to_ras(volume))
    matrix[:3, :3] /= 2
    oversampled.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(matrix))
    segment = slicer.vtkSegment()
    segment.SetName("Drawn elsewhere")
    segment.AddRepresentation("Binary labelmap", oversampled)
    fine.GetSegmentation().AddSegment(segment)
    refused(GridMismatchError, "'Drawn elsewhere' is not on the CT's voxels", segmentation=fine)

    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "Moved")
    node.SetAndObserveTransformNodeID(transform.GetID())
    refused(slicer_lib.SceneInputError, "under the transform 'Moved'")
    node.SetAndObserveTransformNodeID(None)
    for name in ("CTV", "Bladder"):
        _edit(node, name, volume, np.zeros_like(truth["CTV"]))
    refused(StructureSetError, "is empty; there is nothing to export")


def _ijk_to_ras(volume):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return matrix
