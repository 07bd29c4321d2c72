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
from .shapes import FAR, Canvas, catmull_rom, ellipsoid, frame_from_axis, smooth_min, tube, tube_bounds
from .tissues import CTV_EXCLUDED, UTERUS, Tissue, lookup

#: Margin (mm) around the iliac vessels for the nodal CTV.
NODAL_MARGIN_MM = 7.0
#: Width (mm) of the obturator strip medial to obturator internus.
OBTURATOR_WIDTH_MM = 17.0
#: Thickness (mm) of the presacral strip anterior to S1-S2.
PRESACRAL_MM = 10.0


#: Blend radius (mm) of the smooth union of the CTV's parts: no square corners where they meet.
BLEND_MM = 9.0
#: Rounding radius (mm) of the strip-like parts (obturator, presacral, parametria).
ROUND_MM = 7.0


def rounded_box(px, py, pz, half, radius: float) -> np.ndarray:
    """Signed distance (mm) to a box of half sizes ``half`` (x, y, z; arrays allowed) with rounded edges."""
    r = np.float32(radius)
    qx = np.abs(px) - (half[0] - r)
    qy = np.abs(py) - (half[1] - r)
    qz = np.abs(pz) - (half[2] - r)
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2 + np.maximum(qz, 0) ** 2)
    inside = np.minimum(np.maximum(np.maximum(qx, qy), qz), 0)
    return (outside + inside - r).astype(np.float32)


class _Union:
    """A distance field on one window, grown part by part with a smooth minimum."""

    def __init__(self, win):
        self.win = win
        self.f = np.full(win.shape, FAR, dtype=np.float32)

    def add(self, loc, d) -> None:
        self.f[loc] = smooth_min(self.f[loc], d, BLEND_MM)

    def sub(self, lo, hi):
        loc = self.win.local(np.asarray(lo, float), np.asarray(hi, float))
        if loc is None:
            return None, (None, None, None)
        w = self.win
        return loc, (w.x[loc], w.y[loc], w.z[loc])


def build_ctv(canvas: Canvas, labels: np.ndarray, lay: Layout, params) -> np.ndarray:
    """Boolean CTV ``[k, j, i]`` on the canvas grid, given the final tissue labels.

    The parts (nodal tubes, obturator and presacral strips, parametria, upper vagina, uterus and
    cervix) are signed distance fields in mm joined by a smooth minimum, so the outline is
    rounded like a clinician's contour; organs at risk, bone and muscle are then cut out.
    """
    s = lay.s
    z_top = lay.bifurcation_z
    z_ext_low = lay.head_r * 0.9  # external iliac region ends at the top of the femoral heads
    cc, cax = lay.cervix_centre, lay.cervix_axis
    cl, cr = params.cervix_length_mm, params.cervix_radius_mm
    z_bottom = float(min(lay.vagina_mid_z, cc[2] - cl)) - 12.0
    win = canvas.window(np.array([-150.0 * s, -90.0 * s, z_bottom]), np.array([150.0 * s, 130.0 * s, z_top + 12.0]))
    if win is None:
        return np.zeros(canvas.shape, dtype=bool)
    u = _Union(win)
    margin = NODAL_MARGIN_MM + BLEND_MM + 2.0

    def tube_part(pts, radii, grow, nodal):
        lo, hi = tube_bounds(pts, radii, margin)
        loc, (x, y, z) = u.sub(lo, hi)
        if loc is None:
            return
        sub_win = win.sub(loc)
        d = tube(sub_win, pts, radii, margin=margin) - np.float32(grow)
        d = np.maximum(d, z - np.float32(z_top))
        if nodal == "external":
            d = np.maximum(d, np.float32(z_ext_low) - z)
        u.add(loc, d)

    # Nodal: iliac vessels + 7 mm, and the fat between each artery and its vein.
    for v in lay.vessels:
        if v.nodal:
            tube_part(v.pts, v.radii, NODAL_MARGIN_MM, v.nodal)
    for a_name, v_name in _PAIRS:
        a = next(v for v in lay.vessels if v.name == a_name)
        b = next(v for v in lay.vessels if v.name == v_name)
        pa, pb = _resample(a.pts, 24), _resample(b.pts, 24)
        rad = 0.5 * np.linalg.norm(pa - pb, axis=1) + 0.25 * (a.radii.mean() + b.radii.mean())
        tube_part(0.5 * (pa + pb), rad, NODAL_MARGIN_MM, a.nodal)

    # Obturator strip along the sidewall, between the external and internal iliac vessels.
    loc, (x, y, z) = u.sub([-150.0 * s, -50 * s, -10 * s], [150.0 * s, 60 * s, 80 * s])
    if loc is not None:
        inner = lay.sidewall_x(z) - np.float32(9 * s)
        d = rounded_box(np.abs(x) - (inner - np.float32(OBTURATOR_WIDTH_MM / 2)), y - np.float32(5 * s),
                        z - np.float32(34 * s), (OBTURATOR_WIDTH_MM / 2, 39 * s, 32 * s), ROUND_MM)
        u.add(loc, d)

    # Presacral strip in front of S1-S2.
    z_ps_hi = min(118 * s, z_top)
    loc, (x, y, z) = u.sub([-50 * s, 0.0, 55 * s], [50 * s, 100 * s, z_ps_hi + 15.0])
    if loc is not None:
        yc, _, dax = lay.sacrum_at(z)
        front = yc - dax
        zc, hz = 0.5 * (70 * s + z_ps_hi), 0.5 * (z_ps_hi - 70 * s)
        d = rounded_box(x, y - (front - np.float32(PRESACRAL_MM / 2 - 2.0)), z - np.float32(zc),
                        (30 * s, PRESACRAL_MM / 2 + 2.0, hz), 5.0)
        u.add(loc, d)

    # Parametria: lateral to cervix and lower uterus out to the sidewall, in front of the
    # mesorectal fascia, behind the bladder (the bladder itself is removed below).
    z_lo = float(cc[2] - cax[2] * cl / 2 - 6.0)
    z_hi = float(cc[2] + cax[2] * cl / 2 + 32.0 * s)
    loc, (x, y, z) = u.sub([-130.0, cc[1] - cr - 50, z_lo - 12], [130.0, cc[1] + cr + 60, z_hi + 12])
    if loc is not None:
        half_x = lay.sidewall_x(z) - np.float32(9 * s)
        y_axis = np.float32(cc[1]) + (z - np.float32(cc[2])) * np.float32(cax[1] / max(cax[2], 0.2))
        d = rounded_box(x, y - y_axis - np.float32(4.0), z - np.float32(0.5 * (z_lo + z_hi)),
                        (half_x, cr + 16.0, 0.5 * (z_hi - z_lo)), ROUND_MM)
        rp, rr = catmull_rom(lay.rectum_pts, lay.rectum_radii, 3.0)
        meso = tube(win.sub(loc), rp, rr + 13.0 * s, margin=BLEND_MM + 4.0)
        u.add(loc, np.maximum(d, -meso))

    # Upper vagina with a 5 mm paravaginal margin.
    vp, vr = catmull_rom(lay.vagina_pts, np.array([cr + 3.0, cr, 8.0 * s, 7.0 * s, 6.0 * s]), 3.0)
    lo, hi = tube_bounds(vp, vr, margin)
    loc, (x, y, z) = u.sub(lo, hi)
    if loc is not None:
        d = tube(win.sub(loc), vp, vr, margin=margin) - np.float32(5.0)
        u.add(loc, np.maximum(d, np.float32(lay.vagina_mid_z) - z))

    # Uterus and cervix (slightly grown) so the primary CTV wraps them smoothly.
    uc, ur = lay.uterus_centre, lay.uterus_radii
    rot = frame_from_axis(lay.uterus_axis)
    loc, (x, y, z) = u.sub(uc - ur.max() - 15, uc + ur.max() + 15)
    if loc is not None:
        u.add(loc, ellipsoid(x, y, z, uc, ur + 3.0, rot))
    loc, (x, y, z) = u.sub(cc - cl - cr - 15, cc + cl + cr + 15)
    if loc is not None:
        u.add(loc, ellipsoid(x, y, z, cc, (cr + 4.0, cr * 0.88 + 4.0, cl / 2 + 5.0), frame_from_axis(cax)))

    region = np.zeros(canvas.shape, dtype=bool)
    region[win.sl] = u.f < 0
    del u

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
    voxel_cc = canvas.grid.voxel_cc
    keep = sizes * voxel_cc >= 1.0
    keep[np.unique(lab[must[box] & sub])] = True
    keep[0] = False
    out = np.zeros_like(ctv)
    out[box] = keep[lab]
    return out
