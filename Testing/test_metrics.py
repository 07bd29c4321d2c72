"""Metrics (``ctv_core.evaluation.metrics``) against hand-computed values, and ``ctv evaluate`` (``ctv_core.evaluation.evaluate``).

Surface points are voxel corners on the boundary, each weighted by its marching-cubes patch
area (see the ``metrics`` docstring). Hand values below follow from that:

* a one-voxel-thick slab shifted by n voxels along an axis of spacing s (no overlap): each
  slab's surface is two corner planes, one at distance (n - 1) s from the other slab's near
  plane and one at n s, with equal area by mirror symmetry. So HD95 = HD = n s, MSD = (n - ½) s,
  and at tolerance τ the surface Dice is the fraction of planes within τ: 1, ½ or 0.
* a box shifted by n voxels along an axis of spacing s: every surface point moves by the shift
  onto the other surface, so every distance is <= n s, and the whole trailing face (about a
  sixth of the area, more than 5 %) is at exactly n s: HD95 = HD = n s. Dice by counting.

Distances come from the library in float32: values are compared within 1e-5 mm, well above
float32 rounding (~1e-6 mm at 10 mm) and far below any voxel size.
"""

from __future__ import annotations

import argparse
import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import axial_grid, write_linear_series
from ctv_core.dicom.series import load_ct_series
from ctv_core.cli.evaluate import add_commands as add_evaluate_command
from ctv_core.errors import CTVError, EvaluationError, ROINotFoundError
from ctv_core.evaluation.evaluate import evaluate_case, evaluate_folder, evaluate_pairs
from ctv_core.evaluation.summary import SUMMARY_COLUMNS, summarise, summarise_folds
from ctv_core.evaluation.metrics import (
    METRIC_KEYS,
    SurfaceDistances,
    compute_metrics,
    hausdorff_distance,
    weighted_percentile,
)
from ctv_core.structures.rtstruct import write_rtstruct

SPACING = (0.8, 1.2, 3.0)  # (i, j, k) mm: every axis different, so an axis mix-up shows
MM = 1e-5  # distance tolerance, see the module docstring


def image(array: np.ndarray, spacing=SPACING, origin=(-10.0, 20.0, -30.0), direction=None) -> sitk.Image:
    img = sitk.GetImageFromArray(array.astype(np.uint8))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def slab_pair(axis: int, n: int, shape=(16, 16, 16)) -> tuple[np.ndarray, np.ndarray]:
    """One-voxel-thick slabs across numpy axis ``axis``, the second shifted by n voxels."""
    a, b = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    index_a = [slice(3, 12)] * 3
    index_b = [slice(3, 12)] * 3
    index_a[axis] = slice(4, 5)
    index_b[axis] = slice(4 + n, 5 + n)
    a[tuple(index_a)] = 1
    b[tuple(index_b)] = 1
    return a, b


def box(shape, lo, hi) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
    return out


# --- hand-computed cases --------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, 2])  # numpy axes k, j, i -> spacing 3.0, 1.2, 0.8 mm
@pytest.mark.parametrize("n", [1, 2, 3])
def test_shifted_slabs_exact_on_anisotropic_grid(axis, n):
    s = SPACING[2 - axis]
    pred, ref = slab_pair(axis, n)
    m = compute_metrics(pred, ref, SPACING, tolerance_mm=s)
    assert m["dice"] == 0.0
    assert m["hd95_mm"] == pytest.approx(n * s, abs=MM)
    assert m["hd_mm"] == pytest.approx(n * s, abs=MM)
    assert m["msd_mm"] == pytest.approx((n - 0.5) * s, abs=MM)
    for key in ("hd95_pred_to_ref_mm", "hd95_ref_to_pred_mm"):
        assert m[key] == pytest.approx(n * s, abs=MM)
    # Tolerance s: planes at (n-1)s and ns -> n=1: both within; n=2: the near one; n=3: none.
    assert m["surface_dice"] == pytest.approx({1: 1.0, 2: 0.5, 3: 0.0}[n], abs=1e-12)
    assert m["volume_pred_cc"] == pytest.approx(81 * np.prod(SPACING) / 1000, rel=1e-12)
    assert m["volume_diff_cc"] == 0.0 and m["volume_diff_percent"] == 0.0


def test_surface_dice_tolerance_between_the_planes():
    pred, ref = slab_pair(0, 1)  # planes at 0 and 3 mm
    assert compute_metrics(pred, ref, SPACING, tolerance_mm=2.0)["surface_dice"] == pytest.approx(0.5, abs=1e-12)
    assert compute_metrics(pred, ref, SPACING, tolerance_mm=0.0)["surface_dice"] == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize(("axis", "n"), [(0, 2), (2, 3), (1, 1)])
def test_shifted_boxes(axis, n):
    shape, lo, hi = (24, 30, 34), [4, 5, 6], [14, 20, 26]  # a 10 x 15 x 20 voxel box
    ref = box(shape, lo, hi)
    lo2, hi2 = list(lo), list(hi)
    lo2[axis] += n
    hi2[axis] += n
    pred = box(shape, lo2, hi2)
    s = SPACING[2 - axis]
    length = hi[axis] - lo[axis]
    m = compute_metrics(pred, ref, SPACING)
    assert m["dice"] == pytest.approx((length - n) / length, abs=1e-12)  # counting: 2|A∩B| / (|A|+|B|)
    assert m["hd95_mm"] == pytest.approx(n * s, abs=MM)
    assert m["hd_mm"] == pytest.approx(n * s, abs=MM)
    assert 0 < m["msd_mm"] < n * s
    assert m["msd_pred_to_ref_mm"] == pytest.approx(m["msd_ref_to_pred_mm"], abs=MM)  # mirror symmetry
    assert m["volume_ref_cc"] == pytest.approx(10 * 15 * 20 * np.prod(SPACING) / 1000, rel=1e-12)


def test_single_voxel():
    ref = box((9, 9, 9), (4, 4, 4), (5, 5, 5))
    same = compute_metrics(ref, ref, SPACING)
    assert same["dice"] == 1.0 and same["hd95_mm"] == 0.0 and same["msd_mm"] == 0.0 and same["surface_dice"] == 1.0
    above = box((9, 9, 9), (5, 4, 4), (6, 5, 5))  # the next voxel along k (3 mm)
    m = compute_metrics(above, ref, SPACING, tolerance_mm=1.0)
    # Corners: 4 shared (distance 0), 4 at 3 mm, all with equal areas.
    assert m["dice"] == 0.0
    assert m["hd95_mm"] == pytest.approx(3.0, abs=MM)
    assert m["msd_mm"] == pytest.approx(1.5, abs=MM)
    assert m["surface_dice"] == pytest.approx(0.5, abs=1e-12)
    assert m["volume_ref_cc"] == pytest.approx(np.prod(SPACING) / 1000, rel=1e-12)


def test_sphere_against_dilated_sphere():
    """Distances between a sphere of radius R and one of R + r are r up to the voxelisation.

    A surface point p has an inside and an outside voxel centre in its 2x2x2 cell, both at
    distance δ = |spacing| / 2 from p, so R - δ < |p| <= R + δ: each voxelised surface lies within δ
    of its sphere, and every surface distance lies within r ± 2δ (here δ = 1.22 mm, r = 4 mm).
    Finer voxels must bring the mean closer to r.
    """
    def spheres(spacing, radius, grow):
        n = [int(2 * (radius + grow + 4) / s) for s in spacing[::-1]]
        k, j, i = np.indices(n)
        r2 = ((i - n[2] / 2) * spacing[0]) ** 2 + ((j - n[1] / 2) * spacing[1]) ** 2 + ((k - n[0] / 2) * spacing[2]) ** 2
        return r2 <= (radius + grow) ** 2, r2 <= radius**2

    spacing, r = (1.0, 1.0, 2.0), 4.0
    delta = 0.5 * float(np.linalg.norm(spacing))
    pred, ref = spheres(spacing, 20.0, r)
    m = compute_metrics(pred, ref, spacing)
    for key in ("hd95_mm", "hd_mm", "msd_mm", "msd_pred_to_ref_mm", "msd_ref_to_pred_mm"):
        assert r - 2 * delta <= m[key] <= r + 2 * delta, (key, m[key])
    assert compute_metrics(pred, ref, spacing, tolerance_mm=r + 2 * delta)["surface_dice"] == 1.0
    assert compute_metrics(pred, ref, spacing, tolerance_mm=r - 2 * delta - 0.01)["surface_dice"] == 0.0
    errors = [abs(compute_metrics(*spheres((s, s, s), 15.0, 3.0), (s, s, s))["msd_mm"] - 3.0) for s in (1.0, 0.5)]
    assert errors[1] < errors[0]


def test_box_touching_the_image_border_has_a_closed_surface():
    shape = (10, 12, 12)
    ref = box(shape, (0, 2, 2), (4, 10, 10))  # touches k = 0
    pred = box(shape, (1, 2, 2), (5, 10, 10))
    m = compute_metrics(pred, ref, SPACING)
    assert m["hd95_mm"] == pytest.approx(3.0, abs=MM)
    full = np.ones((4, 5, 6), np.uint8)
    assert compute_metrics(full, full, SPACING)["hd_mm"] == 0.0


# --- conventions ----------------------------------------------------------------------------

def test_empty_mask_conventions():
    empty = np.zeros((8, 8, 8), np.uint8)
    cube = box((8, 8, 8), (2, 2, 2), (5, 5, 5))
    both = compute_metrics(empty, empty, SPACING)
    assert both["dice"] == 1.0 and both["surface_dice"] == 1.0
    assert both["hd95_mm"] == both["hd_mm"] == both["msd_mm"] == 0.0
    assert both["volume_diff_cc"] == 0.0 and both["volume_diff_percent"] == 0.0
    no_ref = compute_metrics(cube, empty, SPACING)
    no_pred = compute_metrics(empty, cube, SPACING)
    for m in (no_ref, no_pred):
        assert m["dice"] == 0.0 and m["surface_dice"] == 0.0
        for key in ("hd95_mm", "hd_mm", "msd_mm", "hd95_pred_to_ref_mm", "hd95_ref_to_pred_mm"):
            assert m[key] == math.inf
    assert no_ref["volume_diff_percent"] == math.inf
    assert no_pred["volume_diff_percent"] == -100.0


def test_weighted_percentile_is_area_weighted_without_interpolation():
    d = np.array([4.0, 1.0, 3.0, 2.0])
    equal = np.ones(4)
    assert weighted_percentile(d, equal, 50) == 2.0  # 2 of 4 equal areas reach 50 %
    assert weighted_percentile(d, equal, 51) == 3.0
    assert weighted_percentile(d, equal, 100) == 4.0
    heavy_far = np.array([97.0, 1.0, 1.0, 1.0])  # 97 % of the area at 4 mm
    assert weighted_percentile(d, heavy_far, 5) == 4.0
    # HD95 is the max of the two directed percentiles, not a percentile of the pooled distances:
    sd = SurfaceDistances(np.full(19, 1.0), np.ones(19), np.array([10.0]), np.array([1.0]))
    assert hausdorff_distance(sd, 95) == 10.0  # pooled: 19 of 20 points at 1 mm -> would be 1.0


def test_flipped_and_oblique_directions_do_not_change_metrics():
    shape = (12, 20, 22)
    ref = box(shape, (2, 3, 4), (9, 15, 18))
    pred = box(shape, (3, 5, 4), (10, 14, 20))
    base = evaluate_case(image(pred), image(ref))
    flipped = [sitk.Flip(image(x), [True, False, True]) for x in (pred, ref)]
    assert flipped[0].GetDirection() != image(pred).GetDirection()
    a = np.radians(25)
    oblique = (np.cos(a), 0.0, np.sin(a), 0.0, -1.0, 0.0, np.sin(a), 0.0, -np.cos(a))  # rotation with a flip
    turned = [image(x, direction=oblique) for x in (pred, ref)]
    for other in (evaluate_case(*flipped), evaluate_case(*turned)):
        for key in METRIC_KEYS:
            assert other[key] == pytest.approx(base[key], abs=1e-9), key


def test_images_and_arrays_agree():
    ref = box((10, 12, 14), (2, 2, 2), (8, 9, 10))
    pred = box((10, 12, 14), (3, 2, 1), (8, 10, 10))
    assert evaluate_case(image(pred), image(ref)) == compute_metrics(pred, ref, SPACING)


def test_surface_dice_matches_monai_nsd():
    from monai.metrics import compute_surface_dice
    import torch

    shape = (20, 40, 40)
    k, j, i = np.indices(shape)
    ref = ((i - 20) * 0.8) ** 2 + ((j - 18) * 1.2) ** 2 + ((k - 10) * 3.0) ** 2 <= 14.0**2
    pred = ((i - 24) * 0.8) ** 2 / 1.5 + ((j - 17) * 1.2) ** 2 + ((k - 11) * 3.0) ** 2 <= 12.0**2
    ours = compute_metrics(pred, ref, SPACING, tolerance_mm=1.7)["surface_dice"]
    onehot = [torch.from_numpy(np.stack([~x, x])[None].astype(np.float32)) for x in (pred, ref)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI's own deprecated argument, passed internally
        theirs = compute_surface_dice(onehot[0], onehot[1], [1.7], spacing=SPACING[::-1], use_subvoxels=True).item()
    assert 0.2 < ours < 0.95
    assert ours == pytest.approx(theirs, abs=1e-6)


def test_grid_mismatch_is_refused_with_the_difference_named():
    ref = box((6, 7, 8), (1, 1, 1), (4, 5, 6))
    cases = {
        "spacing": image(ref, spacing=(0.8, 1.2, 2.5)),
        "origin": image(ref, origin=(-10.0, 21.0, -30.0)),
        "size": image(np.zeros((7, 7, 8), np.uint8)),
    }
    for what, pred in cases.items():
        with pytest.raises(EvaluationError, match=what) as info:
            evaluate_case(pred, image(ref))
        assert "resample" in str(info.value).lower()
    assert issubclass(EvaluationError, CTVError)
    with pytest.raises(EvaluationError, match="spacing"):
        compute_metrics(ref, ref)
    with pytest.raises(EvaluationError, match="orthonormal"):
        compute_metrics(ref, ref, SPACING, direction=(1, 0.3, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(EvaluationError, match="tolerance"):
        evaluate_case(image(ref), image(ref), tolerance_mm=-1)


# --- summaries -----------------------------------------------------------------------------

def test_summarise_and_folds():
    fold_a = [{"case": "a1", "dice": 0.8, "hd95_mm": 2.0}, {"case": "a2", "dice": 0.6, "hd95_mm": 4.0}]
    fold_b = [{"case": "b1", "dice": 0.9, "hd95_mm": math.inf}]
    rows = summarise_folds({0: fold_a, 1: fold_b}, metrics=("dice", "hd95_mm"))
    by = {(r["fold"], r["metric"]): r for r in rows}
    assert [r["fold"] for r in rows] == [0, 0, 1, 1, "pooled", "pooled", "fold_means", "fold_means"]
    a = by[(0, "dice")]
    assert (a["n"], a["mean"], a["median"], a["min"], a["max"]) == (2, pytest.approx(0.7), pytest.approx(0.7), 0.6, 0.8)
    assert a["sd"] == pytest.approx(math.sqrt(0.02))  # sample sd of 0.8, 0.6
    pooled = by[("pooled", "dice")]
    assert pooled["n"] == 3 and pooled["mean"] == pytest.approx(2.3 / 3) and pooled["median"] == 0.8
    assert by[("fold_means", "dice")]["mean"] == pytest.approx(0.8)  # (0.7 + 0.9) / 2
    inf_row = by[("pooled", "hd95_mm")]
    assert inf_row["n_infinite"] == 1 and inf_row["mean"] == math.inf and math.isnan(inf_row["sd"])
    assert inf_row["median"] == 4.0
    assert math.isnan(summarise(fold_b, ("dice",))[0]["sd"])  # one case: no spread


# --- evaluate_pairs / evaluate_folder / ctv evaluate ----------------------------------------

def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_pairs_writes_csvs_and_plot(tmp_path):
    shape = (10, 16, 16)
    ref = box(shape, (2, 4, 4), (8, 12, 12))
    pairs = [
        ("same", image(ref), image(ref)),
        ("shifted", image(box(shape, (4, 4, 4), (10, 12, 12))), image(ref)),  # 2 slices up: HD95 6 mm
        ("missed", image(np.zeros(shape)), image(ref)),
    ]
    result = evaluate_pairs(iter(pairs), tmp_path / "out")
    per_case = read_csv(tmp_path / "out" / "per_case.csv")
    assert list(per_case[0]) == ["case", *METRIC_KEYS]
    assert [r["case"] for r in per_case] == ["same", "shifted", "missed"]
    assert float(per_case[0]["dice"]) == 1.0 and float(per_case[0]["hd95_mm"]) == 0.0
    assert float(per_case[1]["dice"]) == pytest.approx(4 / 6, abs=1e-12)
    assert float(per_case[1]["hd95_mm"]) == pytest.approx(6.0, abs=MM)
    assert per_case[2]["hd95_mm"] == "inf" and float(per_case[2]["volume_diff_percent"]) == -100.0
    summary = {r["metric"]: r for r in read_csv(tmp_path / "out" / "summary.csv")}
    assert list(next(iter(summary.values()))) == list(SUMMARY_COLUMNS)
    assert float(summary["dice"]["mean"]) == pytest.approx((1 + 4 / 6 + 0) / 3, abs=1e-12)
    assert float(summary["dice"]["median"]) == pytest.approx(4 / 6, abs=1e-12)
    assert summary["hd95_mm"]["n_infinite"] == "1" and summary["hd95_mm"]["max"] == "inf"
    png = (tmp_path / "out" / "metrics.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.png", "per_case.csv", "summary.csv"]
    assert result.files["plot"] == tmp_path / "out" / "metrics.png" and len(result.rows) == 3
    with pytest.raises(EvaluationError, match="twice"):
        evaluate_pairs([pairs[0], pairs[0]], tmp_path / "again")
    with pytest.raises(EvaluationError, match="Case 'bad'.*different grids"):
        evaluate_pairs([("bad", image(ref, spacing=(1, 1, 1)), image(ref))], tmp_path / "bad")
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ctv")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true")
    add_evaluate_command(parser.add_subparsers(dest="command", required=True), common)
    args = parser.parse_args(argv)
    return args.func(args)


def test_ctv_evaluate_on_folders_of_nifti(tmp_path, capsys):
    shape = (10, 16, 16)
    ref = box(shape, (2, 4, 4), (8, 12, 12))
    (tmp_path / "pred" / "case2").mkdir(parents=True)
    (tmp_path / "ref").mkdir()
    sitk.WriteImage(image(ref), str(tmp_path / "ref" / "case1.nii.gz"))
    sitk.WriteImage(image(ref), str(tmp_path / "ref" / "case2.nii.gz"))
    sitk.WriteImage(image(ref), str(tmp_path / "pred" / "case1.nii.gz"))
    sitk.WriteImage(image(box(shape, (3, 4, 4), (9, 12, 12))), str(tmp_path / "pred" / "case2" / "ctv.nii.gz"))
    assert run_cli(["evaluate", "-q", str(tmp_path / "pred"), str(tmp_path / "ref"), str(tmp_path / "out")]) == 0
    rows = read_csv(tmp_path / "out" / "per_case.csv")
    assert [(r["case"], float(r["hd95_mm"])) for r in rows] == [("case1", 0.0), ("case2", pytest.approx(3.0, abs=MM))]
    out = capsys.readouterr().out
    assert "2 case(s) evaluated" in out and "dice                 mean 0.9167 ± 0.118," in out

    # One case has no spread: the line gives the mean alone, never "± nan".
    (tmp_path / "one").mkdir()
    sitk.WriteImage(image(ref), str(tmp_path / "one" / "case1.nii.gz"))
    assert run_cli(["evaluate", "-q", str(tmp_path / "one"), str(tmp_path / "one"), str(tmp_path / "out1")]) == 0
    out = capsys.readouterr().out
    assert "1 case(s) evaluated" in out and "dice                 mean 1, median 1 [1, 1]" in out and "nan" not in out

    sitk.WriteImage(image(ref), str(tmp_path / "ref" / "case3.nii.gz"))
    with pytest.raises(EvaluationError, match="no prediction .* for 'case3'"):
        evaluate_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "out2")
    with pytest.raises(EvaluationError, match="two files .* or two folders"):
        evaluate_folder(tmp_path / "pred" / "case1.nii.gz", tmp_path / "ref", tmp_path / "out2")
    sitk.WriteImage(image(ref, spacing=(1, 1, 1)), str(tmp_path / "ref" / "case3.nii.gz"))
    sitk.WriteImage(image(ref), str(tmp_path / "pred" / "case3.nii.gz"))
    with pytest.raises(EvaluationError, match="case3.*spacing.*resample"):
        evaluate_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "out2")


def test_ctv_evaluate_rtstruct_on_a_ct(tmp_path):
    grid = axial_grid()  # 48 x 40 x 12 voxels, 1.5 x 1.2 x 3 mm
    write_linear_series(tmp_path / "ct", grid)
    ct = load_ct_series(tmp_path / "ct")
    ref = box(grid.shape, (3, 10, 10), (9, 30, 38))
    bladder = box(grid.shape, (3, 2, 2), (6, 6, 6))
    write_rtstruct(ct, {"CTV": grid.image(ref), "Bladder": grid.image(bladder)}, tmp_path / "truth.dcm")
    write_rtstruct(ct, {"CTV_pred": grid.image(np.roll(ref, 2, axis=2))}, tmp_path / "pred.dcm")
    out = tmp_path / "out"
    argv = ["evaluate", str(tmp_path / "pred.dcm"), str(tmp_path / "truth.dcm"), str(out), "--ct", str(tmp_path / "ct")]
    with pytest.raises(EvaluationError, match="2 structures.*--roi"):
        run_cli(argv)
    with pytest.raises(ROINotFoundError):
        run_cli([*argv, "--roi", "Rectum"])
    assert run_cli([*argv, "--roi", "CTV", "--pred-roi", "CTV_pred", "-q"]) == 0
    (row,) = read_csv(out / "per_case.csv")
    assert row["case"] == "truth"
    assert float(row["hd95_mm"]) == pytest.approx(2 * 1.5, abs=MM)  # shifted 2 columns of 1.5 mm
    assert float(row["dice"]) == pytest.approx(26 / 28, abs=1e-12)
    with pytest.raises(EvaluationError, match="--ct"):
        evaluate_folder(tmp_path / "pred.dcm", tmp_path / "truth.dcm", out)


def test_ctv_evaluate_takes_the_files_ctv_predict_and_ctv_phantom_write(tmp_path):
    """Case folders as ``ctv predict --formats rtstruct,nifti`` and ``ctv phantom`` leave them.

    The prediction folder holds rtstruct.dcm and ctv.nii.gz (different masks, so the Dice tells
    which was read), the reference folder truth.dcm and tissue_labels.nii.gz (a label map).
    """
    grid = axial_grid()
    write_linear_series(tmp_path / "cts" / "p1" / "ct", grid)
    ct = load_ct_series(tmp_path / "cts" / "p1" / "ct")
    ref = box(grid.shape, (3, 10, 10), (9, 30, 38))
    shifted = np.roll(ref, 2, axis=2)
    (tmp_path / "pred" / "p1").mkdir(parents=True)
    (tmp_path / "ref" / "p1").mkdir(parents=True)
    write_rtstruct(ct, {"CTV": grid.image(ref)}, tmp_path / "pred" / "p1" / "rtstruct.dcm")
    sitk.WriteImage(grid.image(shifted), str(tmp_path / "pred" / "p1" / "ctv.nii.gz"))
    write_rtstruct(ct, {"CTV": grid.image(ref), "Bladder": grid.image(box(grid.shape, (3, 2, 2), (6, 6, 6)))},
                   tmp_path / "ref" / "p1" / "truth.dcm")
    sitk.WriteImage(grid.image((ref * 3).astype(np.uint8)), str(tmp_path / "ref" / "p1" / "tissue_labels.nii.gz"))
    argv = ["evaluate", "-q", str(tmp_path / "pred"), str(tmp_path / "ref"), str(tmp_path / "out"),
            "--ct", str(tmp_path / "cts"), "--roi", "CTV"]
    assert run_cli(argv) == 0
    assert float(read_csv(tmp_path / "out" / "per_case.csv")[0]["dice"]) == 1.0  # the RTSTRUCT against truth.dcm
    assert run_cli([*argv, "--pred-file", "ctv.nii.gz"]) == 0  # the flag overrides the rule
    assert float(read_csv(tmp_path / "out" / "per_case.csv")[0]["dice"]) == pytest.approx(26 / 28, abs=1e-12)
    # Without a CT the mask image is the prediction; the reference is then an RTSTRUCT, which needs one.
    with pytest.raises(EvaluationError, match="truth.dcm.*--ct"):
        evaluate_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "out2", roi="CTV")
    # Two files ctv does not write: no guess, the flag is named.
    sitk.WriteImage(grid.image(ref), str(tmp_path / "pred" / "p1" / "mine.nii.gz"))
    (tmp_path / "pred" / "p1" / "rtstruct.dcm").unlink()
    (tmp_path / "pred" / "p1" / "ctv.nii.gz").unlink()
    sitk.WriteImage(grid.image(ref), str(tmp_path / "pred" / "p1" / "other.nii.gz"))
    with pytest.raises(EvaluationError, match="mine.nii.gz, other.nii.gz.*--pred-file"):
        run_cli(argv)
