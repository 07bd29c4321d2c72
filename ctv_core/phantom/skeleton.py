"""Bones of the phantom: lumbar spine, sacrum and coccyx, hip bones, femora, and hip prostheses.

Each bone is a signed distance field; all are merged by a minimum into one field with a cortex
thickness per bone, then split into cortical shell and trabecular (or fatty-marrow) interior.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, ndtri

from .body import CHUNK_SLICES, Painter, _tube_paint
from .layout import Layout
from .shapes import FAR, Canvas, Window, Wobble, catmull_rom, ellipsoid, superellipse, tube, tube_bounds
from .tissues import Tissue


#: Hip joint space (cartilage of head and acetabulum), mm.
JOINT_MM = 3.5


def _sig(v):
    """The logistic function, float32, without overflow for large ``|v|``."""
    return expit(v).astype(np.float32)


def iliac_wing(win: Window, lay: Layout, side: int):
    """Signed distance (mm) to one iliac wing plate and the x (mm, >0) of its mid-surface."""
    s = lay.s
    yn, zn = win.y / np.float32(s), win.z / np.float32(s)
    # Axial: a C-shaped plate, concave medially (the iliac fossa), from the sacroiliac joint
    # (u = 0) bowing laterally and curving back medially towards the anterior superior spine.
    # Coronal: flaring laterally and upwards from the acetabulum to the crest.
    u = np.clip(62.0 - yn, 0.0, 110.0)
    zf = np.maximum(zn - 40.0, 0.0)
    mid = (44.0 + 1.45 * u - 0.0082 * u * u + 0.0026 * zf * zf) * s
    gy = np.where((62.0 - yn > 0) & (62.0 - yn < 110), 1.45 - 0.0164 * u, 0.0)
    gz = 0.0052 * zf
    z_crest = 145.0 - 45.0 * ((yn - 20.0) / 58.0) ** 2
    # Thin in the fossa, thick at the crest, posteriorly (sacroiliac part) and above the acetabulum.
    t = (3.0 + 13.0 * _sig((yn - 46.0) / 6.0) + 16.0 * _sig((45.0 - zn) / 8.0)
         + 6.0 * _sig((zn - z_crest + 12.0) / 3.0)) * s
    plate = np.abs(win.x * side - mid) / np.sqrt(1.0 + gy * gy + gz * gz) - t / 2
    z_low = 25.0 + 37.0 * _sig((yn - 44.0) / 5.0)
    d = np.maximum(plate, np.maximum(-38.0 - yn, yn - 80.0) * s)
    d = np.maximum(d, np.maximum(z_low - zn, zn - z_crest) * s)
    return d.astype(np.float32), mid.astype(np.float32), t.astype(np.float32)


def paint_iliacus(painter: Painter, lay: Layout, canvas: Canvas) -> None:
    """Iliacus: muscle filling the iliac fossa on the inner surface of each wing."""
    s = lay.s
    for side in (1, -1):
        lo = np.array([min(side * 30, side * 150) * s, -45 * s, 30 * s])
        hi = np.array([max(side * 30, side * 150) * s, 60 * s, 150 * s])
        win = canvas.window(lo, hi)
        if win is None:
            continue
        _, mid, t = iliac_wing(win, lay, side)
        yn, zn = win.y / np.float32(s), win.z / np.float32(s)
        inner = mid - t / 2 - win.x * side
        z_crest = 145.0 - 45.0 * ((yn - 20.0) / 58.0) ** 2
        m = (inner > -1) & (inner < 19 * s) & (yn > -32) & (yn < 50) & (zn > 35) & (zn < z_crest - 6)
        painter.paint(win, m, Tissue.MUSCLE)


class BoneField:
    """Union of bone distance fields (mm) with the cortex thickness (mm) of the nearest bone."""

    def __init__(self, shape):
        self.d = np.full(shape, FAR, dtype=np.float32)
        self.t = np.full(shape, 2.0, dtype=np.float32)

    def add(self, win: Window, d: np.ndarray, cortex_mm: float) -> None:
        cur = self.d[win.sl]
        better = d < cur
        cur[better] = d[better]
        self.t[win.sl][better] = np.float32(cortex_mm)


def _ell(field, canvas, c, r, cortex, rot=None, cut=None):
    c, r = np.asarray(c, float), np.asarray(r, float)
    win = canvas.window(c - r.max() - 1, c + r.max() + 1)
    if win is None:
        return
    d = ellipsoid(win.x, win.y, win.z, c, r, rot)
    if cut is not None:
        d = np.maximum(d, cut(win))
    field.add(win, d, cortex)


def _tube(field, canvas, pts, radii, cortex, cut=None):
    p, r = catmull_rom(pts, radii, 3.0)
    lo, hi = tube_bounds(p, r, 1.0)
    win = canvas.window(lo, hi)
    if win is None:
        return
    d = tube(win, p, r, margin=4.0)
    if cut is not None:
        d = np.maximum(d, cut(win))
    field.add(win, d, cortex)


def build_bones(canvas: Canvas, lay: Layout, params) -> tuple[BoneField, dict]:
    """All bone distance fields, and analytic helper masks (femoral heads, marrow, joints).

    Returns
    -------
    field, extras
        ``extras`` holds full-grid bool arrays: ``head_L``/``head_R`` (femoral head balls),
        ``marrow`` (femoral shaft medulla), ``joint`` (SI joints and pubic symphysis gap).
    """
    s, hx, hr = lay.s, lay.head_x, lay.head_r
    field = BoneField(canvas.shape)
    extras = {k: np.zeros(canvas.shape, dtype=bool) for k in ("head_L", "head_R", "marrow", "joint", "disc",
                                                            "canal")}

    # Lumbar and lower thoracic vertebrae with discs, canal and posterior elements.
    levels = [(140, 46), (172, 40), (204, 36), (236, 34), (268, 34), (300, 36), (332, 38)]
    for n, (zv, yv) in enumerate(levels):
        zv, yv = zv * s, yv * s
        half_h = 13.0 * s
        rx, ry = (26.0 - 0.5 * n) * s, (17.0 - 0.3 * n) * s
        win = canvas.window(np.array([-70 * s, yv - ry - 2, zv - 20 * s]),
                            np.array([70 * s, yv + 60 * s, zv + 16 * s]))
        if win is None:
            continue
        x, y, z = win.x, win.y, win.z
        dz = np.abs(z - np.float32(zv))
        body = np.maximum(superellipse(x, y - np.float32(yv), np.float32(rx), np.float32(ry), 2.5), dz - half_h)
        cy = yv + ry + 10 * s
        outer = superellipse(x, y - np.float32(cy), np.float32(19 * s), np.float32(13 * s), 2.0)
        canal = superellipse(x, y - np.float32(cy - 1), np.float32(11 * s), np.float32(8 * s), 2.0)
        arch = np.maximum(np.maximum(outer, -canal), dz - half_h + 1.5)
        spinous = ellipsoid(x, y, z, (0, cy + 26 * s, zv - 6 * s), (5 * s, 15 * s, 11 * s))
        tw = (40.0 if n == 0 else 36.0) * s
        trans = np.minimum(ellipsoid(x, y, z, (tw, cy - 4 * s, zv), (18 * s, 6 * s, 7 * s)),
                           ellipsoid(x, y, z, (-tw, cy - 4 * s, zv), (18 * s, 6 * s, 7 * s)))
        d = np.minimum(np.minimum(body, arch), np.minimum(spinous, trans))
        field.add(win, d, 1.6)
        extras["canal"][win.sl] |= (canal < 0) & (dz < half_h + 3.5 * s)
        # Disc below this body.
        zd = zv - half_h - 3.0 * s
        disc = np.maximum(superellipse(x, y - np.float32(yv + 1.5 * s), np.float32(rx), np.float32(ry), 2.5),
                          np.abs(z - np.float32(zd)) - 3.0 * s)
        extras["disc"][win.sl] |= disc < 0

    # Sacrum and coccyx: a curved tapering plate, with the sacral canal behind the bodies.
    zs = lay.sacrum_pts[:, 2]
    win = canvas.window(np.array([-60 * s, 20 * s, zs.min() - 8]), np.array([60 * s, 110 * s, zs.max() + 14 * s]))
    if win is not None:
        yc, w, dax = lay.sacrum_at(win.z)
        sac = superellipse(win.x, win.y - yc, w, dax, 2.5)
        sac = np.maximum(sac, np.maximum(np.float32(zs.min() - 6) - win.z, win.z - np.float32(zs.max() + 12 * s)))
        field.add(win, sac, 1.5)
        canal = superellipse(win.x, win.y - (yc + dax * 0.45), np.minimum(w * 0.33, 13 * s), dax * 0.28, 2.0)
        extras["canal"][win.sl] |= (canal < 0) & (win.z > np.float32(30 * s)) & (sac < -1.5)
        # Anterior sacral foramina (S1-S4): nerve roots in fat, running front to back.
        for n, zf in enumerate((100.0, 78.0, 57.0, 39.0)):
            zf *= s
            ys, ws, ds = (float(v[0]) for v in lay.sacrum_at(np.array([zf])))
            for side in (1, -1):
                fc = (side * max(ws * 0.52, 9.0 * s), ys - 0.2 * ds, zf)
                fr = ((5.0 - 0.6 * n) * s, ds * 0.75, (5.0 - 0.6 * n) * s)
                loc = win.local(np.array(fc) - max(fr) - 1, np.array(fc) + max(fr) + 1)
                if loc is not None:
                    extras["canal"][win.sl][loc] |= (ellipsoid(win.x[loc], win.y[loc], win.z[loc], fc, fr) < 0) & (
                        sac[loc] < -1.0)
        sac_win = win
    else:
        sac_win = None

    for side, tag in ((1, "L"), (-1, "R")):
        m = np.array([side, 1.0, 1.0])
        c = np.array([side * hx, 0.0, 0.0])
        # Iliac wing, kept 2.5 mm off the sacrum: the sacroiliac joint.
        lo = np.array([min(side * 28, side * 160) * s, -45 * s, 20 * s])
        hi = np.array([max(side * 28, side * 160) * s, 90 * s, 150 * s])
        win = canvas.window(lo, hi)
        if win is not None:
            d, _, _ = iliac_wing(win, lay, side)
            if sac_win is not None:
                ysac, wsac, dsac = lay.sacrum_at(win.z)
                sac_here = superellipse(win.x, win.y - ysac, wsac, dsac, 2.5)
                extras["joint"][win.sl] |= (d < 0) & (sac_here > 0) & (sac_here < 2.5)
                d = np.maximum(d, 2.5 - sac_here)
            field.add(win, d, 1.5)
        # Acetabulum: a cup around the head opening laterally, anteriorly and inferiorly.
        n_open = np.array([side * 0.72, -0.35, -0.6])
        n_open /= np.linalg.norm(n_open)

        def cup_cut(w, c=c, n_open=n_open):
            return (w.x - c[0]) * n_open[0] + (w.y - c[1]) * n_open[1] + (w.z - c[2]) * n_open[2] - 0.3 * hr

        # Joint space: cartilage and capsule (soft tissue) between head and cup, JOINT_MM wide.
        rr = hr + JOINT_MM + 7.0
        win = canvas.window(c - rr - 1, c + rr + 1)
        if win is not None:
            dist = np.sqrt((win.x - c[0]) ** 2 + win.y ** 2 + win.z ** 2)
            cup = np.maximum(np.maximum(dist - rr, hr + JOINT_MM - dist), cup_cut(win))
            field.add(win, cup, 1.8)
            extras[f"head_{tag}"][win.sl] |= dist < hr
            extras["joint"][win.sl] |= (dist >= hr) & (dist < hr + JOINT_MM)

        def no_head(w, c=c):
            return hr + JOINT_MM - np.sqrt((w.x - c[0]) ** 2 + (w.y - c[1]) ** 2 + (w.z - c[2]) ** 2)

        _ell(field, canvas, (side * (hx - 6 * s), 8 * s, 30 * s), (17 * s, 30 * s, 24 * s), 1.8, cut=no_head)
        # Pubis: superior ramus, body (with the symphysis gap), inferior ramus.
        _tube(field, canvas, np.array([[hx - 20 * s, -22, 12], [42, -44, 14], [14, -54, 6]], float) * [side, s, s],
              np.array([11, 8, 9]) * s, 1.6, cut=no_head)
        _ell(field, canvas, (side * 15 * s, -53 * s, -3 * s), (13 * s, 10 * s, 20 * s), 1.6,
             cut=lambda w: np.float32(2.0) - np.abs(w.x))
        _tube(field, canvas, np.array([[18, -48, -18], [34, -28, -38], [48, 2, -50], [56, 28, -52]], float) * [side,
              s, s], np.array([7, 6.5, 7, 9]) * s, 1.5)
        # Ischium, tuberosity and spine.
        _tube(field, canvas, np.array([[hx - 12 * s, 20 * s, -6 * s], [hx - 26 * s, 32 * s, -30 * s],
                                       [58 * s, 38 * s, -50 * s]]) * m, np.array([14, 13, 12]) * s, 1.7,
              cut=no_head)
        _ell(field, canvas, (side * 58 * s, 40 * s, -55 * s), (14 * s, 16 * s, 14 * s), 2.0)
        _ell(field, canvas, (side * 50 * s, 47 * s, 6 * s), (6 * s, 9 * s, 9 * s), 1.5)
        # Femur: head, neck, trochanters, shaft (thick cortex, fatty medulla).
        _ell(field, canvas, c, (hr, hr, hr), 1.4)
        neck_end = np.array([side * (hx + 30 * s), 6 * s, -27 * s])
        _tube(field, canvas, np.vstack([c, neck_end]), np.array([0.62 * hr, 0.62 * hr]), 1.6)
        _ell(field, canvas, (side * (hx + 38 * s), 12 * s, -28 * s), (13 * s, 20 * s, 23 * s), 1.6)
        _ell(field, canvas, (side * (hx + 16 * s), 14 * s, -62 * s), (8 * s, 8 * s, 10 * s), 1.6)
        shaft = np.array([[hx + 30 * s, 6 * s, -36 * s], [hx + 24 * s, 4 * s, -140 * s], [hx + 12 * s, 0, -420]]) * m
        sr = np.array([16, 14, 13]) * s
        _tube(field, canvas, shaft, sr, 4.0)
        p, r = catmull_rom(shaft, sr - 4.5 * s, 3.0)
        lo, hi = tube_bounds(p, r, 1.0)
        win = canvas.window(lo, hi)
        if win is not None:
            extras["marrow"][win.sl] |= (tube(win, p, r, margin=1.0) < 0) & (win.z < np.float32(-75 * s))
    return field, extras


#: Depth (mm) under the cortex of the denser cancellous rim (subchondral and endosteal bone).
DENSE_RIM_MM = 3.0


def paint_bones(painter: Painter, field: BoneField, extras: dict, params) -> None:
    """Write cortical, trabecular and marrow labels, discs, canal and joint spaces.

    Cancellous bone is not uniform: a rim ``DENSE_RIM_MM`` deep under the cortex is denser, and
    islands of fatty marrow (a smooth random field of the anatomy frame, so the same on every
    grid) take ``params.marrow_fat`` of the rest.
    """
    lab = painter.labels
    canvas = painter.canvas
    islands = Wobble(params.layout_seed + 23, 1.0, (12.0, 40.0), terms=6)
    # The field is about N(0, 1) over the volume: its upper (marrow_fat) quantile marks the islands.
    level = np.float32(ndtri(1.0 - params.marrow_fat)) if params.marrow_fat > 0 else np.float32(np.inf)
    for k0 in range(0, canvas.shape[0], CHUNK_SLICES):
        win = canvas.slab(k0, min(k0 + CHUNK_SLICES, canvas.shape[0]))
        d, t = field.d[win.sl], field.t[win.sl]
        view = lab[win.sl]
        inside = d < 0
        view[extras["joint"][win.sl] & ~inside] = Tissue.SOFT
        cancellous = inside & (d <= -t)
        view[cancellous] = Tissue.TRABECULAR
        if np.isfinite(level) and cancellous.any():
            fatty = np.zeros_like(cancellous)
            fatty[cancellous] = islands(win.x[cancellous], win.y[cancellous], win.z[cancellous]) > level
            view[fatty] = Tissue.MARROW
        view[cancellous & (d > -t - np.float32(DENSE_RIM_MM))] = Tissue.TRABECULAR_DENSE
        view[inside & (d > -t)] = Tissue.CORTICAL
        view[cancellous & extras["marrow"][win.sl]] = Tissue.MARROW
        view[extras["disc"][win.sl] & ~inside] = Tissue.DISC
        view[extras["canal"][win.sl]] = Tissue.CANAL


def paint_prostheses(painter: Painter, canvas: Canvas, lay: Layout, params) -> list[np.ndarray]:
    """Metal hip prostheses (head, neck, stem, cup); returns the metal centre line points per implant."""
    s, hx, hr = lay.s, lay.head_x, lay.head_r
    lines = []
    for side, on in ((1, params.metal_left), (-1, params.metal_right)):
        if not on:
            continue
        c = np.array([side * hx, 0.0, 0.0])
        win = canvas.window(c - hr - 5, c + hr + 5)
        if win is not None:
            dist = np.sqrt((win.x - c[0]) ** 2 + win.y ** 2 + win.z ** 2)
            n_open = np.array([side * 0.72, -0.35, -0.6]) / np.linalg.norm([0.72, 0.35, 0.6])
            cut = (win.x - c[0]) * n_open[0] + win.y * n_open[1] + win.z * n_open[2]
            cup = (dist > hr + 1.0) & (dist < hr + 4.0) & (cut < 0.3 * hr)
            painter.paint(win, (dist < hr * 0.85) | cup, Tissue.METAL)
        stem = np.array([c, [side * (hx + 26 * s), 5 * s, -32 * s], [side * (hx + 24 * s), 4 * s, -100 * s],
                         [side * (hx + 20 * s), 3 * s, -170 * s]])
        _tube_paint(painter, canvas, stem, np.array([7.0, 7.5, 6.0, 4.5]) * s, Tissue.METAL, step=3.0)
        lines.append(stem)
    return lines
