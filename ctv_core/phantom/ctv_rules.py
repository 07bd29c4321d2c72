"""The truth CTV of the phantom, built by the consensus rules for definitive cervix radiotherapy.

CTV = uterus + cervix + parametria + upper half of the vagina + pelvic nodal regions (common,
external and internal iliac vessels grown by 7 mm, an obturator strip along the pelvic
sidewall, a presacral strip in front of S1-S2), from the aortic bifurcation down, minus bone,
muscle, bowel, bladder and rectum. Distances are in mm in the anatomy frame, so the rules hold
on oblique, anisotropic grids. Parts of the boundary (the 7 mm margins, the parametrial
limits) are not image edges, as in the clinic.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .layout import Layout
from .organs import node_centres
from .shapes import Canvas, catmull_rom, ellipsoid, tube, tube_bounds
from .tissues import CTV_EXCLUDED, UTERUS, Tissue, lookup

#: Margin (mm) around the iliac vessels for the nodal CTV.
NODAL_MARGIN_MM = 7.0
#: Width (mm) of the obturator strip medial to obturator internus.
OBTURATOR_WIDTH_MM = 17.0
#: Thickness (mm) of the presacral strip anterior to S1-S2.
PRESACRAL_MM = 10.0


def build_ctv(canvas: Canvas, labels: np.ndarray, lay: Layout, params) -> np.ndarray:
    """Boolean CTV ``[k, j, i]`` on the canvas grid, given the final tissue labels."""
    s = lay.s
    region = np.zeros(canvas.shape, dtype=bool)
    z_top = lay.bifurcation_z
    z_ext_low = lay.head_r * 0.9  # external iliac region ends at the top of the femoral heads

    # Nodal: iliac vessels + 7 mm.
    for v in lay.vessels:
        if not v.nodal:
            continue
        lo, hi = tube_bounds(v.pts, v.radii, NODAL_MARGIN_MM + 1.0)
        win = canvas.window(lo, hi)
        if win is None:
            continue
        d = tube(win, v.pts, v.radii, margin=NODAL_MARGIN_MM + 1.0)
        m = (d <= NODAL_MARGIN_MM) & (win.z <= np.float32(z_top))
        if v.nodal == "external":
            m &= win.z >= np.float32(z_ext_low)
        region[win.sl] |= m

    # The fat between each artery and its vein belongs to the nodal region too.
    for a_name, v_name in _PAIRS:
        a = next(v for v in lay.vessels if v.name == a_name)
        b = next(v for v in lay.vessels if v.name == v_name)
        n = 24
        pa, pb = _resample(a.pts, n), _resample(b.pts, n)
        mid = 0.5 * (pa + pb)
        rad = 0.5 * np.linalg.norm(pa - pb, axis=1) + 0.5 * (a.radii.mean() + b.radii.mean()) * 0.5
        lo, hi = tube_bounds(mid, rad, NODAL_MARGIN_MM + 1.0)
        win = canvas.window(lo, hi)
        if win is None:
            continue
        d = tube(win, mid, rad, margin=NODAL_MARGIN_MM + 1.0)
        m = (d <= NODAL_MARGIN_MM) & (win.z <= np.float32(z_top))
        if a.nodal == "external":
            m &= win.z >= np.float32(z_ext_low)
        region[win.sl] |= m

    # Obturator strip along the sidewall, between external and internal iliac vessels.
    win = canvas.window(np.array([-120.0, -40 * s, -2 * s]), np.array([120.0, 50 * s, 70 * s]))
    if win is not None:
        sw = lay.sidewall_x(win.z)
        ax = np.abs(win.x)
        inner = sw - np.float32(9 * s)
        m = (ax <= inner) & (ax >= inner - np.float32(OBTURATOR_WIDTH_MM))
        m &= (win.y >= np.float32(-34 * s)) & (win.y <= np.float32(44 * s))
        m &= (win.z >= np.float32(2 * s)) & (win.z <= np.float32(66 * s))
        region[win.sl] |= m

    # Presacral strip in front of S1-S2.
    win = canvas.window(np.array([-40 * s, 10 * s, 68 * s]), np.array([40 * s, 90 * s, 125 * s]))
    if win is not None:
        yc, w, dax = lay.sacrum_at(win.z)
        front = yc - dax
        m = (win.y >= front - np.float32(PRESACRAL_MM)) & (win.y <= front + np.float32(4.0))
        m &= (np.abs(win.x) <= np.float32(30 * s)) & (win.z >= np.float32(70 * s)) & (win.z <= np.float32(min(
            118 * s, z_top)))
        region[win.sl] |= m

    # Parametria: lateral to cervix and lower uterus out to the sidewall, in front of the
    # mesorectal fascia, behind the bladder (the bladder itself is removed below).
    cc, cax = lay.cervix_centre, lay.cervix_axis
    cl, cr = params.cervix_length_mm, params.cervix_radius_mm
    z_lo = float(cc[2] - cax[2] * cl / 2 - 6.0)
    z_hi = float(cc[2] + cax[2] * cl / 2 + 32.0 * s)
    win = canvas.window(np.array([-110.0, cc[1] - cr - 40, z_lo]), np.array([110.0, cc[1] + cr + 50, z_hi]))
    if win is not None:
        sw = lay.sidewall_x(win.z)
        # AP band follows the cervix/uterus axis so it tilts with the organ.
        y_axis = np.float32(cc[1]) + (win.z - np.float32(cc[2])) * np.float32(cax[1] / max(cax[2], 0.2))
        m = np.abs(win.x) <= sw - np.float32(9 * s)
        m &= (win.y >= y_axis - np.float32(cr + 12)) & (win.y <= y_axis + np.float32(cr + 20))
        m &= (win.z >= np.float32(z_lo)) & (win.z <= np.float32(z_hi))
        rp, rr = catmull_rom(lay.rectum_pts, lay.rectum_radii, 3.0)
        meso = tube(win, rp, rr + 13.0 * s, margin=2.0)
        m &= meso > 0
        region[win.sl] |= m

    # Upper vagina and a 5 mm paravaginal margin.
    vp, vr = catmull_rom(lay.vagina_pts, np.array([cr + 3.0, cr, 8.0 * s, 7.0 * s, 6.0 * s]), 3.0)
    lo, hi = tube_bounds(vp, vr, 6.0)
    win = canvas.window(lo, hi)
    if win is not None:
        d = tube(win, vp, vr, margin=6.0)
        region[win.sl] |= (d <= 5.0) & (win.z >= np.float32(lay.vagina_mid_z))

    excluded = lookup(CTV_EXCLUDED)
    ctv = region & ~excluded[labels]
    ctv &= labels != Tissue.VAGINA  # only the upper vagina, added back below
    must = lookup(UTERUS + (Tissue.CERVIX,))[labels]
    vag = labels == Tissue.VAGINA
    ctv |= must
    win = canvas.window(np.array([-60.0, -80.0, lay.vagina_mid_z]), np.array([60.0, 80.0, 200.0]))
    if win is not None:
        ctv[win.sl] |= vag[win.sl] & (win.z >= np.float32(lay.vagina_mid_z))
    for c, r in node_centres(lay, params):
        win = canvas.window(c - r.max() - 1, c + r.max() + 1)
        if win is not None:
            ctv[win.sl] |= (labels[win.sl] == Tissue.NODE) & (ellipsoid(win.x, win.y, win.z, c, r) < 0)
    return _drop_specks(ctv, must, canvas)


_PAIRS = [(f"{a}_{t}", f"{v}_{t}") for t in ("L", "R") for a, v in (("cia", "civ"), ("eia", "eiv"), ("iia", "iiv"))]


def _resample(pts: np.ndarray, n: int) -> np.ndarray:
    # n points evenly spaced by arc length along a polyline.
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, s[-1], n)
    return np.column_stack([np.interp(t, s, pts[:, i]) for i in range(3)])


def _drop_specks(ctv: np.ndarray, must: np.ndarray, canvas: Canvas) -> np.ndarray:
    """Remove connected pieces smaller than 1 cc that hold no uterus or cervix."""
    idx = np.argwhere(ctv.any(axis=(1, 2)))
    if idx.size == 0:
        return ctv
    nz = [np.flatnonzero(ctv.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1))]
    box = tuple(slice(n[0], n[-1] + 1) for n in nz)
    sub = ctv[box]
    lab, n = ndimage.label(sub)
    if n <= 1:
        return ctv
    sizes = np.bincount(lab.ravel())
    voxel_cc = float(np.prod(canvas.grid.spacing)) / 1000.0
    keep = sizes * voxel_cc >= 1.0
    keep[np.unique(lab[must[box] & sub])] = True
    keep[0] = False
    out = np.zeros_like(ctv)
    out[box] = keep[lab]
    return out
