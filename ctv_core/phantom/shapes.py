"""Implicit shapes evaluated on sub-boxes of a grid, in the phantom's anatomy frame.

The anatomy frame is LPS in mm with its origin midway between the femoral head centres. A
``Canvas`` maps an anatomy-frame bounding box to the index sub-box of a (possibly oblique,
anisotropic) grid that can contain it, and gives the anatomy-frame coordinates of the voxel
centres of that sub-box. Shapes are signed distance estimates in mm (negative inside), so a
surface shell of a given thickness in mm is ``-t < sdf <= 0`` whatever the voxel spacing.
Arrays are ``[k, j, i]`` float32 like everywhere in ctv_core.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..geometry import Grid

#: Distance value meaning "far from this shape" (outside the evaluated margin).
FAR = np.float32(1.0e4)


@dataclass
class Window:
    """Voxels of a grid sub-box with their anatomy-frame coordinates.

    Attributes
    ----------
    sl
        ``(k, j, i)`` slices of the sub-box in the full grid array.
    x, y, z
        Anatomy-frame LPS coordinates (mm) of the voxel centres, float32 ``[k, j, i]``.
    canvas
        The canvas the window belongs to (used to cut sub-windows).
    """

    sl: tuple[slice, slice, slice]
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    canvas: Canvas

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.x.shape

    def sub(self, loc: tuple[slice, slice, slice]) -> Window:
        """The part ``loc`` (slices relative to this window, as :meth:`local` gives them) as a window."""
        sl = tuple(slice(p.start + q.start, p.start + q.stop) for p, q in zip(self.sl, loc))
        return Window(sl, self.x[loc], self.y[loc], self.z[loc], self.canvas)

    def local(self, lo, hi) -> tuple[slice, slice, slice] | None:
        """Slices, relative to this window, of the part that can hold the box ``[lo, hi]`` (mm)."""
        full = self.canvas.index_box(lo, hi)
        if full is None:
            return None
        out = []
        for a, b in zip(full, self.sl):
            start = max(a.start, b.start)
            stop = min(a.stop, b.stop)
            if stop <= start:
                return None
            out.append(slice(start - b.start, stop - b.start))
        return tuple(out)


class Canvas:
    """A grid seen from the anatomy frame: anatomy point ``a`` is at LPS ``a + offset``.

    Parameters
    ----------
    grid
        The output grid (any direction, any spacing).
    offset_mm
        LPS position (mm) of the anatomy-frame origin.
    """

    def __init__(self, grid: Grid, offset_mm: tuple[float, float, float]):
        self.grid = grid
        self.shape = grid.shape
        self.step = grid.direction_matrix * np.asarray(grid.spacing, dtype=float)  # columns: i, j, k steps
        self.inv_step = np.linalg.inv(self.step)
        self.origin = np.asarray(grid.origin, dtype=float) - np.asarray(offset_mm, dtype=float)
        self.size = np.asarray(grid.size)

    def index_box(self, lo, hi) -> tuple[slice, slice, slice] | None:
        """``(k, j, i)`` slices of the grid voxels that can lie in the anatomy box ``[lo, hi]`` (mm)."""
        corners = np.array(list(itertools.product(*zip(lo, hi))), dtype=float)
        ijk = (corners - self.origin) @ self.inv_step.T
        start = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
        stop = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, self.size)
        if np.any(stop <= start):
            return None
        return (slice(start[2], stop[2]), slice(start[1], stop[1]), slice(start[0], stop[0]))

    def window(self, lo=None, hi=None) -> Window | None:
        """The window of the anatomy box ``[lo, hi]`` (mm), or of the whole grid when omitted."""
        if lo is None:
            sl = (slice(0, self.shape[0]), slice(0, self.shape[1]), slice(0, self.shape[2]))
        else:
            sl = self.index_box(lo, hi)
            if sl is None:
                return None
        return self._window(sl)

    def _window(self, sl) -> Window:
        k = np.arange(sl[0].start, sl[0].stop, dtype=np.float32)[:, None, None]
        j = np.arange(sl[1].start, sl[1].stop, dtype=np.float32)[None, :, None]
        i = np.arange(sl[2].start, sl[2].stop, dtype=np.float32)[None, None, :]
        coords = []
        for a in range(3):
            s = self.step[a].astype(np.float32)
            c = (np.float32(self.origin[a]) + s[2] * k) + s[1] * j + s[0] * i
            coords.append(np.ascontiguousarray(np.broadcast_to(c, (k.size, j.size, i.size)), dtype=np.float32))
        return Window(sl, coords[0], coords[1], coords[2], self)

    def slab(self, k0: int, k1: int) -> Window:
        """The window of slices ``k0:k1`` (all rows and columns)."""
        return self._window((slice(k0, k1), slice(0, self.shape[1]), slice(0, self.shape[2])))

    def z_range(self) -> tuple[float, float]:
        """Anatomy-frame z extent (mm) of the grid's voxel centres."""
        corners = np.array(list(itertools.product(*[(0, n - 1) for n in self.size])), dtype=float)
        z = (corners @ self.step.T + self.origin)[:, 2]
        return float(z.min()), float(z.max())


# ----------------------------------------------------------------------------- primitives


def ellipsoid(x, y, z, centre, radii, rotation=None) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid; ``rotation`` rows are its local axes."""
    px = x - np.float32(centre[0])
    py = y - np.float32(centre[1])
    pz = z - np.float32(centre[2])
    if rotation is not None:
        r = np.asarray(rotation, dtype=np.float32)
        px, py, pz = (r[0, 0] * px + r[0, 1] * py + r[0, 2] * pz,
                      r[1, 0] * px + r[1, 1] * py + r[1, 2] * pz,
                      r[2, 0] * px + r[2, 1] * py + r[2, 2] * pz)
    a, b, c = (np.float32(v) for v in radii)
    k0 = np.sqrt((px / a) ** 2 + (py / b) ** 2 + (pz / c) ** 2)
    k1 = np.sqrt((px / (a * a)) ** 2 + (py / (b * b)) ** 2 + (pz / (c * c)) ** 2)
    return (k0 * (k0 - 1.0) / np.maximum(k1, np.float32(1e-6))).astype(np.float32)


def superellipse(u, v, a, b, n) -> np.ndarray:
    """Signed distance estimate (mm) to the 2D superellipse ``|u/a|^n + |v/b|^n = 1``.

    ``a`` and ``b`` may be arrays (profiles varying along the third axis); ``n`` is 2 or 2.5
    (the two exponents with a pow-free fast path) or any other value > 1. The implicit value is
    divided by its gradient norm, so the estimate is close to the Euclidean distance near the
    surface (which is where thicknesses are measured).
    """
    ua = np.abs(u) / a
    vb = np.abs(v) / b
    if n == 2:
        pu, pv = ua, vb
    elif n == 2.5:
        pu, pv = ua * np.sqrt(ua), vb * np.sqrt(vb)
    else:
        pu, pv = ua ** np.float32(n - 1), vb ** np.float32(n - 1)
    q = pu * ua + pv * vb
    gu = pu / a
    gv = pv / b
    g = np.sqrt(gu * gu + gv * gv) * np.float32(n) + np.float32(1e-6)
    return ((q - 1.0) / g).astype(np.float32, copy=False)


def smooth_min(a, b, k: float) -> np.ndarray:
    """Polynomial smooth minimum (union) of two distance fields with blend radius ``k`` mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return (b * (1 - h) + a * h - k * h * (1 - h)).astype(np.float32)


def rotation_x(deg: float) -> np.ndarray:
    """Rows = local axes of a frame rotated by ``deg`` about x (sagittal tilt)."""
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=float)


def frame_from_axis(axis, lateral=(1.0, 0.0, 0.0)) -> np.ndarray:
    """Rows = (lateral, second, axis) orthonormal frame whose third axis is ``axis``."""
    w = np.asarray(axis, float)
    w = w / np.linalg.norm(w)
    u = np.asarray(lateral, float)
    u = u - w * np.dot(u, w)
    u = u / np.linalg.norm(u)
    v = np.cross(w, u)
    return np.array([u, v, w])


# ----------------------------------------------------------------------------- tubes


def catmull_rom(points, radii, step_mm: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Dense samples (about ``step_mm`` apart) of a Catmull-Rom spline through ``points``.

    Returns ``(pts (N, 3), radii (N,))`` with radii linearly interpolated between control points.
    """
    p = np.asarray(points, dtype=float)
    r = np.asarray(radii, dtype=float)
    if r.ndim == 0:
        r = np.full(len(p), float(r))
    ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out_p, out_r = [], []
    for s in range(len(p) - 1):
        p0, p1, p2, p3 = ext[s], ext[s + 1], ext[s + 2], ext[s + 3]
        n = max(2, int(np.ceil(np.linalg.norm(p2 - p1) / step_mm)))
        t = np.linspace(0.0, 1.0, n, endpoint=False)[:, None]
        seg = 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                     + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3)
        out_p.append(seg)
        out_r.append(r[s] + (r[s + 1] - r[s]) * t[:, 0])
    out_p.append(p[-1:])
    out_r.append(r[-1:])
    return np.vstack(out_p), np.concatenate(out_r)


def tube_bounds(pts, radii, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Anatomy-frame bounding box (mm) of a tube grown by ``margin``."""
    pad = float(np.max(radii)) + margin
    return pts.min(axis=0) - pad, pts.max(axis=0) + pad


def tube(win: Window, pts, radii, margin: float = 3.0, want_dy: bool = False):
    """Signed distance (mm) to a tube of varying radius along a polyline.

    Evaluated exactly within ``margin`` mm of the surface; further away the value is ``FAR``
    or a larger-than-true distance. With ``want_dy``, also returns ``y - y_axis`` (mm), the
    anterior-posterior offset of each voxel from the nearest axis point (for fluid levels).
    """
    d = np.full(win.shape, FAR, dtype=np.float32)
    dy = np.zeros(win.shape, dtype=np.float32) if want_dy else None
    pts = np.asarray(pts, dtype=float)
    radii = np.asarray(radii, dtype=float)
    for s in range(len(pts) - 1):
        a, b = pts[s], pts[s + 1]
        ra, rb = radii[s], radii[s + 1]
        pad = max(ra, rb) + margin
        loc = win.local(np.minimum(a, b) - pad, np.maximum(a, b) + pad)
        if loc is None:
            continue
        x, y, z = win.x[loc], win.y[loc], win.z[loc]
        ab = (b - a).astype(np.float32)
        l2 = np.float32(max(float(np.dot(ab, ab)), 1e-9))
        ax, ay, az = (np.float32(v) for v in a)
        t = ((x - ax) * ab[0] + (y - ay) * ab[1] + (z - az) * ab[2]) / l2
        np.clip(t, 0.0, 1.0, out=t)
        qx = x - (ax + t * ab[0])
        qy = y - (ay + t * ab[1])
        qz = z - (az + t * ab[2])
        dist = np.sqrt(qx * qx + qy * qy + qz * qz) - (np.float32(ra) + t * np.float32(rb - ra))
        cur = d[loc]
        better = dist < cur
        cur[better] = dist[better]
        if want_dy:
            dy[loc][better] = qy[better]
    return (d, dy) if want_dy else d


# ----------------------------------------------------------------------------- smooth noise


class Wobble:
    """Smooth, grid-independent displacement field: a sum of random plane waves (mm).

    Because it is a function of anatomy coordinates only, the same anatomy rendered on any
    grid has the same surfaces.
    """

    def __init__(self, seed: int, amplitude_mm: float, wavelength_mm: tuple[float, float] = (30.0, 80.0),
                 terms: int = 4):
        rng = np.random.default_rng(seed)
        dirs = rng.normal(size=(terms, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lam = rng.uniform(*wavelength_mm, size=terms)
        self.k = (2 * np.pi * dirs / lam[:, None]).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, size=terms).astype(np.float32)
        self.amp = np.float32(amplitude_mm * np.sqrt(2.0 / terms))

    def __call__(self, x, y, z) -> np.ndarray:
        out = np.zeros(np.shape(x), dtype=np.float32)
        for k, ph in zip(self.k, self.phase):
            out += np.cos(k[0] * x + k[1] * y + k[2] * z + ph)
        out *= self.amp
        return out

    @property
    def bound(self) -> float:
        """Upper bound of ``|displacement|`` in mm."""
        return float(self.amp) * len(self.phase)
