"""Muscle compartments of the pelvis and hips: the lean body below the iliac crests is muscle.

In a real pelvis, everything under the subcutaneous fat that is not the pelvic cavity, the
ischioanal fossae or the femoral triangles is muscle: gluteus maximus behind the sacrum and the
hips, gluteus medius and minimus lateral to the iliac wings, iliopsoas in front of the hip,
obturator internus lining the bony sidewall, the thigh muscles below. Those muscles are
separated by thin fat planes, not outlined one by one. So instead of painting a list of
ellipsoids, the lean body is filled with muscle outside the cavities and crossed by a web of
thin curved fat planes (the zero level set of a smooth random field of the anatomy frame, so
the same anatomy has the same planes on every grid).
"""

from __future__ import annotations

import numpy as np

from .body import CHUNK_SLICES, _NO_WOBBLE, Painter, body_sdf
from .layout import Layout
from .shapes import Canvas, tube, tube_bounds
from .skeleton import iliac_wing
from .tissues import Tissue

#: Thickness (mm) of obturator internus on the inner side of the bony pelvic sidewall.
OBTURATOR_MM = 10.0
#: Half thickness (mm) of the intermuscular fat planes.
PLANE_HALF_MM = 0.7
#: Fat kept around the femoral and external iliac vessels (femoral triangle, vascular lacuna), mm.
VESSEL_FAT_MM = 7.0


class PlaneField:
    """Smooth random field of the anatomy frame whose zero level set is a web of curved planes.

    ``distance(x, y, z)`` estimates the distance (mm) to the nearest plane: ``|F| / rms|grad F|``.
    """

    def __init__(self, seed: int, wavelength_mm=(60.0, 140.0), terms: int = 6):
        rng = np.random.default_rng(seed)
        # Normals spread evenly around the axial plane (a random draw of a few can all align,
        # which gives parallel straight lines), tilted a little: muscles run mostly head-feet.
        ang = rng.uniform(0, np.pi) + np.pi * np.arange(terms) / terms
        tilt = rng.uniform(-0.45, 0.45, size=terms)
        dirs = np.column_stack([np.cos(ang), np.sin(ang), tilt])
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lam = rng.uniform(*wavelength_mm, size=terms)
        self.k = (2 * np.pi * dirs / lam[:, None]).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, size=terms).astype(np.float32)
        self.inv_grad = np.float32(1.0 / np.sqrt(0.5 * np.sum(self.k ** 2)))

    def distance(self, x, y, z) -> np.ndarray:
        out = np.zeros(np.shape(x), dtype=np.float32)
        for k, ph in zip(self.k, self.phase):
            out += np.cos(k[0] * x + k[1] * y + k[2] * z + ph)
        np.abs(out, out=out)
        out *= self.inv_grad
        return out


class _AbsX:
    """A window seen with ``x`` replaced by ``|x|`` (both iliac wings with one call)."""

    def __init__(self, win):
        self.x, self.y, self.z = np.abs(win.x), win.y, win.z


def muscle_fill_mask(win, lay: Layout, lean: np.ndarray) -> np.ndarray:
    """Where the lean body (``lean`` < 0) is muscle rather than cavity fat, on one window."""
    s = lay.s
    x, y, z = win.x, win.y, win.z
    ax = np.abs(x)
    # The cavity narrows towards the pubis and the coccyx (a curved sidewall, not a straight one).
    yy = (y - np.float32(15 * s)) / np.float32(s)
    cav_half = lay.sidewall_x(z) - np.float32(OBTURATOR_MM * s) - np.minimum(np.float32(0.004) * yy * yy, 22.0) * s
    # At and below the acetabular roof: lateral to the obturator internus lining.
    low = (z <= np.float32(35 * s)) & (ax > cav_half)
    # Above it: lateral to the iliac wing (gluteus medius, minimus), behind its front edge.
    _, mid, t = iliac_wing(_AbsX(win), lay, 1)
    lateral = ax - (mid + t * np.float32(0.5) - np.float32(2.0))
    # The front edge of gluteus medius runs back and out from the anterior superior iliac spine.
    wing = (z > np.float32(35 * s)) & (lateral > 0) & (y + np.float32(34 * s) > np.float32(0.8) * lateral)
    # Behind the sacrum (multifidus, gluteus maximus) and behind the anorectum below the coccyx.
    ys, ws, ds = lay.sacrum_at(z)
    back = np.where(z > np.float32(-10 * s), ys + ds * np.float32(0.8), np.float32(86 * s))
    cleft = np.where(z < np.float32(30 * s), np.float32(12 * s), np.float32(0.0))  # natal cleft
    post = (y > back) & (ax > cleft)
    fill = (lean < -0.5) & (low | wing | post) & (z < np.float32(138 * s))
    # Fat in front of the pubis (mons) and below the inguinal ligament medially.
    fill &= ~((y < np.float32(-52 * s)) & (ax < np.float32(48 * s)) & (z < np.float32(30 * s)))
    return fill


def paint_muscle_compartments(painter: Painter, lay: Layout, params, canvas: Canvas) -> None:
    """Fill the lean pelvis and hips with muscle (outside the cavities), with thin fat planes."""
    s = lay.s
    planes = PlaneField(params.layout_seed + 21)
    z_top = 138.0 * s
    vessels = [v for v in lay.vessels if v.name[:3] in ("fa_", "fv_", "eia", "eiv")]
    for k0 in range(0, canvas.shape[0], CHUNK_SLICES):
        win = canvas.slab(k0, min(k0 + CHUNK_SLICES, canvas.shape[0]))
        if float(win.z.min()) > z_top:
            continue
        lean = body_sdf(win, lay, _NO_WOBBLE, with_fat=False)
        fill = muscle_fill_mask(win, lay, lean)
        del lean
        if not fill.any():
            continue
        fill &= planes.distance(win.x, win.y, win.z) > np.float32(PLANE_HALF_MM)
        for v in vessels:
            lo, hi = tube_bounds(v.pts, v.radii, VESSEL_FAT_MM + 1.0)
            loc = win.local(lo, hi)
            if loc is None:
                continue
            sub = win.sub(loc)
            near = tube(sub, v.pts, v.radii + VESSEL_FAT_MM, margin=1.0) < 0
            fill[loc] &= ~near
        painter.paint(win, fill, Tissue.MUSCLE, only=(Tissue.FAT,))
