"""Vessels, lymph nodes and the pelvic viscera of the phantom (bladder, rectum, bowel, uterus, ...)."""

from __future__ import annotations

import numpy as np

from .body import Painter, _tube_paint
from .layout import Layout, psoas_paths
from .shapes import Canvas, Wobble, catmull_rom, ellipsoid, frame_from_axis, tube, tube_bounds
from .tissues import Tissue

FATS = (Tissue.FAT, Tissue.MESORECTAL_FAT, Tissue.VISCERAL_FAT)


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


#: How far (mm) small-bowel loops of a lean patient (habitus 0) fill the mesenteric fat around them.
BOWEL_SWELL_MM = 7.0

#: Contents of a small-bowel loop.
FLUID, COLLAPSED, GAS, CONTRAST = 0, 1, 2, 3


def _bowel_region_ok(lay: Layout, p, r: float) -> bool:
    """Whether a loop centre ``p`` with radius ``r`` (mm) lies in the peritoneal cavity above the pelvis."""
    s = lay.s
    x, y, z = p
    if z > 260 * s or z < 64 * s + 0.4 * r:
        return False
    b = float(np.interp(z, lay.body_z_table, lay.lean_b))
    a = float(np.interp(z, lay.body_z_table, lay.lean_a))
    front = lay.back_y - 2.0 * b + 12.0 * s  # inside the anterior abdominal wall
    # The peritoneal cavity widens with the trunk (a heavier patient's muscular trunk is wider too).
    half = min(a - 30.0 * s, (96.0 if z > 105 * s else 78.0) * s * lay.width_factor) - r
    if abs(x) > half:
        return False
    # In front of the spine and the great vessels (obstacles of their own), deeper laterally.
    y_max = min(26 * s + 0.5 * max(abs(x) - 26 * s, 0.0), 40 * s) - 0.5 * r
    # The lean front is an ellipse: near the sides the wall curves back.
    y_min = front + r + 40.0 * s * (abs(x) / max(a, 1.0)) ** 4
    return y_min < y < y_max


def bowel_loops(lay: Layout, params) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Small-bowel loops packed in the lower abdomen and upper pelvis (mm, anatomy frame).

    Each loop is a random walk whose every step keeps a wall-to-wall distance from the loops
    already placed, the colon, the iliac vessels, the bladder and the uterus, so the loops lie
    side by side like real bowel instead of crossing each other. Calibre varies per loop and
    along it (collapsed loops are thin).

    Returns ``(points (N, 3), radii (N,), content)`` per loop; content is ``FLUID``,
    ``COLLAPSED``, ``GAS`` (gas over a fluid level) or ``CONTRAST`` (positive oral contrast).
    """
    s = lay.s
    rng = np.random.default_rng(params.layout_seed + 11)
    obst_p, obst_r = [], []
    for v in lay.vessels:
        if v.iliac or v.name in ("aorta", "ivc"):
            obst_p.append(v.pts)
            obst_r.append(v.radii + 4.0)
    for pts, radii in colon_paths(lay) + psoas_paths(lay):
        p, r = catmull_rom(pts, radii, 6.0)
        obst_p.append(p)
        obst_r.append(r + 1.0)
    occ_p = np.vstack(obst_p)
    occ_r = np.concatenate(obst_r)
    keep_out = [(lay.bladder_centre, lay.bladder_radii + 8.0), (lay.uterus_centre, lay.uterus_radii.max() + 8.0)]

    def free(q, r, own):
        for c, rr in keep_out:
            if np.sum(((q - c) / (rr + r)) ** 2) < 1.0:
                return False
        if not _bowel_region_ok(lay, q, r):
            return False
        if q[2] < 150 * s and abs(q[0]) + r > _iliacus_inner_x(lay, q):
            return False
        d = np.linalg.norm(occ_p - q, axis=1) - occ_r - r
        if own:
            d = d[:-own]
        return d.size == 0 or float(d.min()) > -1.0  # walls may touch

    if params.oral_contrast:
        kinds, probs = [FLUID, COLLAPSED, GAS, CONTRAST], [0.25, 0.25, 0.05, 0.45]
    else:
        kinds, probs = [FLUID, COLLAPSED, GAS], [0.55, 0.35, 0.10]
    loops = []
    for _n in range(params.n_bowel_loops):
        kind = int(rng.choice(kinds, p=probs))
        r0 = (rng.uniform(5.5, 8.0) if kind == COLLAPSED else rng.uniform(9.0, 15.0)) * s
        wide = 90.0 * lay.width_factor
        for _ in range(400):
            p = np.array([rng.uniform(-wide, wide) * s, rng.uniform(-70, 30) * s, rng.uniform(66, 220) * s])
            if free(p, r0, 0):
                break
        else:
            continue
        pts, radii = [p], [r0]
        occ_p = np.vstack([occ_p, p])
        occ_r = np.append(occ_r, r0)
        d = rng.normal(size=3)
        d[2] *= 0.5
        d /= np.linalg.norm(d)
        for _ in range(int(rng.integers(8, 22))):
            # Calibre changes along a loop (peristalsis, contents), more than a hose's would.
            r = float(np.clip(radii[-1] * rng.uniform(0.82, 1.2), 0.7 * r0, 1.3 * r0))
            step = 0.9 * (r + radii[-1])
            for _try in range(24):
                nd = 0.6 * d + rng.normal(size=3) * 0.75
                nd /= np.linalg.norm(nd)
                q = pts[-1] + nd * step
                # A loop may touch its own last points (it is continuous), not the rest of itself.
                if free(q, r, 3):
                    break
            else:
                break
            pts.append(q)
            radii.append(r)
            occ_p = np.vstack([occ_p, q])
            occ_r = np.append(occ_r, r)
            d = nd
        if len(pts) < 3:
            continue
        loops.append((np.array(pts), np.array(radii), kind))
    return loops


def _iliacus_inner_x(lay: Layout, q) -> float:
    """|x| (mm) of the medial surface of iliacus at the point's y and z (large where there is none)."""
    from .skeleton import iliac_wing

    class _P:
        x = np.array([abs(q[0])], np.float32)
        y = np.array([q[1]], np.float32)
        z = np.array([q[2]], np.float32)

    s = lay.s
    yn, zn = q[1] / s, q[2] / s
    if not (-32 < yn < 50 and zn > 30):
        return 1.0e3
    _, mid, t = iliac_wing(_P, lay, 1)
    return float(mid[0] - t[0] / 2) - 19.0 * s


def colon_paths(lay: Layout) -> list[tuple[np.ndarray, np.ndarray]]:
    """Caecum and ascending colon (right), and the sigmoid and descending colon (left): points, radii."""
    s = lay.s
    cae = np.array([[-60, -24, 72], [-66, -16, 100], [-76, -4, 160], [-82, 8, 230], [-84, 12, 340]], float) * [1, s, s]
    return [(cae, np.array([24, 22, 20, 19, 19]) * s), (lay.sigmoid_pts, lay.sigmoid_radii)]


def _mesenteric_vessels(lay: Layout, loops, params) -> list[tuple[np.ndarray, np.ndarray]]:
    """Thin vessels fanning out from the mesenteric root towards the loops (mm)."""
    s = lay.s
    rng = np.random.default_rng(params.layout_seed + 13)
    root = np.array([4.0 * s, -4.0 * s, 280.0 * s])
    out = []
    for pts, radii, _ in loops:
        target = pts[len(pts) // 2]
        mid = 0.5 * (root + target) + rng.normal(size=3) * 12.0
        path = np.array([root, mid, target - (target - mid) / np.linalg.norm(target - mid) * (radii.max() + 3.0)])
        out.append((path, np.array([3.0, 2.2, 1.4]) * rng.uniform(0.8, 1.2)))
    return out


def _fold_waves(seed: int) -> np.ndarray:
    """Wave vectors (rad/mm) of the mucosal fold pattern: three directions, about 6 mm apart."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(3, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return (2 * np.pi / 6.0 * dirs).astype(np.float32)


def _tube_paint_window(painter: Painter, canvas: Canvas, p, r, tissue, only=None) -> None:
    lo, hi = tube_bounds(p, r, 1.0)
    win = canvas.window(lo, hi)
    if win is not None:
        painter.paint(win, tube(win, p, r, margin=1.0) < 0, tissue, only=only)


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
    loops = bowel_loops(lay, params)
    # Mesenteric fat around the loops (denser, more vascular than subcutaneous fat) and its vessels.
    for pts, radii, _ in loops:
        p, r = catmull_rom(pts, radii + 9.0, 4.0)
        _tube_paint_window(painter, canvas, p, r, Tissue.VISCERAL_FAT, only=(Tissue.FAT,))
    vessel_tissue = Tissue.ARTERY if params.vessel_contrast else Tissue.VEIN
    for pts, radii in _mesenteric_vessels(lay, loops, params):
        _tube_paint(painter, canvas, pts, radii, vessel_tissue, only=(Tissue.VISCERAL_FAT, Tissue.FAT), step=3.0)
    fold_k = _fold_waves(params.layout_seed + 17)
    swell = np.float32(BOWEL_SWELL_MM * (1.0 - params.habitus))
    for n, (pts, radii, kind) in enumerate(loops):
        p, r = catmull_rom(pts, radii, 3.0)
        # Loops are soft: their outline bulges and dents where contents and neighbours press
        # (a displacement of about a fifth of the calibre), not a hose's round section.
        lumpy = Wobble(params.layout_seed + 1000 + n, 0.2 * float(r.mean()), (14.0, 36.0), terms=5)
        lo, hi = tube_bounds(p, r + lumpy.bound, 1.0)
        win = canvas.window(lo, hi)
        if win is None:
            continue
        d, dy = tube(win, p, r + lumpy.bound, margin=1.0, want_dy=True)
        d += np.float32(lumpy.bound) + lumpy(win.x, win.y, win.z)
        inside = d < 0
        lumen = inside & (d < -wall)
        painter.paint(win, inside, Tissue.BOWEL_WALL)
        # In a lean abdomen the loops fill the mesentery around them (collapsed bowel and
        # bowel wall of soft-tissue density meeting its neighbours), leaving little fat. The band
        # reaches at most 1 mm beyond the loop's largest bulge, where ``d`` is exact.
        painter.paint(win, (d >= 0) & (d < swell), Tissue.BOWEL_WALL, only=(Tissue.VISCERAL_FAT,))
        if kind == COLLAPSED:
            # Collapsed loop: mucosa and a thread of fluid, no open lumen.
            painter.paint(win, d < -0.7 * float(r.mean()), Tissue.BOWEL_FLUID)
            continue
        content = Tissue.BOWEL_CONTRAST if kind == CONTRAST else Tissue.BOWEL_FLUID
        painter.paint(win, lumen, content)
        if kind == GAS:
            painter.paint(win, lumen & (dy * up > np.float32(0.2 * float(r.mean()))), Tissue.BOWEL_GAS)
        else:
            # Mucosal folds (valvulae conniventes): thin ridges from the wall into the lumen.
            ridge = lumen & (d > -wall - np.float32(3.5))
            if ridge.any():
                w = np.zeros(win.shape, dtype=np.float32)
                for k in fold_k:
                    w = np.maximum(w, np.cos(k[0] * win.x + k[1] * win.y + k[2] * win.z))
                painter.paint(win, ridge & (w > np.float32(0.8)), Tissue.BOWEL_WALL)

    # Colon: caecum and ascending colon on the right, sigmoid and descending colon on the left;
    # mottled faeces (gas bubbles come from the texture) and gas on the non-dependent side.
    for pts, radii in colon_paths(lay):
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
