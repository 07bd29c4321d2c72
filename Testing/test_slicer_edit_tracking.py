"""AI versus exported in the Slicer module: a CTV that started as a prediction, edited and exported as RTSTRUCT, on
real MRML: the record beside the RTSTRUCT with the exact edit figures, the model identified in the ROI (dciodvfy,
plastimatch), the AI mask kept with the segment through a save and load of the segmentation, and a prediction
exported on another CT refused with nothing written."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid
from slicer_support import FolderDicomDatabase, load_dicom_volume, require_slicer
from test_rtstruct import _plastimatch_masks
from test_slicer_prediction import DONE, FakeProcess, _box, _drive

from ctv_core import load_ct_series
from ctv_core.errors import EditRecordError
from ctv_core.evaluation.edit_report import read_folder_records, write_edit_report
from ctv_core.evaluation.edits import read_edit_record


@pytest.fixture
def predicted(slicer_lib, mrml_scene, pelvis_phantom, tmp_path):
    """The phantom CT loaded as the DICOM module does, and a CTV predicted on it (the fake worker's box)."""
    volume = load_dicom_volume(mrml_scene, pelvis_phantom.ct_dir)
    logic = slicer_lib.CTVDelineationLogic(mrml_scene, runnerFactory=lambda: FakeProcess(DONE, write_mask=_box),
                                           dicomFiles=FolderDicomDatabase(pelvis_phantom.ct_dir),
                                           temporaryDirectory=str(tmp_path))
    logic.start(volume)
    _drive(logic)
    result = logic.lastResult
    ai = require_slicer().util.arrayFromSegmentBinaryLabelmap(result.segmentationNode, result.segmentId, volume) != 0
    return logic, volume, result.segmentationNode, result.segmentId, ai


def _set(node, segment_id, volume, array):
    """Change a segment as the Segment Editor would: through Slicer's own labelmap update."""
    require_slicer().util.updateSegmentBinaryLabelmapFromArray(array.astype(np.uint8), node, segment_id, volume)


def test_an_edited_prediction_exports_semiautomatic_with_its_edit_recorded_beside_it(predicted, pelvis_phantom,
                                                                                     tmp_path):
    logic, volume, node, segment_id, ai = predicted
    edited = ai.copy()
    for k in np.flatnonzero(ai.any(axis=(1, 2))):  # the clinician widens the CTV by 2 voxels on every slice
        edited[k] = sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.GetImageFromArray(ai[k].astype(np.uint8)), (2, 2),
                                                             sitk.sitkBox)) != 0
    _set(node, segment_id, volume, edited)
    written = logic.export_rtstruct(node, volume, tmp_path / "CTV.dcm")

    ct = load_ct_series(pelvis_phantom.ct_dir)
    (sidecar,) = written.editRecords
    assert sidecar == tmp_path / "CTV.ai-edits.json" and str(sidecar) in written.summary()
    record = read_edit_record(sidecar)
    assert record["door"] == "slicer-export" and record["roi"] == "CTV"
    assert record["ai"] == {"model_name": "fake", "model_version": "1", "model_sha256": "ab" * 32,
                            "series_instance_uid": ct.reference.series_instance_uid, "frame_of_reference_uid": "",
                            "study_instance_uid": ""}
    figures = record["figures"]
    voxel_cc = ct.grid.voxel_cc
    assert figures["added_cc"] == pytest.approx(np.count_nonzero(edited & ~ai) * voxel_cc, abs=1e-4)
    assert figures["added_cc"] == pytest.approx(10 * (44 * 64 - 40 * 60) * voxel_cc, abs=1e-4)  # the box's ring
    assert figures["removed_cc"] == 0.0 and figures["slices_touched"] == 10 and figures["unchanged"] is False

    roi = pydicom.dcmread(written.path).StructureSetROISequence[0]
    assert roi.ROIGenerationAlgorithm == "SEMIAUTOMATIC" and "edited" in roi.ROIGenerationDescription
    (algorithm,) = roi.ROIDerivationAlgorithmIdentificationSequence
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("fake", "1")
    assert f"model_sha256={'ab' * 32}" in algorithm.AlgorithmParameters
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
    check = subprocess.run(["dciodvfy", str(written.path)], capture_output=True, text=True)
    errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], errors
    theirs = _plastimatch_masks(shutil.which("plastimatch"), written.path, ct.folder, tmp_path / "pm")
    assert np.count_nonzero(sitk.GetArrayFromImage(theirs["CTV"])) == np.count_nonzero(edited)

    # the folder of exports is what ctv report reads: the figures per model version
    report = write_edit_report(read_folder_records(tmp_path), tmp_path / "report", str(tmp_path))
    group = report["models"][f"fake 1 ({'ab' * 6})"]
    assert group["n"] == 1 and group["doors"] == ["slicer-export"]
    assert group["figures"]["added_cc"]["median"] == pytest.approx(figures["added_cc"], abs=1e-4)


def test_an_unedited_prediction_exports_automatic_and_records_no_change(predicted, tmp_path):
    logic, volume, node, segment_id, ai = predicted
    written = logic.export_rtstruct(node, volume, tmp_path / "auto.dcm")
    record = read_edit_record(tmp_path / "auto.ai-edits.json")
    assert record["figures"]["unchanged"] is True and record["figures"]["dice"] == 1.0
    assert record["figures"]["slices_touched"] == 0 and record["figures"]["added_cc"] == 0.0
    roi = pydicom.dcmread(written.path).StructureSetROISequence[0]
    assert (roi.ROIGenerationAlgorithm, roi.ROIGenerationDescription) == ("AUTOMATIC", "fake 1")


def test_the_ai_mask_survives_saving_and_loading_the_segmentation(slicer_lib, predicted, pelvis_phantom, tmp_path):
    slicer = require_slicer()
    logic, volume, node, segment_id, ai = predicted
    edited = ai.copy()
    edited[np.flatnonzero(ai.any(axis=(1, 2)))[0]] = False  # the clinician removes the first slice of the CTV
    _set(node, segment_id, volume, edited)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(tmp_path / "ctv.seg.nrrd"))
    assert storage.WriteData(node)
    scene = node.GetScene()
    loaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(str(tmp_path / "ctv.seg.nrrd"))
    assert reader.ReadData(loaded)
    written = logic.export_rtstruct(loaded, volume, tmp_path / "again.dcm")
    figures = read_edit_record(written.editRecords[0])["figures"]
    assert figures["slices_touched"] == 1 and figures["added_cc"] == 0.0
    voxel_cc = load_ct_series(pelvis_phantom.ct_dir).grid.voxel_cc
    assert figures["removed_cc"] == pytest.approx(np.count_nonzero(ai & ~edited) * voxel_cc, abs=1e-4)
    assert figures["removed_cc"] > 0


def test_a_prediction_exported_on_another_ct_is_refused_and_nothing_is_written(slicer_lib, predicted,
                                                                               pelvis_phantom, tmp_path):
    logic, volume, node, segment_id, ai = predicted
    twin = tmp_path / "twin"  # the same voxels as another series (another CT with the same geometry)
    series, frame = generate_uid(), generate_uid()
    for path in sorted(pelvis_phantom.ct_dir.iterdir()):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.FrameOfReferenceUID = series, frame
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        twin.mkdir(exist_ok=True)
        ds.save_as(twin / path.name)
    other = load_dicom_volume(node.GetScene(), twin, name="twin")
    logic.dicomFiles = FolderDicomDatabase(pelvis_phantom.ct_dir, twin)
    with pytest.raises(EditRecordError, match=f"another CT.*series {series}"):
        logic.export_rtstruct(node, other, tmp_path / "wrong.dcm")
    assert not (tmp_path / "wrong.dcm").exists() and not list(tmp_path.glob("*.ai-edits.json"))
