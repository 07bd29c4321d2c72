"""Body outline (skin, subcutaneous fat), muscles, and the CT couch of the phantom."""

from __future__ import annotations

import numpy as np

from .layout import Layout
from .shapes import Canvas, Window, Wobble, catmull_rom, ellipsoid, smooth_min, superellipse, tube, tube_bounds
from .tissues import Tissue


class Painter:
    """Holds the uint8 tissue label volume ``[k, j, i]`` and writes shapes into it."""

    def __init__(self, canvas: Canvas):
        self.canvas = canvas
        self.labels = np.zeros(canvas.shape, dtype=np.uint8)

    def paint(self, win: Window, mask: np.ndarray, tissue: Tissue, only=None) -> None:
        """Set ``tissue`` where ``mask``; with ``only``, just over voxels currently in ``only``."""
        view = self.labels[win.sl]
        if only is not None:
            allowed = np.zeros(256, dtype=bool)
            allowed[[int(t) for t in only]] = True
            mask = mask & allowed[view]
        view[mask] = np.uint8(tissue)


def _profiles(lay: Layout, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Nearest lookup in a 0.5 mm table: cheaper than np.interp over tens of millions of voxels.
    z0 = float(lay.body_z_table[0])
    zt = np.arange(z0, float(lay.body_z_table[-1]) + 0.5, 0.5)
    ta = np.interp(zt, lay.body_z_table, lay.lean_a).astype(np.float32)
    tb = np.interp(zt, lay.body_z_table, lay.lean_b).astype(np.float32)
    idx = np.clip(((z - np.float32(z0)) * 2.0 + 0.5).astype(np.int32), 0, zt.size - 1)
    return ta[idx], tb[idx]


def body_sdf(win: Window, lay: Layout, wobble, with_fat: bool, profiles=None) -> np.ndarray:
    """Signed distance (mm) to the body outline (``with_fat``) or to the lean, under-fat outline."""
    x, y, z = win.x, win.y, win.z
    a, b = profiles if profiles is not None else _profiles(lay, z)
    yc = np.float32(lay.back_y) - b
    f_lat = np.float32(lay.fat_lat if with_fat else 0.0)
    f_ant = np.float32(lay.fat_ant if with_fat else 0.0)
    f_post = np.float32(lay.fat_post if with_fat else 0.0)
    yy = y - yc
    # The posterior half is longer than the flat back cuts it at: the patient lies flat.
    half_ap = np.where(yy < 0, b + f_ant, b + f_post + np.float32(30.0 * lay.s))
    d = superellipse(x, yy, a + f_lat, half_ap, 2.5)
    if with_fat:
        d += wobble(x, y, z)
    np.maximum(d, y - np.float32(lay.back_y + f_post), out=d)
    np.maximum(d, np.float32(lay.trunk_bottom_z) - z, out=d)
    s = lay.s
    top = np.float32(-30.0 * s)
    if float(z.min()) < top + 25.0:
        for side in (1, -1):
            cx = side * (82.0 * s + 0.4 * f_lat)
            th = superellipse(x - np.float32(cx), y - np.float32(14.0 * s), np.float32(60.0 * s) + f_lat,
                              np.float32(68.0 * s) + 0.5 * (f_ant + f_post), 2)
            np.maximum(th, z - top, out=th)
            d = smooth_min(d, th, 18.0)
    return d


#: Slices per chunk when painting the body, to bound temporary memory.
CHUNK_SLICES = 12


def paint_body(painter: Painter, lay: Layout, params) -> np.ndarray:
    """Paint fat, skin and the muscular wall over the whole grid; returns the body mask."""
    canvas = painter.canvas
    wob = Wobble(params.layout_seed + 1, 2.5, (60.0, 160.0), terms=3)
    body = np.zeros(canvas.shape, dtype=bool)
    s = lay.s
    for k0 in range(0, canvas.shape[0], CHUNK_SLICES):
        win = canvas.slab(k0, min(k0 + CHUNK_SLICES, canvas.shape[0]))
        x, y, z = win.x, win.y, win.z
        prof = _profiles(lay, z)
        d_body = body_sdf(win, lay, wob, True, prof)
        inside = d_body < 0
        body[win.sl] = inside
        painter.paint(win, inside, Tissue.FAT)
        painter.paint(win, inside & (d_body > -np.float32(params.skin_mm)), Tissue.SKIN)
        del d_body
        lean = body_sdf(win, lay, wob, False, prof)
        b = prof[1]
        anterior = y < (np.float32(lay.back_y) - b * 1.5)
        ring = (lean < 0) & (lean > -np.float32(10.0 * s)) & (z > np.float32(-45 * s))
        # No muscle in front of the pubis, a fat gap at the linea alba, and the gluteal cleft.
        ring &= ~(anterior & ((z < np.float32(22 * s)) | (np.abs(x) < 6)))
        ring &= ~((y > np.float32(lay.back_y - 30 * s)) & (np.abs(x) < 14 * s) & (z < np.float32(70 * s)))
        ring |= (lean < 0) & (z < np.float32(-70 * s)) & (np.abs(x) > 30 * s)  # thigh muscles
        painter.paint(win, ring & inside, Tissue.MUSCLE)
    return body


def paint_muscles(painter: Painter, lay: Layout, params, canvas: Canvas) -> None:
    """Psoas, paraspinals, gluteals, obturator internus, levator ani, piriformis (not iliacus)."""
    s, by = lay.s, lay.back_y
    ell = []
    for side in (1, -1):
        ell += [
            ((side * 32 * s, by - 24 * s, 250 * s), (26 * s, 22 * s, 200 * s), None),   # erector spinae
            ((side * 62 * s, by - 38 * s, 230 * s), (18 * s, 14 * s, 80 * s), None),    # quadratus lumborum
            ((side * 72 * s, by - 20 * s, -10 * s), (54 * s, 24 * s, 80 * s), None),    # gluteus maximus
            ((side * 110 * s, 36 * s, 66 * s), (30 * s, 44 * s, 50 * s), None),         # gluteus medius
        ]
    for c, r, rot in ell:
        c, r = np.asarray(c), np.asarray(r)
        win = canvas.window(c - r - 2, c + r + 2)
        if win is None:
            continue
        d = ellipsoid(win.x, win.y, win.z, c, r, rot)
        lean = body_sdf(win, lay, _NO_WOBBLE, with_fat=False)
        painter.paint(win, (d < 0) & (lean < -1.0), Tissue.MUSCLE, only=(Tissue.FAT, Tissue.MUSCLE))

    for side in (1, -1):
        m = np.array([side, 1.0, 1.0])
        psoas = np.array([[30, 45, 340], [38, 48, 175], [45, 46, 140], [55, 37, 115], [68, 22, 90], [78, 2, 60],
                          [84, -24, 35], [88, -37, 18], [86, -32, -20], [100, 2, -60]], float) * s * m
        pr = np.array([13, 16, 18, 19, 20, 19, 17, 16, 15, 9]) * s
        _tube_paint(painter, canvas, psoas, pr, Tissue.MUSCLE)
        piri = np.array([[18, 76, 72], [40, 76, 60], [70, 60, 35], [112, 25, -12]], float) * s * m
        _tube_paint(painter, canvas, piri, np.array([9, 11, 11, 7]) * s, Tissue.MUSCLE)

        # Obturator internus: a plate on the inner surface of the bony sidewall.
        lo = np.array([-140.0, -50 * s, -50 * s])
        hi = np.array([140.0, 60 * s, 40 * s])
        win = canvas.window(lo, hi)
        if win is not None:
            sw = lay.sidewall_x(win.z)
            ax = win.x * side
            d = np.maximum(np.maximum(ax - (sw + 3), (sw - 11 * s) - ax),
                           np.maximum(np.abs(win.y - np.float32(5 * s)) - 47 * s,
                                      np.abs(win.z - np.float32(-6 * s)) - 40 * s))
            painter.paint(win, d < 0, Tissue.MUSCLE)

    # Levator ani: a funnel around the urethra, vagina and anorectum.
    lo = np.array([-70 * s, -40 * s, -60 * s])
    hi = np.array([70 * s, 85 * s, 0.0])
    win = canvas.window(lo, hi)
    if win is not None:
        rho = np.sqrt(win.x ** 2 + ((win.y - np.float32(22 * s)) / 1.25) ** 2)
        r = np.float32(20 * s) + (win.z + np.float32(52 * s)) * 0.85
        d = np.maximum(np.abs(rho - r) - 2.6, np.maximum(-52 * s - win.z, win.z + 8 * s))
        painter.paint(win, d < 0, Tissue.MUSCLE)


def _tube_paint(painter: Painter, canvas: Canvas, pts, radii, tissue, only=None, step=4.0):
    p, r = catmull_rom(pts, radii, step)
    lo, hi = tube_bounds(p, r, 1.0)
    win = canvas.window(lo, hi)
    if win is None:
        return None, None
    d = tube(win, p, r, margin=1.0)
    painter.paint(win, d < 0, tissue, only=only)
    return win, d


class _NoWobble:
    def __call__(self, x, y, z):
        return np.float32(0.0)


_NO_WOBBLE = _NoWobble()


def body_extremes(lay: Layout, params, z_lo: float, z_hi: float) -> tuple[float, float, float]:
    """(max |x|, min y, max y) of the body outline (mm) over ``z_lo..z_hi``, with a safety margin."""
    zz = np.linspace(z_lo, z_hi, 256)
    a = np.interp(zz, lay.body_z_table, lay.lean_a)
    b = np.interp(zz, lay.body_z_table, lay.lean_b)
    below = zz < lay.trunk_bottom_z
    a = np.where(below, 0.0, a)
    wob = Wobble(params.layout_seed + 1, 2.5, (60.0, 160.0), terms=3).bound
    half_x = max(float(np.max(a + lay.fat_lat)), 82 * lay.s + 0.4 * lay.fat_lat + 60 * lay.s + lay.fat_lat) + wob
    yc = lay.back_y - b
    y_front = float(np.min(np.where(below, 14 * lay.s - 68 * lay.s - lay.fat_ant, yc - b - lay.fat_ant))) - wob
    y_back = lay.back_y + lay.fat_post
    return half_x, y_front, y_back


def paint_couch(painter: Painter, win: Window, body: np.ndarray, position: str, y_surface: float,
                x_centre: float) -> None:
    """Foam mattress and a flat-topped, curved-bottom carbon couch outside the body.

    ``y_surface`` is the anatomy-frame y (mm) of the body surface on the couch side; the couch
    lies posterior to it for supine positions and anterior for prone ones.
    """
    sign = 1.0 if position.endswith("S") else -1.0
    u = (win.y - np.float32(y_surface)) * np.float32(sign)  # depth below the body surface, mm
    x = win.x - np.float32(x_centre)
    outside = ~body
    mattress = (u > -1.0) & (u < 10.0) & (np.abs(x) < 240) & outside
    painter.paint(win, mattress, Tissue.MATTRESS)
    top = np.float32(12.0)
    bottom = top + np.float32(48.0) - np.float32(30.0) * (x / np.float32(265.0)) ** 2
    inside = (u > top) & (u < bottom) & (np.abs(x) < 265)
    shell = inside & ((u < top + 2.5) | (u > bottom - 2.5) | (np.abs(x) > 261))
    painter.paint(win, inside & outside, Tissue.COUCH_CORE)
    painter.paint(win, shell & outside, Tissue.COUCH_SHELL)
