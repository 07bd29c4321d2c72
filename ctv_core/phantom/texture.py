"""Image formation of the phantom: tissue texture, CT noise, metal streaks and beam hardening.

Random fields (:mod:`ctv_core.noise_fields`) are drawn from the ``rng`` passed to the renderer
on the output grid; their correlation lengths are given in mm and converted per axis with the
grid spacing.
"""

from __future__ import annotations

import numpy as np

from ..noise_fields import correlated_noise
from .shapes import Canvas


def fat_septa(field: np.ndarray, width: float = 0.07) -> np.ndarray:
    """Thin line network (0..1) where a smooth unit-variance random ``field`` crosses zero.

    The zero level set of a smooth Gaussian field is a web of curved lines whose spacing is
    about the field's correlation length; ``width`` (in units of the field) sets their thickness.
    """
    out = field * np.float32(1.0 / width)
    np.square(out, out=out)
    np.negative(out, out=out)
    np.exp(out, out=out)
    return out


def streaks(canvas: Canvas, sources: list, others: list, rng: np.random.Generator, body: np.ndarray,
            strength: float, z_range: tuple[float, float], out: np.ndarray) -> None:
    """Add radial streaks around dense objects and dark bands between dense objects, axially.

    Parameters
    ----------
    sources
        Anatomy-frame (x, y) centres (mm) of objects that throw radial streaks (metal).
    others
        (x, y) centres of other dense objects (bone) joined by dark bands to the sources and
        each other.
    strength
        Peak amplitude in HU (about 300-600 for metal, 20-40 for bone beam hardening).
    z_range
        Anatomy-frame z (mm) extent of the slices where the dense objects are.
    out
        HU array ``[k, j, i]`` to add into (only inside ``body``).
    """
    lo = np.array([-400.0, -400.0, z_range[0]])
    hi = np.array([400.0, 400.0, z_range[1]])
    win = canvas.window(lo, hi)
    if win is None:
        return
    x, y, z = win.x, win.y, win.z
    zc, zh = 0.5 * (z_range[0] + z_range[1]), 0.5 * (z_range[1] - z_range[0])
    zw = np.clip(1.5 - 1.5 * np.abs(z - np.float32(zc)) / np.float32(zh), 0.0, 1.0).astype(np.float32)
    acc = np.zeros(win.shape, dtype=np.float32)
    pts = list(sources) + list(others)
    for c in sources:
        dx, dy = x - np.float32(c[0]), y - np.float32(c[1])
        r = np.sqrt(dx * dx + dy * dy) + np.float32(1.0)
        # Thin lines through the metal, alternating bright and dark, fading with distance.
        n_rays = 26
        angles = np.sort(rng.uniform(0, np.pi, n_rays))
        amps = rng.uniform(0.25, 1.0, n_rays) * np.where(np.arange(n_rays) % 2 == 0, 1.0, -1.0)
        widths = rng.uniform(1.0, 2.2, n_rays)
        fade = np.float32(45.0) / (r + np.float32(45.0))
        for a, amp, w in zip(angles, amps, widths):
            perp = np.abs(dx * np.float32(np.sin(a)) - dy * np.float32(np.cos(a)))
            acc += np.float32(amp * strength) * np.exp(-(perp / np.float32(w)) ** 2) * fade
    for a_i in range(len(pts)):
        for b_i in range(a_i + 1, len(pts)):
            a, b = np.asarray(pts[a_i], float), np.asarray(pts[b_i], float)
            ab = b - a
            l2 = float(ab @ ab)
            t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1]) / np.float32(l2), 0, 1)
            px, py = x - (a[0] + t * ab[0]), y - (a[1] + t * ab[1])
            band = np.exp(-(px * px + py * py) / np.float32(2 * 6.0 ** 2))
            acc -= np.float32(strength * 0.35) * band * (np.float32(0.3) + np.sin(np.pi * t).astype(np.float32))
    acc *= zw
    view = out[win.sl]
    m = body[win.sl]
    view[m] += acc[m]


#: Gaussian sigma (mm) of the in-plane noise grain: a correlation length of about 1-2 mm (FWHM 1.9 mm).
NOISE_GRAIN_MM = 0.8


def ct_noise(rng: np.random.Generator, canvas: Canvas, spacing_kji, body: np.ndarray, sd_hu: float,
             habitus: float) -> np.ndarray:
    """Quantum noise of a reconstructed CT, in HU, ``[k, j, i]`` float32.

    - Texture: white Gaussian noise blurred in the axial plane only (axes j and i, by their
      pixel spacings) with a ``NOISE_GRAIN_MM`` Gaussian, so the grain is isotropic in-plane and
      independent from slice to slice, then rescaled to unit standard deviation.
    - Level: ``sd_hu`` in the central soft tissue, about 0.75-0.85 x that at the body's edge (the
      rise towards the centre is stronger in larger patients: longer X-ray paths); 0.7 x outside.

    ``spacing_kji`` is the grid spacing (mm) in array axis order (slices, rows, columns).
    """
    shape = body.shape
    noise = correlated_noise(rng, shape, spacing_kji, NOISE_GRAIN_MM, axes=(1, 2), truncate=3.0)
    centre_gain = np.float32(0.15 + 0.15 * habitus)
    for k0 in range(0, shape[0], 16):
        win = canvas.slab(k0, min(k0 + 16, shape[0]))
        x, y = win.x, win.y
        w = np.exp(-(x * x) / np.float32(2 * 110.0 ** 2) - (y * y) / np.float32(2 * 80.0 ** 2))
        gain = np.float32(0.8) + centre_gain * w
        out = noise[win.sl]
        out *= gain
        out[~body[win.sl]] *= np.float32(0.7)
        out *= np.float32(sd_hu / (0.8 + float(centre_gain)))
    return noise
