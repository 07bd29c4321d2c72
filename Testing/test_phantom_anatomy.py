"""Tests of the synthetic pelvic CT anatomy renderer (ctv_core.phantom.anatomy)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ctv_core.geometry import Grid, direction_from_iop, PATIENT_POSITION_IOP
from ctv_core.phantom.anatomy import (
    STRUCTURE_NAMES,
    AnatomyParams,
    RenderedPhantom,
    body_half_extent_mm,
    pelvis_extent_mm,
    render_phantom,
    sample_anatomy,
)

OFFSET = (12.0, -30.0, 640.0)  # LPS of the anatomy origin (a couch/table shift)


def _grid(n=128, px=3.5, dz=6.0, position="HFS", direction=None, fov_centre=(0.0, 20.0)):
    """A grid centred on the anatomy origin covering the pelvis, oriented for ``position``."""
    z0, z1 = pelvis_extent_mm()
    nz = int(round((z1 - z0) / dz)) + 1
    d = direction if direction is not None else direction_from_iop(PATIENT_POSITION_IOP[position])
    centre = np.array([OFFSET[0] + fov_centre[0], OFFSET[1] + fov_centre[1], OFFSET[2] + 0.5 * (z0 + z1)])
    half = np.array([(n - 1) * px / 2, (n - 1) * px / 2, (nz - 1) * dz / 2])
    origin = centre - d @ half
    return Grid(size=(n, n, nz), spacing=(px, px, dz), origin=tuple(origin), direction=tuple(d.ravel()))


def _render(seed, grid, position="HFS", noise=True, **kw):
    rng = np.random.default_rng(seed)
    params = sample_anatomy(rng, metal=False, **kw)
    if not noise:
        params = dataclasses.replace(params, noise_sd_hu=0.0)
    return params, render_phantom(grid, params, position=position, anatomy_offset_mm=OFFSET, rng=rng)


@pytest.fixture(scope="module")
def hfs():
    grid = _grid()
    params, ph = _render(3, grid, noise=False, contrast=False)
    return grid, params, ph


def _cc(mask, grid):
    return float(mask.sum()) * float(np.prod(grid.spacing)) / 1000.0


def test_outputs_have_grid_shape_and_types(hfs):
    grid, _, ph = hfs
    assert isinstance(ph, RenderedPhantom)
    assert ph.hu.dtype == np.float32 and ph.hu.shape == grid.shape
    assert set(ph.structures) == set(STRUCTURE_NAMES)
    for name, m in ph.structures.items():
        assert m.dtype == bool and m.shape == grid.shape, name
        assert m.any(), name


def test_params_are_frozen_plain_numbers():
    p = sample_anatomy(np.random.default_rng(1))
    assert isinstance(p, AnatomyParams)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.habitus = 0.5  # type: ignore[misc]
    for f in dataclasses.fields(p):
        v = getattr(p, f.name)
        assert isinstance(v, (int, float, bool, tuple)), f.name
    assert sample_anatomy(np.random.default_rng(1), metal=True).metal
    assert not sample_anatomy(np.random.default_rng(1), metal=False).metal
    assert sample_anatomy(np.random.default_rng(1), contrast=True).vessel_contrast


def test_extents():
    z0, z1 = pelvis_extent_mm()
    assert z0 < -80 and z1 > 180
    for seed in range(5):
        hx, hy = body_half_extent_mm(sample_anatomy(np.random.default_rng(seed)))
        assert 130 < hx < 260 and 90 < hy < 220


@pytest.mark.parametrize("name, lo, hi", [
    ("Bladder", -5, 25), ("Uterus", 35, 75), ("Cervix", 30, 60), ("Rectum", -1000, 60),
    ("Femur_Head_L", 150, 500), ("Vessels_Iliac", 25, 60), ("Lymph_Nodes", 25, 55),
])
def test_organ_hu_before_noise(hfs, name, lo, hi):
    from scipy import ndimage
    _, _, ph = hfs
    organ = ph.structures[name]
    if name == "Bladder":  # an empty bladder (from 25 cc) is mostly its 2-5 mm wall: look at the urine inside
        organ = ndimage.binary_erosion(organ, iterations=1)
        assert organ.any()
    med = float(np.median(ph.hu[organ]))
    assert lo <= med <= hi, (name, med)


def test_tissue_hu_before_noise(hfs):
    _, _, ph = hfs
    body = ph.structures["Body"]
    assert np.all(ph.hu[~body & (ph.hu < -990)] == -1000.0)  # air outside (the couch is not air)
    soft = body & ~ph.structures["Bones"]
    # Subcutaneous fat dominates the body's low values; bone is dense with a cortical shell.
    assert np.percentile(ph.hu[soft], 10) < -70
    bone = ph.hu[ph.structures["Bones"]]
    assert np.median(bone) > 150 and np.percentile(bone, 95) > 600


def test_noise_level():
    grid = _grid(n=96, px=4.5, dz=8.0)
    p, a = _render(5, grid, noise=False)
    rng = np.random.default_rng(99)
    b = render_phantom(grid, p, position="HFS", anatomy_offset_mm=OFFSET, rng=rng)
    p2 = dataclasses.replace(p, noise_sd_hu=20.0)
    c = render_phantom(grid, p2, position="HFS", anatomy_offset_mm=OFFSET, rng=np.random.default_rng(99))
    urine = a.structures["Bladder"]
    assert 10.0 < float(np.std(c.hu[urine] - b.hu[urine])) < 30.0
    assert all(np.array_equal(b.structures[k], c.structures[k]) for k in STRUCTURE_NAMES)


def test_ctv_rules(hfs):
    grid, _, ph = hfs
    s = ph.structures
    ctv = s["CTV"]
    assert np.all(ctv[s["Uterus"]]) and np.all(ctv[s["Cervix"]])
    for name in ("Bones", "Bladder", "Rectum", "Bowel"):
        assert not np.any(ctv & s[name]), name
    assert np.all(s["Body"][ctv])
    assert 450.0 <= _cc(ctv, grid) <= 1400.0
    # Upper vagina only: some vagina inside the CTV, some below it.
    assert np.any(ctv & s["Vagina"]) and np.any(s["Vagina"] & ~ctv)
    # Nodes and most of the iliac vessels are in the CTV.
    assert np.all(ctv[s["Lymph_Nodes"]])
    assert (ctv & s["Vessels_Iliac"]).sum() > 0.7 * s["Vessels_Iliac"].sum()


def test_ctv_is_few_pieces(hfs):
    from scipy import ndimage
    _, _, ph = hfs
    lab, n = ndimage.label(ph.structures["CTV"])
    sizes = np.sort(np.bincount(lab.ravel())[1:])[::-1]
    assert n <= 4 and sizes[0] > 0.8 * sizes.sum()


def test_determinism_and_variation():
    grid = _grid(n=80, px=5.5, dz=10.0)
    _, a = _render(11, grid)
    _, b = _render(11, grid)
    assert np.array_equal(a.hu, b.hu)
    assert all(np.array_equal(a.structures[k], b.structures[k]) for k in STRUCTURE_NAMES)
    vols = [_cc(_render(seed, grid)[1].structures["Bladder"], grid) for seed in (12, 13, 14, 15)]
    assert max(vols) - min(vols) > 40.0


def _centroid_lps(mask, grid):
    ijk = np.argwhere(mask)[:, ::-1].astype(float)
    return grid.index_to_lps(ijk).mean(axis=0)


def _oblique():
    a, b = np.deg2rad(12.0), np.deg2rad(-8.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


@pytest.mark.parametrize("position, direction", [("FFS", None), ("HFP", None), ("HFS", "oblique")])
def test_same_anatomy_in_patient_coordinates(hfs, position, direction):
    grid_a, params, ph_a = hfs
    d = _oblique() if direction == "oblique" else None
    n = 136 if direction else 128  # the oblique grid must still cover the pelvis
    grid_b = _grid(n=n, position=position, direction=d)
    ph_b = render_phantom(grid_b, params, position=position, anatomy_offset_mm=OFFSET,
                          rng=np.random.default_rng(0))
    for name in ("Bladder", "Uterus", "Cervix", "Rectum", "Femur_Head_L", "Femur_Head_R", "CTV", "Bones"):
        va, vb = _cc(ph_a.structures[name], grid_a), _cc(ph_b.structures[name], grid_b)
        assert abs(va - vb) <= 0.06 * va + 1.0, (name, va, vb)
        ca = _centroid_lps(ph_a.structures[name], grid_a)
        cb = _centroid_lps(ph_b.structures[name], grid_b)
        assert np.linalg.norm(ca - cb) < 3.5, (name, ca, cb)
    # Left femoral head is at larger LPS x (patient left) whatever the array orientation.
    cl = _centroid_lps(ph_b.structures["Femur_Head_L"], grid_b)
    cr = _centroid_lps(ph_b.structures["Femur_Head_R"], grid_b)
    assert cl[0] - cr[0] > 120.0


@pytest.mark.parametrize("position", ["HFS", "FFP"])
def test_couch_side(position):
    grid = _grid(n=96, px=5.0, dz=10.0, position=position, fov_centre=(0.0, 0.0))
    _, ph = _render(21, grid, position=position, noise=False)
    body = ph.structures["Body"]
    couch = ~body & (ph.hu > -900)  # mattress, carbon shell and foam core
    assert couch.sum() > 100
    y_couch = _centroid_lps(couch, grid)[1]
    ys = grid.index_to_lps(np.argwhere(body)[:, ::-1].astype(float))[:, 1]
    if position == "HFS":
        assert y_couch > ys.max()
    else:
        assert y_couch < ys.min()
    # The couch spans the whole scan length.
    assert couch.any(axis=(1, 2)).all()


def test_metal_prosthesis_is_bright():
    grid = _grid(n=96, px=4.5, dz=8.0)
    rng = np.random.default_rng(4)
    p = dataclasses.replace(sample_anatomy(rng, metal=True), metal_left=True, metal_right=False)
    ph = render_phantom(grid, p, position="HFS", anatomy_offset_mm=OFFSET, rng=rng)
    assert ph.hu[ph.structures["Femur_Head_L"]].max() >= 2500
    assert np.median(ph.hu[ph.structures["Femur_Head_R"]]) < 1000
    assert not np.any(ph.structures["CTV"] & ph.structures["Bones"])



def _couch_gaps_mm(ph, grid, position):
    """Per slice: smallest distance (mm) along y between the body and the couch below it, by column."""
    body = ph.structures["Body"]
    couch = ~body & (ph.hu > -900)  # mattress, carbon shell and foam core (air is -1000)
    _, y, _ = grid.axis_coordinates()
    u = y if position.endswith("S") else -y  # depth towards the couch
    gaps = []
    for k in range(grid.shape[0]):
        if not body[k].any():
            continue
        u_body = np.where(body[k], u[k], -np.inf).max(axis=0)  # rows run along y on these grids
        u_couch = np.where(couch[k], u[k], np.inf).min(axis=0)
        both = np.isfinite(u_body) & np.isfinite(u_couch)
        gaps.append(float((u_couch[both] - u_body[both]).min()) - grid.spacing[1] if both.any() else np.inf)
    return np.array(gaps)


@pytest.mark.parametrize("position, seed", [("HFS", 21), ("HFP", 22), ("FFS", 2), ("FFP", 5)])
def test_body_rests_on_the_couch(position, seed):
    grid = _grid(n=120, px=3.0, dz=10.0, position=position, fov_centre=(0.0, 0.0))
    _, ph = _render(seed, grid, position=position, noise=False)
    gaps = _couch_gaps_mm(ph, grid, position)
    assert gaps.size > 20
    assert np.all(gaps <= 3.0), gaps.max()
    # The couch has a dense carbon shell and a light core, and no couch voxel is inside the body.
    couch = ~ph.structures["Body"] & (ph.hu > -900)
    assert np.percentile(ph.hu[couch], 98) > 150 and np.percentile(ph.hu[couch], 10) < -550


def test_ctv_volume_is_clinical_over_seeds():
    grid = _grid(n=96, px=4.5, dz=6.0)
    vols = []
    for seed in (0, 1, 2, 3, 4, 5):
        _, ph = _render(seed, grid, noise=False)
        s = ph.structures
        assert not np.any(s["CTV"] & (s["Bones"] | s["Bladder"] | s["Rectum"] | s["Bowel"])), seed
        vols.append(_cc(s["CTV"], grid))
    assert 600.0 <= min(vols) and max(vols) <= 1200.0, vols
    assert max(vols) - min(vols) > 30.0, vols  # anatomy varies the CTV


def test_hip_joint_space_is_soft_tissue(hfs):
    grid, params, ph = hfs
    # Voxels just outside each femoral head (inside the joint space) are soft tissue, not fat or air.
    from ctv_core.phantom.layout import build_layout
    lay = build_layout(params)
    x, y, z = grid.axis_coordinates()
    for side in (1, -1):
        r = np.sqrt((x - OFFSET[0] - side * lay.head_x) ** 2 + (y - OFFSET[1]) ** 2 + (z - OFFSET[2]) ** 2)
        shell = (r > lay.head_r + 0.8) & (r < lay.head_r + 2.7) & ~ph.structures["Bones"]
        assert shell.sum() > 5
        assert np.median(ph.hu[shell]) > 0, side


def test_gas_rises_away_from_the_couch():
    grid_s = _grid(n=96, px=4.0, dz=6.0, position="HFS")
    grid_p = _grid(n=96, px=4.0, dz=6.0, position="HFP")
    _, s = _render(7, grid_s, position="HFS", noise=False)
    _, q = _render(7, grid_p, position="HFP", noise=False)
    ys = []
    for ph, grid in ((s, grid_s), (q, grid_p)):
        gut = ph.structures["Bowel"] | ph.structures["Rectum"]
        gas = gut & (ph.hu < -500)
        assert gas.sum() >= 5
        ys.append(_centroid_lps(gas, grid)[1] - _centroid_lps(gut, grid)[1])
    # Same gut, but its gas lies anterior (-y) when supine and moves posterior (+y) when prone.
    assert ys[1] - ys[0] > 5.0, ys


def test_bowel_loops_are_packed_and_vary_in_calibre():
    from ctv_core.phantom.layout import build_layout
    from ctv_core.phantom.organs import COLLAPSED, bowel_loops
    for seed in (0, 1, 2):
        params = sample_anatomy(np.random.default_rng(seed))
        lay = build_layout(params)
        loops = bowel_loops(lay, params)
        assert len(loops) >= 12, len(loops)
        pts = np.vstack([p for p, _, _ in loops])
        rad = np.concatenate([r for _, r, _ in loops])
        owner = np.concatenate([np.full(len(p), n) for n, (p, _, _) in enumerate(loops)])
        # Loops lie side by side: centres of different loops keep (almost) a wall-to-wall distance.
        d = np.linalg.norm(pts[:, None] - pts[None], axis=2) - rad[:, None] - rad[None]
        other = owner[:, None] != owner[None]
        assert d[other].min() > -1.5
        # Calibre varies (collapsed and distended loops, 2-3 cm typical), and loops stay clear of the bladder.
        assert rad.max() - rad.min() > 4.0 and 6.0 < np.median(rad) < 16.0 and rad.max() > 11.0
        assert any(k == COLLAPSED for _, _, k in loops) or len(loops) < 15
        inside = np.sum(((pts - lay.bladder_centre) / lay.bladder_radii) ** 2, axis=1) < 1.0
        assert not inside.any()


def test_lean_pelvis_is_mostly_muscle(hfs):
    grid, params, ph = hfs
    x, y, z = grid.axis_coordinates()
    za = z - OFFSET[2]
    body = ph.structures["Body"]
    # At the femoral heads, lateral to the bony sidewall and inside the subcutaneous fat, the
    # hip and gluteal muscles dominate (median in the soft-tissue range), with thin fat planes.
    lat = body & (np.abs(za) < 12) & (np.abs(x - OFFSET[0]) > 100) & (np.abs(x - OFFSET[0]) < 125) \
        & ~ph.structures["Bones"]
    assert lat.sum() > 30
    assert np.median(ph.hu[lat]) > 20
    assert 0.01 < np.mean(ph.hu[lat] < -50) < 0.5


def _back_chord_mm(position, seed=3, depth_mm=4.0):
    """Left-right width (mm) of the body within ``depth_mm`` of its most posterior point at L4-L5."""
    grid = _grid(n=110, px=4.0, dz=10.0, position=position, fov_centre=(0.0, 0.0))
    _, ph = _render(seed, grid, position=position, noise=False)
    body = ph.structures["Body"]
    x, y, z = grid.axis_coordinates()
    k = int(np.argmin(np.abs(z[:, 0, 0] - OFFSET[2] - 150.0)))
    yb, xb = y[k][body[k]] - OFFSET[1], x[k][body[k]] - OFFSET[0]
    return float(np.ptp(xb[yb > yb.max() - depth_mm]))


def test_back_is_flat_only_on_the_couch_side():
    # Supine the back is pressed flat on the couch; prone it is free and rounded.
    supine, prone = _back_chord_mm("HFS"), _back_chord_mm("HFP")
    assert supine > 150.0 and supine > prone + 40.0, (supine, prone)


def test_noise_is_stronger_in_the_body_centre_and_band_limited():
    grid = _grid(n=96, px=4.5, dz=8.0)
    rng = np.random.default_rng(6)
    p = dataclasses.replace(sample_anatomy(rng, metal=False), habitus=0.9)
    quiet = render_phantom(grid, dataclasses.replace(p, noise_sd_hu=0.0), position="HFS",
                           anatomy_offset_mm=OFFSET, rng=np.random.default_rng(1))
    noisy = render_phantom(grid, dataclasses.replace(p, noise_sd_hu=15.0), position="HFS",
                           anatomy_offset_mm=OFFSET, rng=np.random.default_rng(1))
    n = noisy.hu - quiet.hu
    x, y, z = grid.axis_coordinates()
    r = np.hypot(x - OFFSET[0], y - OFFSET[1])
    za = z - OFFSET[2]
    body = noisy.structures["Body"] & (za > 80)  # away from the femoral-head streaks
    centre = body & (r < 50)
    edge = body & (r > 140)
    assert np.std(n[centre]) > 1.15 * np.std(n[edge])
    # Neighbouring voxels are not independent (correlated grain) but not blotchy either.
    a, b = n[:, :, :-1][body[:, :, :-1]], n[:, :, 1:][body[:, :, :-1]]
    rho = float(np.corrcoef(a, b)[0, 1])
    assert -0.4 < rho < 0.6, rho
    # The grain is the same along rows and columns (no streaks tied to the array axes).
    c, d = n[:, :-1, :][body[:, :-1, :]], n[:, 1:, :][body[:, :-1, :]]
    assert abs(float(np.corrcoef(c, d)[0, 1]) - rho) < 0.1
