"""load_ct_series on synthetic series with known geometry and HU, and on every failure it guards."""

from __future__ import annotations

import shutil
import uuid

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import axial_grid, linear_hu, write_linear_series
from pydicom.uid import RLELossless, generate_uid

from ctv_core import load_ct_series
from ctv_core.dicom.ct_writer import SeriesIdentity, write_ct_series
from ctv_core.errors import (
    CorruptDicomError,
    DuplicateSliceError,
    InconsistentSeriesError,
    MissingSlicesError,
    MultipleSeriesError,
    NoDicomFoundError,
    NotCTError,
    SeriesNotFoundError,
    UnsupportedDicomError,
)
from ctv_core.geometry import Grid


def _files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _assert_known_hu(image: sitk.Image, tolerance: float = 0.5) -> None:
    """Every voxel holds linear_hu of its own LPS centre: geometry and order are right."""
    x, y, z = Grid.of_image(image).axis_coordinates()
    expected = linear_hu(x, y, z)
    got = sitk.GetArrayFromImage(image).astype(np.float64)
    assert np.abs(got - expected).max() <= tolerance


@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP", "FFP"])
@pytest.mark.parametrize("oblique_deg", [0.0, 17.0])
def test_known_hu_at_known_coordinates(tmp_path, position, oblique_deg):
    grid = axial_grid(position, oblique_deg=oblique_deg, spacing=(0.8, 1.3, 2.5))
    folder = write_linear_series(tmp_path / "ct", grid, position)
    ct = load_ct_series(folder)
    assert Grid.of_image(ct.image).matches(grid, tolerance_mm=1e-4)
    _assert_known_hu(ct.image)
    assert ct.regularization is None
    assert ct.reference.patient_position == position


def test_reference_lists_slices_in_position_order(linear_series):
    folder, grid = linear_series
    ct = load_ct_series(folder)
    by_position = sorted(
        (pydicom.dcmread(p, stop_before_pixels=True) for p in _files(folder)),
        key=lambda ds: float(np.dot([float(v) for v in ds.ImagePositionPatient], grid.direction_matrix[:, 2])),
    )
    assert ct.reference.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in by_position)
    first = by_position[0]
    ref = ct.reference
    assert ref.series_instance_uid == first.SeriesInstanceUID
    assert ref.study_instance_uid == first.StudyInstanceUID
    assert ref.frame_of_reference_uid == first.FrameOfReferenceUID
    assert ref.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert ref.patient_study.patient_name == str(first.PatientName)
    assert ref.patient_study.patient_sex == "F"
    assert ref.manufacturer == "CTVDelineation"
    assert ref.problems_for_referencing() == []
    for k, s in enumerate(ref.slices):
        np.testing.assert_allclose(s.position, grid.index_to_lps(np.array([0, 0, k])), atol=1e-4)


def test_file_names_and_layout_do_not_matter(tmp_path, linear_series):
    folder, grid = linear_series
    messy = tmp_path / "messy"
    rng = np.random.default_rng(3)
    for i, path in enumerate(rng.permutation(_files(folder))):
        target = messy / f"sub{i % 3}" / uuid.uuid4().hex  # no .dcm ending, nested, random order
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    (messy / "README.txt").write_text("not DICOM")
    (messy / "sub0" / "VENDOR.DAT").write_bytes(b"\x00\x01garbage" * 100)
    ct = load_ct_series(messy)
    _assert_known_hu(ct.image)


def test_instance_number_is_not_used_for_order(tmp_path, linear_series):
    folder, _ = linear_series
    for path in _files(folder):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = 1000 - int(ds.InstanceNumber)  # reversed, misleading
        ds.SliceLocation = "0"
        ds.save_as(path)
    _assert_known_hu(load_ct_series(folder).image)


def test_spacing_comes_from_positions_not_slice_thickness(linear_series):
    folder, grid = linear_series
    for path in _files(folder):
        ds = pydicom.dcmread(path)
        ds.SliceThickness = "7.5"
        ds.save_as(path)
    assert load_ct_series(folder).image.GetSpacing()[2] == pytest.approx(grid.spacing[2], abs=1e-6)


def test_hu_is_int16_with_integer_rescale_and_float32_otherwise(linear_series):
    folder, _ = linear_series
    ct = load_ct_series(folder)
    assert ct.image.GetPixelID() == sitk.sitkInt16
    for path in _files(folder):
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array.astype(np.float64)
        hu = stored + float(ds.RescaleIntercept)
        ds.RescaleSlope = "0.5"
        ds.RescaleIntercept = "-512.25"
        ds.PixelData = np.rint((hu + 512.25) / 0.5).astype(np.uint16).tobytes()
        ds.BitsStored, ds.HighBit = 16, 15
        ds.save_as(path)
    ct = load_ct_series(folder)
    assert ct.image.GetPixelID() == sitk.sitkFloat32
    values = sitk.GetArrayFromImage(ct.image)
    assert set(np.unique(np.mod(values, 1.0))) <= {0.25, 0.75}  # fractional HU kept, not truncated
    _assert_known_hu(ct.image, tolerance=0.75)  # 0.5 from the integer field, 0.25 from the 0.5 HU step


def test_compressed_series_decode_to_the_same_hu(tmp_path, linear_series):
    folder, _ = linear_series
    reference = sitk.GetArrayFromImage(load_ct_series(folder).image)
    for syntax in (RLELossless, pydicom.uid.JPEG2000Lossless):
        out = tmp_path / syntax.keyword
        out.mkdir()
        for path in _files(folder):
            ds = pydicom.dcmread(path)
            ds.compress(syntax)
            ds.save_as(out / path.name)
        assert pydicom.dcmread(_files(out)[0]).file_meta.TransferSyntaxUID == syntax
        np.testing.assert_array_equal(sitk.GetArrayFromImage(load_ct_series(out).image), reference)


# --- gantry tilt and uneven spacing -------------------------------------------------------------

def _write_tilted_series(folder, tilt_deg: float, z_positions, rows=40, cols=36, spacing=(1.0, 1.25)):
    """A GE-style tilted stack: image planes tilted about x, slice positions moving along z only.

    Each pixel holds round(linear_hu) of its own LPS centre, so any resampling that puts values
    at the right place gives linear_hu back (linear interpolation is exact on a linear field).
    """
    folder.mkdir(parents=True)
    t = np.radians(tilt_deg)
    row_dir = np.array([1.0, 0.0, 0.0])
    col_dir = np.array([0.0, np.cos(t), -np.sin(t)])
    col_spacing, row_spacing = spacing
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k, z in enumerate(z_positions):
        origin = np.array([-20.0, -25.0, z])
        jj, ii = np.mgrid[0:rows, 0:cols]
        pts = origin + ii[..., None] * col_spacing * row_dir + jj[..., None] * row_spacing * col_dir
        hu = np.rint(linear_hu(pts[..., 0], pts[..., 1], pts[..., 2]))
        grid = Grid(size=(cols, rows, 1), spacing=(col_spacing, row_spacing, 1.0), origin=tuple(origin),
                    direction=tuple(np.column_stack([row_dir, col_dir, np.cross(row_dir, col_dir)]).flatten()))
        sub = folder / f"s{k}"
        write_ct_series(grid.image(hu[None].astype(np.float32)), sub, SeriesIdentity())
        path = next(sub.iterdir())
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.GantryDetectorTilt = f"{tilt_deg:.1f}"
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"IM{k:03d}.dcm")
        shutil.rmtree(sub)
    return folder


def test_gantry_tilt_is_resampled_onto_a_rectilinear_grid(tmp_path):
    folder = _write_tilted_series(tmp_path / "tilt", 20.0, [10.0 + 3.0 * k for k in range(10)])
    ct = load_ct_series(folder)
    assert "gantry tilt of 20.0 deg" in ct.regularization
    direction = np.asarray(ct.image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-9)  # rectilinear, not sheared
    assert ct.image.GetSpacing()[2] == pytest.approx(3.0 * np.cos(np.radians(20.0)), abs=1e-4)
    array = sitk.GetArrayFromImage(ct.image)
    x, y, z = Grid.of_image(ct.image).axis_coordinates()
    inside = array > -1000  # voxels covered by acquired slices (padding is -1024)
    assert inside.mean() > 0.6
    assert np.abs(array[inside] - linear_hu(x, y, z)[inside]).max() < 1.0


def test_uneven_spacing_is_resampled_and_reported(tmp_path):
    z = [0.0, 2.0, 4.0, 6.0, 8.0, 13.0, 18.0, 23.0]  # 2 mm then 5 mm, as in variable protocols
    folder = _write_tilted_series(tmp_path / "uneven", 0.0, z)
    ct = load_ct_series(folder)
    assert "uneven slice spacing (2.00 to 5.00 mm) resampled to 2.00 mm" in ct.regularization
    assert ct.image.GetSize()[2] == 12
    _assert_known_hu(ct.image, tolerance=1.0)
    assert any("resampled" in w for w in ct.warnings)


# --- failures -----------------------------------------------------------------------------------

def test_missing_slice_is_refused_with_the_gap_named(linear_series):
    folder, _ = linear_series
    files = _files(folder)
    files[5].unlink()
    with pytest.raises(MissingSlicesError) as err:
        load_ct_series(folder)
    message = str(err.value)
    assert "1 slice(s) between" in message and files[4].name in message and files[6].name in message
    assert "Re-export" in message
    ct = load_ct_series(folder, allow_resampling_gaps=True)  # the documented way past it
    assert ct.image.GetSize()[2] == len(files)
    _assert_known_hu(ct.image, tolerance=1.0)


def test_different_slices_at_one_position_are_refused(linear_series):
    folder, _ = linear_series
    ds = pydicom.dcmread(_files(folder)[3])
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(folder / "extra.dcm")
    with pytest.raises(DuplicateSliceError, match="same position"):
        load_ct_series(folder)


def test_identical_copy_of_a_slice_is_dropped_with_a_warning(linear_series):
    folder, grid = linear_series
    shutil.copy(_files(folder)[3], folder / "copy_of_slice.dcm")
    ct = load_ct_series(folder)
    assert ct.image.GetSize() == grid.size
    assert any("identical copy" in w for w in ct.warnings)


def test_same_uid_with_different_pixels_is_refused(linear_series):
    folder, _ = linear_series
    ds = pydicom.dcmread(_files(folder)[3])
    arr = ds.pixel_array.copy()
    arr[0, 0] += 7
    ds.PixelData = arr.tobytes()
    ds.save_as(folder / "edited.dcm")
    with pytest.raises(DuplicateSliceError, match="same SOPInstanceUID"):
        load_ct_series(folder)


@pytest.mark.parametrize(
    "attribute, value, what, shown",
    [
        ("ImageOrientationPatient", [1, 0, 0, 0, 0.9, -0.43589], "orientation", "1\\0\\0\\0\\0.9\\-0.43589"),
        ("PixelSpacing", ["1.1", "1.5"], "pixel spacing", "1.1\\1.5 mm"),
        ("FrameOfReferenceUID", "1.2.3.4", "frame of reference", "1.2.3.4"),
    ],
)
def test_mixed_geometry_within_a_series_is_refused(linear_series, attribute, value, what, shown):
    folder, _ = linear_series
    path = _files(folder)[2]
    ds = pydicom.dcmread(path)
    setattr(ds, attribute, value)
    ds.save_as(path)
    with pytest.raises(InconsistentSeriesError, match=what) as raised:
        load_ct_series(folder)
    # each variant with its value, the most common first (the message read "11 slice(s) with one value, ...")
    assert f", 1 slice(s) with {shown} (" in str(raised.value) and "11 slice(s) with " in str(raised.value)


def test_mixed_image_size_is_refused(linear_series):
    folder, _ = linear_series
    path = _files(folder)[2]
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.pixel_array[:, :-2].copy().tobytes()
    ds.Columns = ds.Columns - 2
    ds.save_as(path)
    with pytest.raises(InconsistentSeriesError, match="image size"):
        load_ct_series(folder)


def test_truncated_file_inside_the_series_is_refused_naming_it(linear_series):
    folder, _ = linear_series
    path = _files(folder)[4]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1500])
    with pytest.raises(CorruptDicomError) as err:
        load_ct_series(folder)
    assert path.name in str(err.value) and "missing slices" in str(err.value)


def test_truncated_last_file_is_skipped_with_a_warning(linear_series):
    folder, grid = linear_series
    path = _files(folder)[-1]
    path.write_bytes(path.read_bytes()[:-1500])
    ct = load_ct_series(folder)
    assert ct.image.GetSize()[2] == grid.size[2] - 1
    assert any(path.name in w and "cannot be decoded" in w for w in ct.warnings)
    _assert_known_hu(ct.image)


def test_mr_series_is_refused_as_not_ct(linear_series):
    folder, _ = linear_series
    for path in _files(folder):
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.save_as(path)
    with pytest.raises(NotCTError, match=r"no CT image series[\s\S]*\[MR\]"):
        load_ct_series(folder)


def test_empty_or_wrong_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NoDicomFoundError, match="No DICOM files found"):
        load_ct_series(tmp_path)
    with pytest.raises(NoDicomFoundError, match="is not a folder"):
        load_ct_series(tmp_path / "nope")


def test_several_series_are_listed_and_one_can_be_chosen(tmp_path):
    write_linear_series(tmp_path / "a", axial_grid(size=(20, 20, 5)))
    write_linear_series(tmp_path / "b", axial_grid(size=(20, 20, 7)))
    with pytest.raises(MultipleSeriesError) as err:
        load_ct_series(tmp_path)
    uids = {pydicom.dcmread(_files(tmp_path / d)[0]).SeriesInstanceUID: d for d in ("a", "b")}
    for uid in uids:
        assert uid in str(err.value)
    assert "5 file(s)" in str(err.value) and "7 file(s)" in str(err.value)
    chosen = next(u for u, d in uids.items() if d == "b")
    assert load_ct_series(tmp_path, series_uid=chosen).image.GetSize()[2] == 7
    with pytest.raises(SeriesNotFoundError, match="1.2.3.999"):
        load_ct_series(tmp_path, series_uid="1.2.3.999")


def test_dicomdir_is_ignored_and_its_layout_scanned(tmp_path, linear_series):
    from pydicom.fileset import FileSet

    folder, grid = linear_series
    fs = FileSet()
    for path in _files(folder):
        fs.add(pydicom.dcmread(path))
    fs.write(tmp_path / "media")
    assert (tmp_path / "media" / "DICOMDIR").is_file()
    ct = load_ct_series(tmp_path / "media")
    assert Grid.of_image(ct.image).matches(grid, tolerance_mm=1e-4)


def test_enhanced_multiframe_ct_is_refused_clearly(tmp_path, linear_series):
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    folder, _ = linear_series
    frames = [pydicom.dcmread(p) for p in _files(folder)]
    enhanced = LegacyConvertedEnhancedCTImage(frames, series_instance_uid=generate_uid(), series_number=9,
                                              sop_instance_uid=generate_uid(), instance_number=1)
    out = tmp_path / "enhanced"
    out.mkdir()
    enhanced.save_as(out / "enhanced.dcm")
    with pytest.raises(UnsupportedDicomError, match="enhanced multi-frame CT") as err:
        load_ct_series(out)
    assert "single-frame" in str(err.value)


def test_localizer_beside_the_series_is_ignored(linear_series):
    folder, grid = linear_series
    ds = pydicom.dcmread(_files(folder)[0])
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(folder / "scout.dcm")
    assert load_ct_series(folder).image.GetSize() == grid.size
