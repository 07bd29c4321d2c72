"""The phantom as files: a valid CT series that every reader places identically, and its masks."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import ctv_command, require_tool, sitk_series

from ctv_core import load_ct_series
from ctv_core.errors import PhantomError
from ctv_core.geometry import Grid
from ctv_core.phantom import ScanSettings, make_phantom
from ctv_core.structures.label_maps import read_tissue_labels

SMALL = dict(matrix=256, slices=14, slice_thickness_mm=5.0)


def _shuffle_names(folder):
    """Rename every file to a random name without .dcm, so only the headers can order them."""
    for path in list(folder.iterdir()):
        path.rename(folder / uuid.uuid4().hex)


@pytest.mark.parametrize(
    "settings",
    [
        ScanSettings(position="HFS", **SMALL),
        ScanSettings(position="FFS", **SMALL),
        ScanSettings(position="HFP", **SMALL),
        ScanSettings(position="FFP", **SMALL),
        ScanSettings(position="HFS", oblique_deg=15.0, **SMALL),
        ScanSettings(position="FFS", pixel_spacing_mm=(1.6, 2.1), **SMALL),
    ],
    ids=["HFS", "FFS", "HFP", "FFP", "oblique15", "anisotropic"],
)
def test_load_ct_series_matches_simpleitk_on_phantoms(tmp_path, settings):
    phantom = make_phantom(tmp_path / "ph", seed=11, settings=settings)
    _shuffle_names(phantom.ct_dir)
    ct = load_ct_series(phantom.ct_dir)
    ref = sitk_series(phantom.ct_dir)
    np.testing.assert_allclose(ct.image.GetOrigin(), ref.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(ct.image.GetSpacing(), ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(ct.image.GetDirection(), ref.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct.image), sitk.GetArrayFromImage(ref))
    # and both agree with the grid the phantom was rendered on
    assert Grid.of_image(ct.image).matches(phantom.grid, tolerance_mm=1e-3)
    if settings.pixel_spacing_mm:
        assert ct.image.GetSpacing()[:2] == pytest.approx((2.1, 1.6))  # (column, row) = (i, j)
    assert ct.reference.patient_position == settings.position


def test_masks_are_on_the_ct_grid_and_agree_with_the_hu(tmp_path):
    phantom = make_phantom(tmp_path / "ph", seed=4, settings=ScanSettings(position="HFP", **SMALL))
    ct = load_ct_series(phantom.ct_dir)
    hu = sitk.GetArrayFromImage(ct.image)
    expected = {"CTV", "Bladder", "Rectum", "Bowel", "Femur_Head_L", "Femur_Head_R", "Bones", "Body"}
    assert expected <= set(phantom.masks)
    masks = {}
    for name, path in phantom.masks.items():
        image = sitk.ReadImage(str(path))
        assert Grid.of_image(image).matches(ct.grid, tolerance_mm=1e-3), name
        masks[name] = sitk.GetArrayFromImage(image).astype(bool)
    assert np.median(hu[masks["Bladder"]]) == pytest.approx(8, abs=25)
    assert np.median(hu[masks["Bones"]]) > 150
    assert np.median(hu[~masks["Body"]]) < -300  # air and couch
    # the left femoral head is on the patient's left (+x in LPS) whatever the patient position
    x, _, _ = ct.grid.axis_coordinates()
    assert masks["Femur_Head_L"].any() and masks["Femur_Head_R"].any()  # both in the scan: the check below checks
    assert x[masks["Femur_Head_L"]].mean() > x[masks["Femur_Head_R"]].mean() + 50
    # the tissue label map the CT was drawn from: on the CT grid, named by its legend, and the masks follow it
    labels, legend = read_tissue_labels(phantom.tissue_labels, ct.grid)
    names = {t.value: t.name for t in legend.labels}
    of_class = legend.class_table()[labels]
    classes = legend.classes
    bone = np.isin(of_class, [classes.index(c) for c in ("cortical_bone", "trabecular_bone", "marrow", "metal")])
    np.testing.assert_array_equal(bone, masks["Bones"])
    np.testing.assert_array_equal(np.isin(labels, [v for v, n in names.items() if n in ("URINE", "BLADDER_WALL")]),
                                  masks["Bladder"])
    medians = {c: np.median(hu[of_class == classes.index(c)]) for c in ("fat", "muscle", "cortical_bone")}
    assert medians["fat"] < -50 < 20 < medians["muscle"] < 100 < 500 < medians["cortical_bone"]
    assert "phantom 2" in legend.source


def test_phantom_is_deterministic_for_a_seed(tmp_path):
    a = make_phantom(tmp_path / "a", seed=5, settings=ScanSettings(**SMALL))
    b = make_phantom(tmp_path / "b", seed=5, settings=ScanSettings(**SMALL))
    c = make_phantom(tmp_path / "c", seed=6, settings=ScanSettings(**SMALL))
    va, vb, vc = (sitk.GetArrayFromImage(load_ct_series(p.ct_dir).image) for p in (a, b, c))
    np.testing.assert_array_equal(va, vb)
    assert a.grid == b.grid
    assert not np.array_equal(va, vc)
    uid = lambda p: pydicom.dcmread(next(p.ct_dir.iterdir()), stop_before_pixels=True).SeriesInstanceUID  # noqa: E731
    assert uid(a) != uid(b)  # fresh UIDs: two phantoms never collide in a PACS


def test_phantom_refuses_a_non_empty_folder_and_bad_settings(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(PhantomError, match="not empty"):
        make_phantom(tmp_path / "x", seed=1, settings=ScanSettings(**SMALL))
    with pytest.raises(PhantomError, match="patient position"):
        make_phantom(tmp_path / "y", seed=1, settings=ScanSettings(position="LFS", **SMALL))
    assert not (tmp_path / "y").exists()


@pytest.fixture(scope="module")
def oblique_phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("validators") / "ph"
    return make_phantom(out, seed=2, settings=ScanSettings(position="FFS", oblique_deg=10.0, contrast=True,
                                                           **SMALL))


def test_phantom_ct_passes_dciodvfy(oblique_phantom):
    dciodvfy = require_tool("dciodvfy")
    files = sorted(oblique_phantom.ct_dir.iterdir())
    for path in (files[0], files[len(files) // 2], files[-1]):
        result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
        report = result.stdout + result.stderr
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert errors == [], report
        assert "CTImage" in report  # it validated against the CT Image IOD


def test_phantom_ct_opens_in_plastimatch_with_our_geometry(oblique_phantom, tmp_path):
    plastimatch = require_tool("plastimatch")
    out = tmp_path / "ct.mha"
    subprocess.run([plastimatch, "convert", "--input", str(oblique_phantom.ct_dir), "--output-img", str(out)],
                   check=True, capture_output=True)
    theirs = sitk.ReadImage(str(out))
    ct = load_ct_series(oblique_phantom.ct_dir)
    # plastimatch resamples oblique series onto an axial grid; compare HU at shared LPS points
    ours_on_theirs = sitk.Resample(ct.image, theirs, sitk.Transform(), sitk.sitkNearestNeighbor, -2000)
    a, b = sitk.GetArrayFromImage(ours_on_theirs), sitk.GetArrayFromImage(theirs)
    inside = a > -2000
    assert inside.mean() > 0.3
    assert np.median(np.abs(a[inside].astype(float) - b[inside])) <= 1.0


def test_cli_phantom_and_inspect(tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run(
        [ctv_command(), "phantom", str(out), "--seed", "3", "--matrix", "256", "--slices", "8", "--slice-thickness", "5",
         "--position", "HFP", "-q"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "masks" / "CTV.nii.gz").is_file() and len(list((out / "ct").iterdir())) == 8
    result = subprocess.run([ctv_command(), "inspect", str(out / "ct")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert re.search(r"256 x 256 x 8 voxels", result.stdout) and "HFP" in result.stdout
    shutil.rmtree(out / "masks")
