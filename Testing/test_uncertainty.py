"""The uncertainty of a prediction: the margin map on the CT grid, slice scores in mm, the ``ctv predict`` outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import axial_grid
from test_prediction import qa_package

from ctv_core.errors import OutputFolderError
from ctv_core.geometry import Grid
from ctv_core.inference import predict_job
from ctv_core.inference.predict_job import run_predict_job
from ctv_core.inference.predictor import CTVPredictor
from ctv_core.inference.uncertainty import least_certain_slices, margin, outline_length_mm, slice_scores, uncertainty_percent


def test_margin_is_zero_where_certain_and_one_at_one_half():
    p = np.array([0.0, 1.0, 0.5, 0.25, 0.75, 0.9], dtype=np.float32)
    np.testing.assert_allclose(margin(p), [0.0, 0.0, 1.0, 0.5, 0.5, 0.2], atol=1e-6)
    assert margin(p).dtype == np.float32


@pytest.mark.parametrize("position, oblique", [("FFS", 0.0), ("HFP", 0.0), ("HFS", 14.0)])
def test_map_voxel_is_the_ct_voxel_in_any_orientation(position, oblique):
    """A probability rising linearly along the patient's left-right axis on an LPS-aligned model grid: at each CT voxel
    the map must be the margin of that field at the voxel's own LPS position (a mirrored or shifted map would not)."""
    ct_grid = axial_grid(position, size=(60, 50, 20), spacing=(1.7, 1.3, 3.0), oblique_deg=oblique)
    low, high = ct_grid.lps_bounds()
    model = Grid(size=tuple(int(v) for v in np.ceil((high - low) / 2.0) + 3), spacing=(2.0, 2.0, 2.0),
                 origin=tuple(float(v) for v in low - 2.0))
    centre_x, ramp_mm = float((low[0] + high[0]) / 2), float(high[0] - low[0])

    def field(x):
        return np.clip(0.5 + (x - centre_x) / ramp_mm, 0.0, 1.0)

    mx, _, _ = model.axis_coordinates()
    percent = uncertainty_percent(field(mx).astype(np.float32), model, ct_grid)
    x, _, _ = ct_grid.axis_coordinates()
    expected = np.rint(100 * (1 - np.abs(2 * field(x) - 1)))
    assert percent.dtype == np.uint8 and percent.shape == ct_grid.shape
    assert np.abs(percent.astype(int) - expected).max() <= 1
    assert percent.max() >= 95 and percent.min() <= 1  # the ramp spans the CT: undecided in the middle, certain at the sides


def _disc_with_band(spacing: float, radius_mm: float = 40.0, band_mm: float = 3.0):
    """One slice of a disc (the CTV) and a band of 100 % uncertainty ``band_mm`` wide centred on its edge."""
    n = int(np.ceil(120 / spacing))
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * spacing
    r = np.hypot(xx, yy)
    mask = (r <= radius_mm)[None].astype(np.uint8)
    percent = np.where(np.abs(r - radius_mm) <= band_mm / 2, 100, 0)[None].astype(np.uint8)
    return percent, mask


def test_slice_score_is_the_band_width_in_mm_whatever_the_pixel_spacing():
    fine = slice_scores(*_disc_with_band(0.6), (0.6, 0.6))[0]
    coarse = slice_scores(*_disc_with_band(1.5), (1.5, 1.5))[0]
    assert fine == pytest.approx(3.0, rel=0.1) and coarse == pytest.approx(3.0, rel=0.15)
    assert fine == pytest.approx(coarse, rel=0.15)
    percent, mask = _disc_with_band(1.0)
    anisotropic = slice_scores(percent, mask, (0.8, 1.2))[0]  # the same pixels read as 0.8 x 1.2 mm: an ellipse
    assert anisotropic == pytest.approx(3.0, rel=0.15)


def test_slices_without_ctv_or_band_score_zero_and_the_least_certain_come_first():
    percent, mask = _disc_with_band(1.0)
    wide, _ = _disc_with_band(1.0, band_mm=6.0)
    percent3 = np.concatenate([percent, np.zeros_like(percent), wide, percent])
    mask3 = np.concatenate([mask, mask, mask, np.zeros_like(mask)])
    scores = slice_scores(percent3, mask3, (1.0, 1.0))
    assert scores[1] == 0 and scores[3] == 0 and scores[2] > 1.8 * scores[0] > 0
    assert least_certain_slices(scores) == [2, 0]
    assert least_certain_slices(np.array([0.5, 2.0, 1.0, 3.0]), count=2) == [3, 1]


@pytest.fixture(scope="module")
def predicted(pelvis_phantom, tmp_path_factory):
    """``ctv predict`` of the shared pelvis phantom with the bone-window QA model at 4 mm (the mask's boundaries are
    interpolated between model voxels: an uncertain band)."""
    root = tmp_path_factory.mktemp("uncertainty")
    package = qa_package(root / "qa", (4.0, 4.0, 4.0))
    result = run_predict_job(pelvis_phantom.ct_dir, root / "out", model=package.path, device="cpu",
                             formats=["rtstruct", "nifti"])
    return result, package


def test_ctv_predict_writes_the_map_on_the_ct_and_the_report_figures(predicted, pelvis_phantom):
    result, _ = predicted
    out = result.out_dir
    assert sorted(p.name for p in out.iterdir()) == ["ctv.nii.gz", "qa.png", "report.json", "rtstruct.dcm",
                                                     "uncertainty.nii.gz"]
    assert result.files["uncertainty"] == out / "uncertainty.nii.gz"
    uncertainty = sitk.ReadImage(str(out / "uncertainty.nii.gz"))
    ctv = sitk.ReadImage(str(out / "ctv.nii.gz"))
    assert uncertainty.GetPixelID() == sitk.sitkUInt8
    assert Grid.of_image(uncertainty).matches(pelvis_phantom.grid) and Grid.of_image(ctv).matches(pelvis_phantom.grid)
    percent = sitk.GetArrayFromImage(uncertainty)
    mask = sitk.GetArrayFromImage(ctv)
    assert percent.max() <= 100 and (percent > 50).sum() > 100
    # the band lies along the CTV's edge: nearly every strongly uncertain voxel within a model voxel (4 mm) of it (the
    # rest: thin bone whose interpolated probability stays under the threshold)
    from scipy import ndimage

    edge = mask.astype(bool) ^ ndimage.binary_erosion(mask.astype(bool))
    distance = ndimage.distance_transform_edt(~edge, sampling=pelvis_phantom.grid.spacing[::-1])
    assert np.mean(distance[percent > 50] < 4.0 * np.sqrt(3)) > 0.95

    report = json.loads((out / "report.json").read_text())
    assert "uncertainty.nii.gz" in report["outputs"] and report == result.report
    u = report["uncertainty"]
    assert set(u) == {"signal", "slice_scores", "slice_score_unit", "least_certain_slices", "seconds"}
    assert u["signal"] == "margin" and u["slice_score_unit"] == "mm" and u["seconds"] >= 0
    scores = np.asarray(u["slice_scores"])
    assert len(scores) == pelvis_phantom.grid.size[2] and (scores >= 0).all()
    assert (scores[~mask.any(axis=(1, 2))] == 0).all()
    ranked = u["least_certain_slices"]
    assert 0 < len(ranked) <= 10 and list(scores[ranked]) == sorted(scores[ranked], reverse=True)
    assert scores[ranked[-1]] >= np.sort(scores)[-len(ranked)]
    assert report["seconds"]["uncertainty"] == u["seconds"]


def test_predictor_gives_the_map_on_the_ct_grid_or_none_when_not_asked(predicted):
    _, package = predicted
    grid = axial_grid("FFS", size=(64, 48, 40), spacing=(2.1, 1.7, 3.0), oblique_deg=9.0)
    x, y, z = grid.axis_coordinates()
    hu = np.where((x - x.mean()) ** 2 + (y - y.mean()) ** 2 < 400, 1200.0, 40.0).astype(np.float32)
    image = grid.image(hu)
    predictor = CTVPredictor(package, device="cpu")
    with_map = predictor.run(image)
    assert Grid.of_image(with_map.uncertainty.map).matches(grid) and with_map.uncertainty.map.GetPixelID() == \
        sitk.sitkUInt8
    assert len(with_map.uncertainty.slice_scores) == grid.size[2]
    assert predictor.run(image, uncertainty=False).uncertainty is None


def _coloured_pixels(path, rows: slice) -> int:
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)[rows]
    return int(np.sum(rgb.max(axis=-1) - rgb.min(axis=-1) > 60))


def test_qa_png_shows_the_least_certain_slices_in_colour(predicted, pelvis_phantom, tmp_path):
    from PIL import Image

    from ctv_core.inference.qa_image import write_qa_image

    result, _ = predicted
    qa = result.out_dir / "qa.png"
    width, height = Image.open(qa).size
    assert height == pytest.approx(width * 4 / 3, rel=0.05)  # four rows of three
    bottom = slice(int(height * 0.76), int(height * 0.97))
    assert _coloured_pixels(qa, bottom) > 300  # the map over the CT (and the outline)
    ct = sitk.ReadImage(str(result.out_dir / "ctv.nii.gz"))
    plain = write_qa_image(ct * 0, ct, tmp_path / "plain.png", "title", [])
    assert Image.open(plain).size[1] == pytest.approx(width, rel=0.05)  # without uncertainty: three rows


def test_a_failure_writing_the_map_leaves_the_earlier_set_whole(predicted, pelvis_phantom, monkeypatch, tmp_path):
    result, package = predicted
    before = {p.name: p.read_bytes() for p in result.out_dir.iterdir()}

    def broken(image, path, compress=True):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(predict_job, "write_image", broken)
    with pytest.raises(OutputFolderError, match="the disk is full"):
        run_predict_job(pelvis_phantom.ct_dir, result.out_dir, model=package.path, device="cpu",
                        formats=["rtstruct", "nifti"])
    after = {p.name: p.read_bytes() for p in result.out_dir.iterdir()}
    assert after == before


def test_outline_and_band_counted_on_the_ctvs_box_equal_the_whole_slice_count():
    """The scores count only inside the CTV's box and slices; the figures are those of the whole CT grid."""
    rng = np.random.default_rng(3)
    mask = np.zeros((6, 40, 50), dtype=np.uint8)
    mask[1:5, 10:30, 5:45] = rng.random((4, 20, 40)) > 0.3
    mask[:, 0, :] = 0
    percent = rng.integers(0, 101, size=mask.shape).astype(np.uint8)
    spacing = (0.8, 1.3)
    inside = np.pad(mask != 0, ((0, 0), (1, 1), (1, 1)))
    edges_i = np.count_nonzero(inside[:, :, 1:] != inside[:, :, :-1], axis=(1, 2))
    edges_j = np.count_nonzero(inside[:, 1:, :] != inside[:, :-1, :], axis=(1, 2))
    length = np.pi / 4 * (edges_i * spacing[1] + edges_j * spacing[0])
    np.testing.assert_allclose(outline_length_mm(mask, spacing), length)
    band = np.count_nonzero(percent > 20, axis=(1, 2)) * spacing[0] * spacing[1]
    expected = np.where(length > 0, band / np.where(length > 0, length, 1), 0.0)
    np.testing.assert_allclose(slice_scores(percent, mask, spacing), expected)
