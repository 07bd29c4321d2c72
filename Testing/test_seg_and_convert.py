"""DICOM SEG, NIfTI/NRRD mask files and ``ctv convert`` between formats on a CT."""

from __future__ import annotations

import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import ctv_command, require_tool

from ctv_core import convert_structures, load_ct_series, read_rtstruct, read_seg, write_rtstruct, write_seg
from ctv_core.errors import FrameOfReferenceMismatchError, GridMismatchError, StructureSetError
from ctv_core.structures.mask_files import read_mask, write_mask
from ctv_core.phantom import ScanSettings, make_phantom

SMALL = dict(matrix=256, slices=12, slice_thickness_mm=5.0)
ROIS = ("CTV", "Bladder", "Bones", "Body")


def _array(image):
    return sitk.GetArrayFromImage(image) != 0


@pytest.fixture(scope="module", params=["HFS", "FFP", "oblique"])
def case(request, tmp_path_factory):
    settings = {
        "HFS": ScanSettings(position="HFS", **SMALL),
        "FFP": ScanSettings(position="FFP", pixel_spacing_mm=(1.6, 2.1), **SMALL),
        "oblique": ScanSettings(position="HFS", oblique_deg=12.0, **SMALL),
    }[request.param]
    phantom = make_phantom(tmp_path_factory.mktemp(f"seg_{request.param}") / "ph", seed=31, settings=settings)
    ct = load_ct_series(phantom.ct_dir)
    masks = {name: sitk.ReadImage(str(phantom.masks[name])) for name in ROIS}
    return phantom, ct, masks


def test_phantom_truth_rtstruct_holds_every_mask_exactly(case):
    phantom, ct, _ = case
    truth = read_rtstruct(phantom.truth_rtstruct, ct, roi=None)
    assert set(truth) == set(phantom.masks)
    for name, path in phantom.masks.items():
        np.testing.assert_array_equal(_array(truth[name]), _array(sitk.ReadImage(str(path))), err_msg=name)
    assert pydicom.dcmread(phantom.truth_rtstruct, stop_before_pixels=True).StructureSetLabel == "TRUTH"


def test_seg_round_trip_is_exact_and_references_the_ct(case, tmp_path):
    _, ct, masks = case
    path = write_seg(ct, masks, tmp_path / "seg.dcm", algorithm="ctv_core test-model")
    back = read_seg(path, ct, roi=None)
    assert list(back) == list(masks)
    for name in masks:
        np.testing.assert_array_equal(_array(back[name]), _array(masks[name]), err_msg=name)
    ds = pydicom.dcmread(path)
    assert ds.StudyInstanceUID == ct.reference.study_instance_uid
    assert ds.FrameOfReferenceUID == ct.reference.frame_of_reference_uid
    referenced = {i.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert referenced == set(ct.reference.sop_instance_uids)
    ctv = next(s for s in ds.SegmentSequence if s.SegmentLabel == "CTV")
    assert ctv.SegmentedPropertyTypeCodeSequence[0].CodeValue == "228792002"
    assert ctv.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "130041"
    assert ctv.SegmentAlgorithmType == "AUTOMATIC"


def test_seg_passes_dciodvfy(case, tmp_path):
    dciodvfy = require_tool("dciodvfy")
    _, ct, masks = case
    path = write_seg(ct, masks, tmp_path / "seg.dcm")
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
    report = result.stdout + result.stderr
    assert "Segmentation" in report
    assert [line for line in report.splitlines() if line.startswith("Error")] == [], report


def test_seg_of_another_scan_is_refused(case, tmp_path):
    _, ct, masks = case
    path = write_seg(ct, {"CTV": masks["CTV"]}, tmp_path / "seg.dcm")
    ds = pydicom.dcmread(path)
    ds.FrameOfReferenceUID = "1.2.3.4"
    ds.save_as(path)
    with pytest.raises(FrameOfReferenceMismatchError, match="another scan"):
        read_seg(path, ct)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_mask_files_round_trip_and_refuse_other_grids(case, tmp_path, suffix):
    _, ct, masks = case
    path = write_mask(masks["Bladder"], tmp_path / f"Bladder{suffix}")
    np.testing.assert_array_equal(_array(read_mask(path, ct.grid)), _array(masks["Bladder"]))
    shifted = sitk.Image(masks["Bladder"])
    shifted.SetOrigin(np.asarray(shifted.GetOrigin()) + 1.0)
    write_mask(shifted, tmp_path / f"shifted{suffix}")
    with pytest.raises(GridMismatchError, match="not on the CT's grid"):
        read_mask(tmp_path / f"shifted{suffix}", ct.grid)


def test_convert_chain_keeps_every_voxel(case, tmp_path):
    phantom, ct, masks = case
    seg = convert_structures(ct.folder, phantom.truth_rtstruct, tmp_path / "truth_seg.dcm", roi=["CTV", "Rectum"],
                             to="seg")
    rs = convert_structures(ct.folder, seg, tmp_path / "again.dcm")
    nii = convert_structures(ct.folder, rs, tmp_path / "ctv.nii.gz", roi="ctv")
    nrrd = convert_structures(ct.folder, nii, tmp_path / "ctv.nrrd", roi="CTV")
    back = read_rtstruct(rs, ct, roi=None)
    assert list(back) == ["CTV", "Rectum"]
    np.testing.assert_array_equal(_array(back["CTV"]), _array(masks["CTV"]))
    np.testing.assert_array_equal(_array(read_mask(nrrd, ct.grid)), _array(masks["CTV"]))
    roi = pydicom.dcmread(rs).StructureSetROISequence[0]
    assert roi.ROIGenerationAlgorithm == ""  # a conversion does not claim an algorithm
    assert pydicom.dcmread(seg).SegmentSequence[0].SegmentAlgorithmType == "MANUAL"


def test_convert_refusals(case, tmp_path):
    phantom, ct, masks = case
    with pytest.raises(StructureSetError, match="holds one structure"):
        convert_structures(ct.folder, phantom.truth_rtstruct, tmp_path / "all.nii.gz")
    with pytest.raises(StructureSetError, match="Cannot tell the output format"):
        convert_structures(ct.folder, phantom.truth_rtstruct, tmp_path / "out.txt")
    with pytest.raises(StructureSetError, match="not an RTSTRUCT or SEG"):
        convert_structures(ct.folder, sorted(ct.folder.iterdir())[0], tmp_path / "x.dcm")
    assert not list(tmp_path.iterdir())


def test_cli_convert_and_its_errors(case, tmp_path):
    phantom, ct, masks = case
    out = tmp_path / "bladder.nrrd"
    result = subprocess.run([ctv_command(), "convert", str(ct.folder), str(phantom.truth_rtstruct), str(out),
                             "--roi", "Bladder"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(_array(read_mask(out, ct.grid)), _array(masks["Bladder"]))
    result = subprocess.run([ctv_command(), "convert", str(ct.folder), str(phantom.truth_rtstruct),
                             str(tmp_path / "x.dcm"), "--roi", "PTV"], capture_output=True, text=True)
    assert result.returncode == 2 and "No ROI matches 'PTV'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.dcm").exists()


def test_writers_agree_on_what_they_refuse(case, tmp_path):
    _, ct, masks = case
    cropped = masks["CTV"][:, :, 1:]
    for writer in (write_rtstruct, write_seg):
        with pytest.raises(GridMismatchError):
            writer(ct, {"CTV": cropped}, tmp_path / "x.dcm")
    assert not list(tmp_path.iterdir())
