"""Body outline (skin, subcutaneous fat), muscles, and the CT couch of the phantom."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .layout import Layout, psoas_paths
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


@dataclass(frozen=True)
class CouchContact:
    """Where the body rests on the couch, and the couch build-up (anatomy frame, mm).

    ``sign`` is +1 when the couch is posterior (supine) and -1 when anterior (prone); ``y`` is the
    y of the surface the skin rests on (top of the mattress, or of the tabletop without one) at
    the midline; the surface rises towards the patient by
    ``lift(x) = COUCH_LIFT_MM * (x / COUCH_HALF_WIDTH_MM)**2`` at its edges (an almost flat top).
    ``mattress_mm`` is the radiotherapy pad between skin and tabletop (0 = none), ``table_mm`` the
    total tabletop thickness, ``press_mm`` how far (mm) the soft tissue on the couch side is
    pressed flat beyond the free outline (before ``press_body`` limits it to spare organs and bone).
    """

    sign: float
    y: float
    mattress_mm: float = 6.0
    table_mm: float = 50.0
    press_mm: float = 0.0

    def depth(self, x, y) -> np.ndarray:
        """Signed depth (mm) below the surface the skin rests on: > 0 inside the mattress and couch."""
        lift = np.float32(COUCH_LIFT_MM / COUCH_HALF_WIDTH_MM ** 2) * x * x
        return ((y - np.float32(self.y)) * np.float32(self.sign) + lift).astype(np.float32, copy=False)

    def pressed(self, mm: float) -> CouchContact:
        """The same couch with its surface moved ``mm`` towards the patient (and ``press_mm`` = 0)."""
        return replace(self, y=self.y - self.sign * mm, press_mm=0.0)


#: Rise (mm) of the tabletop at its edges (very slightly curved), and its half width (mm).
COUCH_LIFT_MM = 3.0
COUCH_HALF_WIDTH_MM = 250.0
#: Half width (mm) of the radiotherapy mattress on the tabletop.
MATTRESS_HALF_WIDTH_MM = 235.0
#: Thickness (mm) of the carbon-fibre skins of the tabletop.
COUCH_SHELL_MM = 2.0
#: Least distance (mm) kept between the pressed skin surface and any tissue other than fat and skin.
PRESS_CLEARANCE_MM = 4.0


def couch_contact(lay: Layout, params, position: str) -> CouchContact:
    """The couch surface the body rests on for a DICOM PatientPosition.

    Supine: the back lies on it, at the free posterior skin surface; prone: the belly and thighs
    sag onto it, the surface placed 10 mm behind the most protruding anterior point. The pad
    (none in a quarter of scans, else 3-15 mm), tabletop thickness (40-60 mm) and the soft-tissue
    compression (2-15 mm, at most 80 % of the couch-side fat) are drawn from ``params.layout_seed``.
    """
    rng = np.random.default_rng(params.layout_seed + 17)
    mattress = 0.0 if rng.random() < 0.25 else float(rng.uniform(3.0, 15.0))
    table = float(rng.uniform(40.0, 60.0))
    if position.endswith("S"):
        fat = lay.fat_post
        y, sign = lay.back_y + lay.fat_post, 1.0
    else:
        zz = np.linspace(lay.trunk_bottom_z + 10.0, float(lay.body_z_table[-2]), 64)
        b = np.interp(zz, lay.body_z_table, lay.lean_b)
        front = lay.back_y - 2.0 * b - lay.fat_ant * (1.0 + _pannus(lay, zz))
        fat = lay.fat_ant
        y, sign = float(front.min()) + 10.0, -1.0
    press = min(float(rng.uniform(2.0, 15.0)), 0.8 * fat)
    return CouchContact(sign, float(y), mattress, table, press)


def _pannus(lay: Layout, z):
    # Extra anterior fat (fraction of fat_ant) of the lower abdominal wall in heavier patients.
    return lay.pannus * np.exp(-(((z - 70.0 * lay.s) / (55.0 * lay.s)) ** 2))


def _buttock(lay: Layout, z):
    # Extra posterolateral width (mm) of the buttocks below S2.
    return (14.0 * lay.s + 0.35 * lay.fat_post) * np.exp(-(((z + 10.0 * lay.s) / (45.0 * lay.s)) ** 2))


def body_sdf(win: Window, lay: Layout, wobble, with_fat: bool, profiles=None,
             couch: CouchContact | None = None) -> np.ndarray:
    """Signed distance (mm) to the body outline (``with_fat``) or to the lean, under-fat outline.

    With ``couch``, the outline is pressed flat against the couch top: the side towards the
    couch is extended until it reaches the surface everywhere, then cut by it.
    """
    x, y, z = win.x, win.y, win.z
    a, b = profiles if profiles is not None else _profiles(lay, z)
    yc = np.float32(lay.back_y) - b
    s = lay.s
    yy = y - yc
    if with_fat:
        f_lat = np.float32(lay.fat_lat)
        f_ant = np.float32(lay.fat_ant) * (1.0 + _pannus(lay, z)).astype(np.float32)
        f_post = np.float32(lay.fat_post)
        # Buttocks widen the posterior half below S2; fat is thickest anterolaterally when obese.
        a_post = a + f_lat + _buttock(lay, z).astype(np.float32)
        a_ant = a + f_lat * np.float32(1.0 + 0.25 * lay.pannus)
        # Blend front and back widths smoothly across the coronal midplane (no step in the outline).
        w = np.float32(0.5) + np.float32(0.5) * np.tanh(yy / np.float32(30.0))
        half_lr = a_ant + (a_post - a_ant) * w
    else:
        f_ant = f_post = np.float32(0.0)
        half_lr = a
    half_ant = b + f_ant
    prone = couch is not None and couch.sign < 0 and with_fat
    # Supine the back is flattened (cut below), so its ellipse reaches further; prone it is round.
    half_post = b + f_post + np.float32(0.0 if prone else 30.0 * s)
    if couch is not None and with_fat:
        if couch.sign > 0:
            half_post = np.maximum(half_post, np.float32(couch.y) - yc + np.float32(6.0))
        else:
            half_ant = np.maximum(half_ant, yc - np.float32(couch.y) + np.float32(6.0))
    half_ap = np.where(yy < 0, half_ant, half_post)
    d = superellipse(x, yy, half_lr, half_ap, 2.5)
    if with_fat:
        d += wobble(x, y, z)
    if not prone:
        # A flat back with rounded corners (a smooth maximum), not angled ones.
        d = -smooth_min(-d, -(y - np.float32(lay.back_y + (lay.fat_post if with_fat else 0.0))), 22.0)
    np.maximum(d, np.float32(lay.trunk_bottom_z) - z, out=d)
    top = np.float32(-30.0 * s)
    if float(z.min()) < top + 25.0:
        fa, fp, fl = (lay.fat_ant, lay.fat_post, lay.fat_lat) if with_fat else (0.0, 0.0, 0.0)
        for side in (1, -1):
            cx = side * (82.0 * s + 0.4 * fl)
            cy = 14.0 * s
            th_half = 68.0 * s + 0.5 * (fa + fp)
            half_y = np.float32(th_half)
            if couch is not None and with_fat:
                half_y = np.float32(max(th_half, abs(couch.y - cy) + 6.0))
                # Only the couch side of the thigh is extended.
                w = np.float32(0.5) + np.float32(0.5) * np.tanh((y - np.float32(cy)) * np.float32(couch.sign) / 20.0)
                half_y = np.float32(th_half) + (half_y - np.float32(th_half)) * w
            th = superellipse(x - np.float32(cx), y - np.float32(cy), np.float32(60.0 * s + fl), half_y, 2)
            np.maximum(th, z - top, out=th)
            d = smooth_min(d, th, 18.0)
    if couch is not None and with_fat:
        np.maximum(d, couch.depth(x, y), out=d)
    return d


#: Slices per chunk when painting the body, to bound temporary memory.
CHUNK_SLICES = 12


def paint_body(painter: Painter, lay: Layout, params, couch: CouchContact | None = None) -> np.ndarray:
    """Paint fat, skin and the muscular wall over the whole grid; returns the body mask.

    With ``couch``, the body is pressed flat against the couch top (see ``body_sdf``).
    """
    canvas = painter.canvas
    wob = Wobble(params.layout_seed + 1, 2.5, (60.0, 160.0), terms=3)
    body = np.zeros(canvas.shape, dtype=bool)
    s = lay.s
    for k0 in range(0, canvas.shape[0], CHUNK_SLICES):
        win = canvas.slab(k0, min(k0 + CHUNK_SLICES, canvas.shape[0]))
        x, y, z = win.x, win.y, win.z
        prof = _profiles(lay, z)
        d_body = body_sdf(win, lay, wob, True, prof, couch)
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
        # Below the iliac crests the flank and back are gluteal muscle (painted separately), not a wall.
        ring &= (z > np.float32(125 * s)) | (y < np.float32(lay.back_y) - b * np.float32(1.15))
        ring |= (lean < 0) & (z < np.float32(-70 * s)) & (np.abs(x) > 30 * s)  # thigh muscles
        painter.paint(win, ring & inside, Tissue.MUSCLE)
    return body


def paint_muscles(painter: Painter, lay: Layout, params, canvas: Canvas) -> None:
    """Paraspinal muscles, psoas, piriformis and levator ani.

    The gluteal, hip and sidewall muscles below the iliac crests fill the lean body outside
    the cavities (``compartments.paint_muscle_compartments``); iliacus lines the iliac fossa
    (``skeleton.paint_iliacus``).
    """
    s, by = lay.s, lay.back_y
    ell = []
    for side in (1, -1):
        ell += [
            ((side * 32 * s, by - 24 * s, 250 * s), (26 * s, 22 * s, 200 * s), None),   # erector spinae
            ((side * 62 * s, by - 38 * s, 230 * s), (18 * s, 14 * s, 80 * s), None),    # quadratus lumborum
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
        # Psoas down the lumbar spine, joining iliacus at the brim and running in front of the hip.
        psoas, pr = psoas_paths(lay)[0 if side > 0 else 1]
        _tube_paint(painter, canvas, psoas, pr, Tissue.MUSCLE)
        piri = np.array([[18, 76, 72], [40, 76, 60], [70, 60, 35], [112, 25, -12]], float) * s * m
        _tube_paint(painter, canvas, piri, np.array([9, 11, 11, 7]) * s, Tissue.MUSCLE)

    # Levator ani: a thin sling from the sidewalls around the vagina and anorectum.
    lo = np.array([-70 * s, -40 * s, -60 * s])
    hi = np.array([70 * s, 85 * s, 0.0])
    win = canvas.window(lo, hi)
    if win is not None:
        rho = np.sqrt(win.x ** 2 + ((win.y - np.float32(22 * s)) / 1.25) ** 2)
        r = np.float32(20 * s) + (win.z + np.float32(52 * s)) * 0.85
        d = np.maximum(np.abs(rho - r) - 1.8, np.maximum(-52 * s - win.z, win.z + 8 * s))
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
    """(max |x|, min y, max y) of the body outline (mm) over ``z_lo..z_hi``, with a safety margin.

    Holds for every patient position (the prone couch surface lies behind the most anterior point).
    """
    zz = np.linspace(z_lo, z_hi, 256)
    a = np.interp(zz, lay.body_z_table, lay.lean_a)
    b = np.interp(zz, lay.body_z_table, lay.lean_b)
    below = zz < lay.trunk_bottom_z
    a = np.where(below, 0.0, a + lay.fat_lat * (1.0 + 0.25 * lay.pannus) + _buttock(lay, zz))
    wob = Wobble(params.layout_seed + 1, 2.5, (60.0, 160.0), terms=3).bound
    half_x = max(float(np.max(a)), 82 * lay.s + 0.4 * lay.fat_lat + 60 * lay.s + lay.fat_lat) + wob
    yc = lay.back_y - b
    front = yc - b - lay.fat_ant * (1.0 + _pannus(lay, zz))
    y_front = float(np.min(np.where(below, 14 * lay.s - 68 * lay.s - lay.fat_ant, front))) - wob
    y_back = lay.back_y + lay.fat_post
    return half_x, y_front, y_back


def press_body(painter: Painter, win: Window, body: np.ndarray, couch: CouchContact) -> CouchContact:
    """Flatten the couch side of the body by up to ``couch.press_mm``; returns the pressed couch.

    Only subcutaneous fat and skin are shaved: the press is reduced so the new surface stays
    ``PRESS_CLEARANCE_MM`` clear of every other tissue in ``win``. Voxels beyond the new surface
    leave ``body`` (a view of the body mask over ``win``, updated in place) and become air; the
    caller then lays skin along the new surface (``repaint_skin``).
    """
    u = couch.depth(win.x, win.y)
    labels = painter.labels[win.sl]
    deep = body & (labels != np.uint8(Tissue.FAT)) & (labels != np.uint8(Tissue.SKIN))
    closest = float(u[deep].max()) if deep.any() else -np.inf  # < 0: depth of the nearest non-fat tissue
    press = float(np.clip(min(couch.press_mm, -closest - PRESS_CLEARANCE_MM), 0.0, None))
    pressed = couch.pressed(press)
    if press <= 0.0:
        return pressed
    u -= np.float32(press)
    cut = body & (u >= 0)
    body &= ~cut
    labels[cut] = np.uint8(Tissue.AIR)
    return pressed


def repaint_skin(painter: Painter, win: Window, body: np.ndarray, couch: CouchContact, skin_mm: float) -> None:
    """Skin (``skin_mm`` thick) along the flattened, couch-side surface of the body in ``win``."""
    u = couch.depth(win.x, win.y)
    painter.paint(win, body & (u > -np.float32(skin_mm)), Tissue.SKIN, only=(Tissue.FAT, Tissue.SKIN))


def _sampled_thickness(win: Window, mm: float) -> np.float32:
    """``mm``, or the in-plane y step (mm) of one voxel if larger, so a thin horizontal layer is
    hit by every column of the grid (real scanners show it partial-volume averaged, not missing)."""
    step_y = float(np.abs(win.canvas.step[1, :2]).max())
    return np.float32(max(mm, step_y))


def paint_couch(painter: Painter, win: Window, body: np.ndarray, couch: CouchContact) -> None:
    """The radiotherapy mattress and a flat carbon-fibre tabletop under the body.

    The mattress fills from the surface the skin rests on to ``couch.mattress_mm`` below it; the
    tabletop below is ``couch.table_mm`` thick, ``2 * COUCH_HALF_WIDTH_MM`` wide (cut by the field
    of view): two ``COUCH_SHELL_MM`` carbon skins and side walls around a low-density foam core.
    """
    u = couch.depth(win.x, win.y)
    x = win.x
    outside = ~body
    shell_mm = _sampled_thickness(win, COUCH_SHELL_MM)
    top = np.float32(couch.mattress_mm)
    mattress = (u >= -0.5) & (u < top) & (np.abs(x) < MATTRESS_HALF_WIDTH_MM)
    painter.paint(win, mattress & outside, Tissue.MATTRESS)
    bottom = top + np.float32(couch.table_mm)
    edge = np.abs(x) - np.float32(COUCH_HALF_WIDTH_MM)
    inside = (u >= top) & (u < bottom) & (edge < 0)
    shell = inside & ((u < top + shell_mm) | (u > bottom - shell_mm) | (edge > -shell_mm - 1.0))
    painter.paint(win, inside & outside, Tissue.COUCH_CORE)
    painter.paint(win, shell & outside, Tissue.COUCH_SHELL)
