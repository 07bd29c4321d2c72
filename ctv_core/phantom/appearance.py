"""Appearance shifts: the same phantom anatomy scanned and reconstructed unlike the realistic rendering.

A model that learned the phantom's look rather than its anatomy fails when the look changes; these
shifts measure that (``benchmarks/appearance_shift.py``) and let anyone write shifted phantoms
(``ctv phantom --appearance NAME``). Each is a setting the realistic rendering never produces,
applied where a scanner would apply it: on the CT grid, at the CT's resolution, before the CT is
written. The anatomy, the truth and the grid are the realistic phantom's (thick slices excepted:
their truth is averaged with the image).

================  ==========================================================================
name              what changes
================  ==========================================================================
realistic         nothing (the phantom as ``ctv phantom`` draws it)
hu_offset_+40     every CT number +40 HU (a miscalibrated scanner)
hu_offset_-40     every CT number -40 HU
sharp_kernel      in-plane unsharp masking (Gaussian sigma 1 mm, amount 1.5): edge overshoot, louder noise
smooth_kernel     in-plane Gaussian blur of sigma 1.5 mm
noise_x3          three times the quantum noise (a low-dose scan)
excretory         delayed-phase contrast: urine 650 HU, arteries 300 HU, veins 220 HU
thick_5mm         5 mm slices, each the mean of four 1.25 mm slices (partial volume along z)
fov_cut           reconstruction circle of 80 % of the body's half width, air outside
================  ==========================================================================
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from ..geometry import Grid
from .anatomy import AnatomyParams, RenderedPhantom, body_half_extent_mm, render_phantom

APPEARANCES = ("realistic", "hu_offset_+40", "hu_offset_-40", "sharp_kernel", "smooth_kernel", "noise_x3",
               "excretory", "thick_5mm", "fov_cut")
#: Fine slices averaged into one thick slice by ``thick_5mm``, and the thick slices' thickness (mm).
THICK_SUBSLICES = 4
THICK_MM = 5.0


def check_appearance(name: str) -> None:
    """Raise ``ValueError`` naming the known appearances unless ``name`` is one."""
    if name not in APPEARANCES:
        raise ValueError(f"unknown appearance {name!r}; choose one of {', '.join(APPEARANCES)}")


def shifted_params(params: AnatomyParams, name: str) -> AnatomyParams:
    """The anatomy parameters an appearance renders with (only noise and contrast change)."""
    if name == "noise_x3":
        return dataclasses.replace(params, noise_sd_hu=3.0 * params.noise_sd_hu)
    if name == "excretory":
        return dataclasses.replace(params, vessel_contrast=True, artery_hu=300.0, vein_hu=220.0, urine_hu=650.0)
    return params


def fine_grid(grid: Grid) -> Grid:
    """The grid of ``THICK_SUBSLICES`` thinner slices whose groups average into ``grid``'s slices."""
    fine = grid.spacing[2] / THICK_SUBSLICES
    k_axis = np.asarray(grid.direction_matrix)[:, 2]
    origin = np.asarray(grid.origin) - k_axis * fine * (THICK_SUBSLICES - 1) / 2
    return Grid(size=(grid.size[0], grid.size[1], grid.size[2] * THICK_SUBSLICES),
                spacing=(grid.spacing[0], grid.spacing[1], fine), origin=tuple(float(v) for v in origin),
                direction=grid.direction)


def render_appearance(grid: Grid, params: AnatomyParams, name: str, *, position: str,
                      anatomy_offset_mm: tuple[float, float, float], rng: np.random.Generator) -> RenderedPhantom:
    """Render ``params`` on ``grid`` with the appearance ``name`` (see the module docstring).

    For ``thick_5mm``, ``grid`` must have 5 mm slices; the anatomy is rendered on
    :func:`fine_grid` and each group of slices averaged (HU: mean; truth: at least half of the
    slab; tissue labels: those of the slab's central slice).
    """
    check_appearance(name)
    if name == "thick_5mm":
        if abs(grid.spacing[2] - THICK_MM) > 1e-6:
            raise ValueError(f"thick_5mm needs a grid of {THICK_MM:g} mm slices, not {grid.spacing[2]:g} mm")
        fine = render_phantom(fine_grid(grid), params, position=position, anatomy_offset_mm=anatomy_offset_mm, rng=rng)
        return _thicken(fine)
    rendered = render_phantom(grid, shifted_params(params, name), position=position,
                              anatomy_offset_mm=anatomy_offset_mm, rng=rng)
    hu = rendered.hu
    pixel = np.asarray(grid.spacing[:2], dtype=float)[::-1]  # (rows, columns) mm
    if name.startswith("hu_offset_"):
        hu += np.float32(float(name.rsplit("_", 1)[1]))
    elif name == "sharp_kernel":
        smooth = ndimage.gaussian_filter(hu, (0.0, *(1.0 / pixel)), mode="nearest", truncate=3.0)
        hu += np.float32(1.5) * (hu - smooth)
    elif name == "smooth_kernel":
        hu = ndimage.gaussian_filter(hu, (0.0, *(1.5 / pixel)), mode="nearest", truncate=3.0)
    elif name == "fov_cut":
        half_lr, _ = body_half_extent_mm(params)
        _cut_field_of_view(hu, grid, 0.8 * half_lr)
    np.clip(hu, -1024.0, 3071.0, out=hu)
    return dataclasses.replace(rendered, hu=hu)


def _thicken(fine: RenderedPhantom) -> RenderedPhantom:
    n = THICK_SUBSLICES

    def groups(array: np.ndarray) -> np.ndarray:
        return array.reshape(array.shape[0] // n, n, *array.shape[1:])

    hu = groups(fine.hu).mean(axis=1, dtype=np.float32)
    structures = {name: groups(mask).mean(axis=1) >= 0.5 for name, mask in fine.structures.items()}
    return RenderedPhantom(hu=hu, structures=structures, labels=np.ascontiguousarray(groups(fine.labels)[:, n // 2]))


def _cut_field_of_view(hu: np.ndarray, grid: Grid, radius_mm: float) -> None:
    """Air outside a circle of ``radius_mm`` about the centre of each slice (the scanner's reconstruction circle)."""
    rows, cols = hu.shape[1:]
    y = (np.arange(rows) - (rows - 1) / 2) * grid.spacing[1]
    x = (np.arange(cols) - (cols - 1) / 2) * grid.spacing[0]
    outside = (y[:, None] ** 2 + x[None, :] ** 2) > radius_mm ** 2
    hu[:, outside] = -1024.0
