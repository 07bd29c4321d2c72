"""load_ct_series on real scanner DICOM from ../shared/data/dicom (see its README)."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ctv_core import load_ct_series
from ctv_core.errors import DuplicateSliceError
from ctv_core.geometry import Grid


def _lps_of_pixel(ds: pydicom.Dataset, row: int, col: int) -> np.ndarray:
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    return np.asarray([float(v) for v in ds.ImagePositionPatient]) + col * col_spacing * iop[:3] + row * row_spacing * iop[3:]


def _sample_linear(image: sitk.Image, points: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``image`` at LPS points (mm); NaN outside the volume."""
    float_image = sitk.Cast(image, sitk.sitkFloat32)
    upper = np.asarray(image.GetSize()) - 1
    interp = []
    for p in points:
        index = float_image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in p))
        inside = np.all(np.asarray(index) >= 0) and np.all(np.asarray(index) <= upper)
        interp.append(float_image.EvaluateAtContinuousIndex(index, sitk.sitkLinear) if inside else np.nan)
    return np.asarray(interp)


def test_ge_gantry_tilt_with_uneven_spacing(shared_data):
    folder = shared_data / "dicom" / "ge_head_ct_gantry_tilt"
    ct = load_ct_series(folder)
    assert "gantry tilt of 18.5 deg (GantryDetectorTilt +18.5) removed" in ct.regularization
    assert "uneven slice spacing" in ct.regularization
    assert ct.image.GetSpacing()[2] == pytest.approx(4.0, abs=0.01)  # the finer of the two stacks
    direction = np.asarray(ct.image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-6)
    # The acquired pixels are where the DICOM says they are: sample the rectilinear volume at the
    # LPS centre of acquired pixels (skull and brain, a 20 x 20 mm patch per slice) and compare.
    errors, shifted_errors = [], []
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        rows, cols = np.mgrid[200:320:6, 200:320:6]
        pts = np.stack([_lps_of_pixel(ds, r, c) for r, c in zip(rows.ravel(), cols.ravel())])
        got = _sample_linear(ct.image, pts)
        if np.isnan(got).any():
            continue  # the last acquired plane lies 0.09 mm beyond the last regular slice
        errors.append(np.abs(got - hu[rows, cols].ravel()).mean())
        # the same patch read from a volume that ignored the tilt would be 10+ mm off
        shifted = pts + np.array([0.0, 10.0, 0.0])
        shifted_errors.append(np.nanmean(np.abs(_sample_linear(ct.image, shifted) - hu[rows, cols].ravel())))
    errors, shifted_errors = np.asarray(errors), np.asarray(shifted_errors)
    assert len(errors) >= 26
    on_plane = np.median(errors)
    assert on_plane < 15.0, errors
    assert np.median(shifted_errors) > 3 * on_plane


def test_philips_study_picks_the_axial_series(shared_data):
    folder = shared_data / "dicom" / "philips_head_multiseries"
    ct = load_ct_series(folder)
    s2010 = sorted((folder / "S2010").glob("I*"))
    first = pydicom.dcmread(s2010[0], stop_before_pixels=True)
    assert ct.reference.series_instance_uid == first.SeriesInstanceUID
    assert ct.reference.series_description == "STD BRAIN 5MM"
    assert ct.image.GetSize() == (512, 512, 28)
    assert ct.image.GetSpacing() == pytest.approx((0.451171875, 0.451171875, 5.0))
    assert ct.regularization is None
    # slice order by position (files I10, I100, I110 ... sort differently by name)
    zs = [s.position[2] for s in ct.reference.slices]
    assert zs == sorted(zs) and zs[0] == pytest.approx(696.21)
    # HU: soft tissue of the head phantom, air outside, RescaleIntercept -1024 applied
    array = sitk.GetArrayFromImage(ct.image)
    assert array.min() >= -1024 and np.median(array[14, :30, :30]) < -900


def test_philips_series_matches_simpleitk_reader(shared_data):
    folder = shared_data / "dicom" / "philips_head_multiseries" / "S2010"
    ct = load_ct_series(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    assert Grid.of_image(ct.image).matches(Grid.of_image(ref), tolerance_mm=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct.image), sitk.GetArrayFromImage(ref))


def test_siemens_jpeg2000_with_empty_uids_loads_but_cannot_be_referenced(shared_data):
    folder = shared_data / "dicom" / "siemens_abdomen_j2k_missing_uids"
    ct = load_ct_series(folder)
    assert ct.image.GetSize() == (512, 512, 20)
    assert ct.image.GetSpacing() == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert ct.image.GetOrigin() == pytest.approx((-249.51171875, -437.51171875, -804.5))
    assert ct.reference.series_instance_uid == ""
    assert "the CT's SeriesInstanceUID is empty" in ct.reference.problems_for_referencing()
    assert any("SeriesInstanceUID is empty" in w and "Re-export" in w for w in ct.warnings)
    assert any("taken as CT Image Storage" in w for w in ct.warnings)
    # the J2K pixels decode to the HU SimpleITK (GDCM's own JPEG 2000 decoder) gives
    for k, s in enumerate(ct.reference.slices[::7]):
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(s.path)))[0]
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ct.image)[k * 7], ref)


WG04 = ["CT1_J2KR", "CT1_JLSL", "CT1_RLE", "CT1_JLSN", "CT1_J2KI"]  # twins of the lossless CT1_JPLL


def _jpegls_near(path) -> int:
    """The NEAR parameter of a JPEG-LS codestream (byte after the component specs of SOS)."""
    ds = pydicom.dcmread(path)
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    sos = frame.index(b"\xff\xda")
    components = frame[sos + 4]
    return frame[sos + 5 + 2 * components]


@pytest.mark.parametrize("name", WG04)
def test_wg04_transfer_syntaxes_decode_to_the_lossless_hu(shared_data, tmp_path, name):
    folder = shared_data / "dicom" / "wg04_ct_compressed"

    def load_single(file_name):
        one = tmp_path / file_name
        one.mkdir()
        shutil.copy(folder / file_name, one / file_name)
        return sitk.GetArrayFromImage(load_ct_series(one).image)[0].astype(np.int32)

    lossless = load_single("CT1_JPLL")
    got = load_single(name)
    gdcm = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / name)))[0].astype(np.int32)
    diff = np.abs(got - lossless)
    if name == "CT1_JLSN":  # near-lossless JPEG-LS: every value within NEAR of the original
        near = _jpegls_near(folder / name)
        assert 0 < near <= 10 and diff.max() <= near
        np.testing.assert_array_equal(got, gdcm)
    elif name == "CT1_J2KI":  # irreversible JPEG 2000 at 69:1: the codec's own error, as GDCM decodes it
        assert np.abs(got - gdcm).max() <= 1
        codec_error = np.abs(gdcm - lossless)
        assert np.abs(diff.mean() - codec_error.mean()) < 0.5 and 0 < diff.mean() < 40
    else:
        assert diff.max() == 0


def test_wg04_ct2_rle_matches_gdcm(shared_data, tmp_path):
    one = tmp_path / "ct2"
    one.mkdir()
    shutil.copy(shared_data / "dicom" / "wg04_ct_compressed" / "CT2_RLE", one / "CT2_RLE")
    ours = sitk.GetArrayFromImage(load_ct_series(one).image)[0]
    gdcm = sitk.GetArrayFromImage(sitk.ReadImage(str(one / "CT2_RLE")))[0]
    np.testing.assert_array_equal(ours, gdcm)


def test_wg04_five_encodings_of_one_slice_are_refused_together(shared_data):
    folder = shared_data / "dicom" / "wg04_ct_compressed"
    uid = pydicom.dcmread(folder / "CT1_JPLL", stop_before_pixels=True).SeriesInstanceUID
    with pytest.raises(DuplicateSliceError, match="lie at the same position") as err:
        load_ct_series(folder, series_uid=uid)
    assert "CT1_J2KI" in str(err.value) and "export the one you want on its own" in str(err.value)
