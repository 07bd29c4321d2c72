"""Appearance shifts of the phantom (ctv_core.phantom.appearance) and the shift benchmark at small size."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ctv_command
from scipy import ndimage

from ctv_core.geometry import Grid
from ctv_core.phantom.anatomy import pelvis_extent_mm, sample_anatomy
from ctv_core.phantom.appearance import APPEARANCES, THICK_SUBSLICES, fine_grid, render_appearance
from ctv_core.phantom.tissues import Tissue

REPO = Path(__file__).resolve().parents[1]
OFFSET = (0.0, 0.0, 0.0)


def _grid(dz: float = 10.0, n: int = 72, px: float = 6.0) -> Grid:
    z0, z1 = pelvis_extent_mm()
    nz = int(round((z1 - z0) / dz)) + 1
    half = np.array([(n - 1) * px / 2, (n - 1) * px / 2, (nz - 1) * dz / 2])
    return Grid(size=(n, n, nz), spacing=(px, px, dz), origin=tuple(np.array([0.0, 20.0, (z0 + z1) / 2]) - half))


@pytest.fixture(scope="module")
def params():
    return dataclasses.replace(sample_anatomy(np.random.default_rng(9), metal=False, contrast=False), noise_sd_hu=12.0)


def _render(params, name, grid=None):
    return render_appearance(grid or _grid(), params, name, position="HFS", anatomy_offset_mm=OFFSET,
                             rng=np.random.default_rng(1))


@pytest.fixture(scope="module")
def realistic(params):
    return _render(params, "realistic")


@pytest.mark.parametrize("name", [a for a in APPEARANCES if a not in ("realistic", "thick_5mm")])
def test_each_shift_changes_the_image_as_named_and_keeps_the_anatomy(params, realistic, name):
    shifted = _render(params, name)
    for structure, mask in realistic.structures.items():
        assert np.array_equal(mask, shifted.structures[structure]), structure
    body = realistic.structures["Body"]
    inside = body & (realistic.hu > -980) & (realistic.hu < 3000)  # away from the clipping limits
    difference = shifted.hu - realistic.hu
    if name.startswith("hu_offset_"):
        assert np.allclose(difference[inside], float(name.rsplit("_", 1)[1]))
    elif name in ("sharp_kernel", "smooth_kernel"):
        fine = _grid(dz=30.0, n=160, px=2.5)  # kernels act over a millimetre or two: pixels finer than that
        before, after = _render(params, "realistic", fine), _render(params, name, fine)
        body = before.structures["Body"]

        def edges(hu):
            return float(np.mean(np.abs(np.diff(hu, axis=2))[body[:, :, 1:]]))
        assert (edges(after.hu) > 1.15 * edges(before.hu)) == (name == "sharp_kernel")
        assert (edges(after.hu) < 0.8 * edges(before.hu)) == (name == "smooth_kernel")
        assert abs(np.median((after.hu - before.hu)[body & (before.hu > -900)])) < 5.0
    elif name == "noise_x3":
        quiet = render_appearance(_grid(), dataclasses.replace(params, noise_sd_hu=0.0), "realistic", position="HFS",
                                  anatomy_offset_mm=OFFSET, rng=np.random.default_rng(1))
        urine = ndimage.binary_erosion(realistic.structures["Bladder"])
        ratio = np.std((shifted.hu - quiet.hu)[urine]) / np.std((realistic.hu - quiet.hu)[urine])
        assert 2.9 < ratio < 3.1
    elif name == "excretory":
        urine = realistic.labels == Tissue.URINE
        assert np.median(shifted.hu[urine]) > 500 > 50 > np.median(realistic.hu[urine])
        assert np.median(shifted.hu[realistic.structures["Vessels_Iliac"]]) > 150
    elif name == "fov_cut":
        cut = (shifted.hu == -1024) & body
        assert cut.sum() > 0.03 * body.sum()  # the sides of the body are outside the reconstruction circle
        assert not np.any(cut & realistic.structures["CTV"])
        np.testing.assert_array_equal(shifted.hu[body & ~cut], realistic.hu[body & ~cut])


def test_thick_slices_average_four_thin_ones(params):
    thick_grid = _grid(dz=5.0)
    thick = _render(params, "thick_5mm", thick_grid)
    fine = fine_grid(thick_grid)
    assert fine.size[2] == THICK_SUBSLICES * thick_grid.size[2] and fine.spacing[2] == pytest.approx(1.25)
    # slab centres: the mean z of each group of four fine slices is the thick slice's z
    z_fine = fine.origin[2] + np.arange(fine.size[2]) * fine.spacing[2]
    z_thick = thick_grid.origin[2] + np.arange(thick_grid.size[2]) * 5.0
    np.testing.assert_allclose(z_fine.reshape(-1, 4).mean(axis=1), z_thick)
    assert thick.hu.shape == thick_grid.shape
    point = _render(params, "realistic", thick_grid)  # the same anatomy sampled at slab centres
    for name in ("CTV", "Bladder", "Bones"):
        a, b = thick.structures[name].sum(), point.structures[name].sum()
        assert abs(a - b) < 0.1 * b, name
    assert np.abs(np.diff(thick.hu, axis=0)).mean() < np.abs(np.diff(point.hu, axis=0)).mean()  # smoother along z


def test_ctv_phantom_writes_a_shifted_phantom_and_refuses_unknown_ones(tmp_path):
    done = subprocess.run([ctv_command(), "phantom", str(tmp_path / "bad"), "--appearance", "purple"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "unknown appearance 'purple'" in done.stderr and "fov_cut" in done.stderr
    assert "Traceback" not in done.stderr


def _benchmark():
    spec = importlib.util.spec_from_file_location("appearance_shift", REPO / "benchmarks" / "appearance_shift.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shift_benchmark_at_small_size():
    """One unseen phantom, realistic and one shift, the bundled model: rows, a summary and the table."""
    bench = _benchmark()
    rows = bench.run_benchmark({"bundled": None}, [9001], ["realistic", "hu_offset_-40"], 256, progress=lambda _: None)
    assert [(r["shift"], r["model"]) for r in rows] == [("realistic", "bundled"), ("hu_offset_-40", "bundled")]
    assert rows[0]["dice"] > 0.75 and np.isfinite(rows[0]["hd95_mm"]) and rows[0]["volume_cc"] > 300
    summary = bench.summarise(rows)
    assert summary["hu_offset_-40", "bundled"]["dice_change"] == pytest.approx(rows[1]["dice"] - rows[0]["dice"])
    table = bench.format_table(summary).splitlines()
    assert table[0].startswith("| shift | bundled: Dice (lowest)") and len(table) == 4
    assert table[3].startswith(f"| hu_offset_-40 | {rows[1]['dice']:.3f}")
