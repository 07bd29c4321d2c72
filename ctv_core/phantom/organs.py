"""Vessels, lymph nodes and the pelvic viscera of the phantom (bladder, rectum, bowel, uterus, ...)."""

from __future__ import annotations

import numpy as np

from .body import Painter, _tube_paint
from .layout import Layout
from .shapes import Canvas, Wobble, catmull_rom, ellipsoid, frame_from_axis, tube, tube_bounds
from .tissues import Tissue

FATS = (Tissue.FAT, Tissue.MESORECTAL_FAT)


def paint_vessels(painter: Painter, canvas: Canvas, lay: Layout) -> None:
    """Veins first, then arteries over them; iliac branches get their own labels."""
    for want_artery in (False, True):
        for v in lay.vessels:
            if v.artery != want_artery:
                continue
            if v.iliac:
                tissue = Tissue.ILIAC_ARTERY if v.artery else Tissue.ILIAC_VEIN
            else:
                tissue = Tissue.ARTERY if v.artery else Tissue.VEIN
            lo, hi = tube_bounds(v.pts, v.radii, 1.0)
            win = canvas.window(lo, hi)
            if win is None:
                continue
            painter.paint(win, tube(win, v.pts, v.radii, margin=1.0) < 0, tissue)


def _vessel(lay: Layout, name: str):
    return next(v for v in lay.vessels if v.name == name)


def node_centres(lay: Layout, params) -> list[tuple[np.ndarray, np.ndarray]]:
    """Centre (mm) and radii (mm) of each lymph node from the params' node list."""
    out = []
    for code, side, t, angle, radius in params.lymph_nodes:
        tag = "L" if side > 0 else "R"
        if int(code) == 3:  # obturator fossa, medial to obturator internus
            z = (18.0 + 30.0 * t) * lay.s
            x = side * (float(lay.sidewall_x(z)) - 11.0 * lay.s - radius - 2.5)
            y = (-12.0 + 36.0 * (0.5 + 0.5 * np.sin(np.deg2rad(angle)))) * lay.s
            out.append((np.array([x, y, z]), np.array([radius, radius * 0.8, radius * 1.4])))
            continue
        v = _vessel(lay, {0: "cia_", 1: "eia_", 2: "iia_"}[int(code)] + tag)
        i = int(np.clip(round(t * (len(v.pts) - 1)), 1, len(v.pts) - 2))
        tang = v.pts[i + 1] - v.pts[i - 1]
        f = frame_from_axis(tang)
        a = np.deg2rad(angle)
        direction = np.cos(a) * f[0] + np.sin(a) * f[1]
        centre = v.pts[i] + direction * (v.radii[i] + radius * 0.8 + 1.5)
        out.append((centre, np.array([radius, radius * 0.8, radius * 1.4])))
    return out


def paint_nodes(painter: Painter, canvas: Canvas, lay: Layout, params) -> None:
    """Lymph nodes, painted only over fat so they always sit in fat."""
    for c, r in node_centres(lay, params):
        win = canvas.window(c - r.max() - 1, c + r.max() + 1)
        if win is not None:
            painter.paint(win, ellipsoid(win.x, win.y, win.z, c, r) < 0, Tissue.NODE, only=FATS)


def bowel_loops(lay: Layout, params) -> list[tuple[np.ndarray, float, int]]:
    """Small-bowel loop centre lines (random walks above the bladder and uterus).

    Returns ``(points (N, 3) mm, radius mm, content)`` per loop; content 0 fluid, 1 collapsed,
    2 gas with a fluid level, 3 positive oral contrast.
    """
    s = lay.s
    rng = np.random.default_rng(params.layout_seed + 11)
    keep_out = [(lay.bladder_centre, lay.bladder_radii + 14.0),
                (lay.uterus_centre, lay.uterus_radii[[0, 1, 2]] + 14.0)]

    def ok(p):
        x, y, z = p
        if abs(x) > 92 * s or z > 250 * s or z < 62 * s:
            return False
        y_max = min(-10 * s + 0.45 * max(abs(x) - 28 * s, 0.0), 16 * s)
        if y < -62 * s or y > y_max:
            return False
        for c, r in keep_out:
            if np.sum(((p - c) / r) ** 2) < 1.0:
                return False
        return True

    loops = []
    for n in range(params.n_bowel_loops):
        for _ in range(200):
            p = np.array([rng.uniform(-85, 85) * s, rng.uniform(-55, 0) * s, rng.uniform(70, 240) * s])
            if ok(p):
                break
        else:
            continue
        pts = [p]
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        for _ in range(rng.integers(9, 15)):
            for _try in range(12):
                nd = 0.55 * d + rng.normal(size=3) * 0.8
                nd /= np.linalg.norm(nd)
                q = pts[-1] + nd * 16.0 * s
                if ok(q):
                    break
            else:
                break
            pts.append(q)
            d = nd
        if len(pts) < 3:
            continue
        kinds = [0, 1, 2, 3] if params.oral_contrast else [0, 1, 2]
        kind = int(rng.choice(kinds))
        radius = 7.0 * s if kind == 1 else rng.uniform(10.0, 13.5) * s
        loops.append((np.array(pts), float(radius), kind))
    return loops


def paint_viscera(painter: Painter, canvas: Canvas, lay: Layout, params, up: float = -1.0) -> None:
    """Mesorectum, bowel, colon, rectum, vagina, urethra, bladder, ovaries, uterus and cervix.

    ``up`` is the sign of y pointing away from the couch (-1 supine: anterior; +1 prone:
    posterior): gas rises to that side of every loop.
    """
    s = lay.s
    up = np.float32(up)
    # Mesorectal fat envelope around the rectum (below the rectosigmoid).
    rp, rr = catmull_rom(lay.rectum_pts, lay.rectum_radii, 3.0)
    _tube_paint(painter, canvas, rp[rp[:, 2] > -45 * s], rr[rp[:, 2] > -45 * s] + 13.0 * s,
                Tissue.MESORECTAL_FAT, only=(Tissue.FAT,), step=3.0)

    wall = np.float32(2.0)
    for pts, radius, kind in bowel_loops(lay, params):
        p, r = catmull_rom(pts, radius, 4.0)
        lo, hi = tube_bounds(p, r, 1.0)
        win = canvas.window(lo, hi)
        if win is None:
            continue
        d, dy = tube(win, p, r, margin=1.0, want_dy=True)
        inside = d < 0
        lumen = inside & (d < -wall)
        painter.paint(win, inside, Tissue.BOWEL_WALL)
        if kind == 1:
            continue
        content = {0: Tissue.BOWEL_FLUID, 2: Tissue.BOWEL_FLUID, 3: Tissue.BOWEL_CONTRAST}[kind]
        painter.paint(win, lumen, content)
        if kind == 2:
            painter.paint(win, lumen & (dy * up > np.float32(0.15 * radius)), Tissue.BOWEL_GAS)

    # Colon: caecum and ascending colon on the right, sigmoid and descending colon on the left.
    cae = np.array([[-60, -24, 72], [-66, -16, 100], [-76, -4, 160], [-82, 8, 230], [-84, 12, 340]], float) * [1, s, s]
    for pts, radii in ((cae, np.array([24, 22, 20, 19, 19]) * s), (lay.sigmoid_pts, lay.sigmoid_radii)):
        p, r = catmull_rom(pts, radii, 4.0)
        lo, hi = tube_bounds(p, r, 1.0)
        win = canvas.window(lo, hi)
        if win is None:
            continue
        d, dy = tube(win, p, r, margin=1.0, want_dy=True)
        painter.paint(win, d < 0, Tissue.BOWEL_WALL)
        painter.paint(win, d < -wall, Tissue.BOWEL_FECES)
        painter.paint(win, (d < -wall) & (dy * up > 0.55 * r.mean()), Tissue.BOWEL_GAS)

    # Rectum: wall, faeces, and a gas pocket on the non-dependent side.
    lo, hi = tube_bounds(rp, rr, 1.0)
    win = canvas.window(lo, hi)
    if win is not None:
        d, dy = tube(win, rp, rr, margin=1.0, want_dy=True)
        inside = d < 0
        lumen = inside & (d < -np.float32(params.rectum_wall_mm)) & (win.z > np.float32(-40 * s))
        painter.paint(win, inside, Tissue.RECTUM_WALL)
        painter.paint(win, lumen, Tissue.RECTUM_CONTENT)
        lumen_cc = np.pi * float(np.mean(rr)) ** 2 * float(np.ptp(rp[:, 2])) / 1000.0
        frac = min(params.rectal_gas_cc / max(lumen_cc, 1.0), 0.6)
        if frac > 0.005:
            level = np.float32(float(np.mean(rr)) * (1.0 - 2.0 * frac ** (2.0 / 3.0)))
            painter.paint(win, lumen & (dy * up > level), Tissue.RECTUM_GAS)

    # Vagina from the fornices down, and the urethra in front of it.
    _tube_paint(painter, canvas, lay.vagina_pts,
                np.array([params.cervix_radius_mm + 3.0, params.cervix_radius_mm, 8.0, 7.0, 6.0]) * [1, 1, s, s, s],
                Tissue.VAGINA, step=3.0)
    ure = np.array([[0, -31, -4], [0, -34, -32], [0, -28, -66]], float) * [1, s, s]
    _tube_paint(painter, canvas, ure, np.array([4.5, 4.0, 3.5]) * s, Tissue.SOFT, step=3.0)

    # Bladder: a pear-shaped ellipsoid (narrower at the base), wall and urine.
    bc, br = lay.bladder_centre, lay.bladder_radii
    win = canvas.window(bc - br - 6, bc + br + 6)
    if win is not None:
        base = bc[2] - br[2]
        taper = np.clip(0.72 + 0.28 * (win.z - np.float32(base)) / np.float32(br[2]), 0.72, 1.0).astype(np.float32)
        d = ellipsoid(np.float32(bc[0]) + (win.x - np.float32(bc[0])) / taper, win.y, win.z, bc, br) + Wobble(params.layout_seed + 3, 1.5, (25, 60))(
            win.x, win.y, win.z)
        painter.paint(win, d < 0, Tissue.BLADDER_WALL)
        painter.paint(win, d < -np.float32(params.bladder_wall_mm), Tissue.URINE)

    # Ovaries beside the uterus.
    uc, ur = lay.uterus_centre, lay.uterus_radii
    for side in (1, -1):
        c = np.array([side * (ur[0] + 24 * s), uc[1] + 12 * s, uc[2] - 8 * s])
        r = np.array([13, 9, 17]) * s
        win = canvas.window(c - r.max(), c + r.max())
        if win is not None:
            painter.paint(win, ellipsoid(win.x, win.y, win.z, c, r) < 0, Tissue.SOFT, only=FATS)

    # Uterus body (pear-shaped, wider at the fundus) with a thin endometrial stripe.
    frame = frame_from_axis(lay.uterus_axis)
    win = canvas.window(uc - ur.max() - 4, uc + ur.max() + 4)
    if win is not None:
        px, py, pz = win.x - np.float32(uc[0]), win.y - np.float32(uc[1]), win.z - np.float32(uc[2])
        f = frame.astype(np.float32)
        lx = f[0, 0] * px + f[0, 1] * py + f[0, 2] * pz
        ly = f[1, 0] * px + f[1, 1] * py + f[1, 2] * pz
        lz = f[2, 0] * px + f[2, 1] * py + f[2, 2] * pz
        taper = (0.72 + 0.28 * np.clip((lz / np.float32(ur[2]) + 1.0) / 2.0, 0.0, 1.0)).astype(np.float32)
        d = ellipsoid(lx / taper, ly / taper, lz, (0, 0, 0), ur) + Wobble(params.layout_seed + 4, 1.2, (25, 50))(
            win.x, win.y, win.z)
        painter.paint(win, d < 0, Tissue.UTERUS)
        endo = ellipsoid(lx, ly, lz, (0, 0, -0.1 * ur[2]), (0.4 * ur[0], 0.14 * ur[1], 0.62 * ur[2]))
        painter.paint(win, (endo < 0) & (d < -3.0), Tissue.ENDOMETRIUM)

    # Cervix: a short thick cylinder-like ellipsoid along its axis.
    cc, cax = lay.cervix_centre, lay.cervix_axis
    cr, cl = params.cervix_radius_mm, params.cervix_length_mm
    rot = frame_from_axis(cax)
    win = canvas.window(cc - cl / 2 - cr - 4, cc + cl / 2 + cr + 4)
    if win is not None:
        d = ellipsoid(win.x, win.y, win.z, cc, (cr, cr * 0.88, cl / 2 + 3.0), rot)
        painter.paint(win, d < 0, Tissue.CERVIX)
