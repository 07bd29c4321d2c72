"""``qa.png``: the picture a clinician looks at before opening the structure set.

Six axial slices spread through the CTV, plus a coronal and a sagittal plane through its
centre, CT in a soft-tissue window (W 400 / L 40) with the CTV outline over it. Planes are
sampled on LPS-aligned grids whatever the CT's orientation, and shown in radiological
convention: patient's right on the viewer's left, anterior up on axial views, head up on
coronal and sagittal views (anterior on the left of the sagittal view). With the prediction's
uncertainty (:mod:`.uncertainty`), a fourth row shows its three least certain slices: the
uncertainty map in colour over the CT, the CTV outline on top, each titled with the CT slice index
and its score in mm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..atomic_files import atomic_file
from ..geometry import Grid
from .uncertainty import Uncertainty

WINDOW = (40.0 - 200.0, 40.0 + 200.0)
#: The picture's width (inches) and resolution: 1040 pixels wide, three panels a row.
WIDTH_IN, DPI = 13, 80
#: Least certain slices shown (the fourth row).
UNCERTAIN_SHOWN = 3


def _plane(image: sitk.Image, origin, axes: tuple[np.ndarray, np.ndarray], size: tuple[int, int], spacing: float,
           interpolator: int, default: float) -> np.ndarray:
    """Sample ``image`` on a plane: rows along ``axes[1]``, columns along ``axes[0]`` (LPS unit vectors)."""
    normal = np.cross(axes[0], axes[1])
    direction = np.column_stack([axes[0], axes[1], normal]).flatten()
    reference = sitk.Image(size[0], size[1], 1, sitk.sitkUInt8)
    reference.SetSpacing((spacing, spacing, 1.0))
    reference.SetOrigin(tuple(float(v) for v in origin))
    reference.SetDirection(tuple(float(v) for v in direction))
    out = sitk.Resample(image, reference, sitk.Transform(), interpolator, default, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)[0]


def write_qa_image(ct: sitk.Image, mask: sitk.Image, path: str | Path, title: str, notes: list[str],
                   warnings: list[str] = (), uncertainty: Uncertainty | None = None) -> Path:
    """Render the QA picture of ``mask`` (uint8 on ``ct``'s grid) and write it as PNG.

    ``notes`` are listed in white, ``warnings`` below them in orange, each marked WARNING;
    ``uncertainty`` (its map on ``ct``'s grid) adds the row of the least certain slices.
    """
    grid = Grid.of_image(ct)
    low, high = grid.lps_bounds()
    spacing = float(np.clip(min(grid.spacing[:2]), 0.8, 2.0))
    nx, ny = (np.ceil((high[:2] - low[:2]) / spacing).astype(int) + 1).tolist()
    nz = int(np.ceil((high[2] - low[2]) / spacing)) + 1

    points = grid.nonzero_points(sitk.GetArrayViewFromImage(mask))
    if len(points):
        centre = points.mean(axis=0)
        z_lo, z_hi = points[:, 2].min(), points[:, 2].max()
        axial_z = np.linspace(z_lo, z_hi, 8)[1:-1]
    else:
        centre = (low + high) / 2
        axial_z = np.linspace(low[2], high[2], 8)[1:-1]
        notes = ["No CTV was found on this CT."] + notes
    ex, ey, ez = np.eye(3)
    views = []
    for z in axial_z:
        origin = (low[0], low[1], z)
        views.append((f"axial z = {z:.1f} mm", ("R", "L"), origin, (ex, ey), (nx, ny)))
    views.append(("coronal", ("R", "L"), (low[0], centre[1], high[2]), (ex, -ez), (nx, nz)))
    views.append(("sagittal", ("A", "P"), (centre[0], low[1], high[2]), (ey, -ez), (ny, nz)))

    rows = 3 if uncertainty is None else 4
    fig = Figure(figsize=(WIDTH_IN, WIDTH_IN * rows / 3), facecolor="black")
    FigureCanvasAgg(fig)  # Agg directly: no pyplot, no global figure state, no GUI backend
    axes = fig.subplots(rows, 3)
    for ax, (label, sides, origin, plane_axes, shape) in zip(axes.flat, views):
        image = _plane(ct, origin, plane_axes, shape, spacing, sitk.sitkLinear, -1024.0)
        outline = _plane(mask, origin, plane_axes, shape, spacing, sitk.sitkLinear, 0.0)  # uint8 in, float32 out
        ax.imshow(image, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], interpolation="bilinear")
        if outline.max() >= 0.5:
            ax.contour(outline, levels=[0.5], colors=["#ff00ff"], linewidths=1.2)
        ax.set_title(label, color="white", fontsize=10, y=1.0)  # a fixed y: no measuring of tick labels
        ax.text(0.01, 0.5, sides[0], color="yellow", transform=ax.transAxes, fontsize=12, va="center")
        ax.text(0.97, 0.5, sides[1], color="yellow", transform=ax.transAxes, fontsize=12, va="center")
        ax.axis("off")
    if uncertainty is not None:
        named = ", ".join(str(k) for k in uncertainty.least_certain_slices) or "none"
        notes = notes + [f"Least certain slices (CT slice index): {named}"]
        _uncertain_row(axes[3], ct, mask, uncertainty, (low, high), (nx, ny), spacing)
    notes_ax = axes.flat[8]
    notes_ax.axis("off")
    lines = [title, ""] + notes
    notes_ax.text(0.0, 1.0, "\n".join(lines), color="white", fontsize=10, va="top", wrap=True,
                  transform=notes_ax.transAxes)
    if warnings:
        text = "\n".join(f"WARNING: {w}" for w in warnings)
        notes_ax.text(0.0, 1.0 - 0.045 * (len(lines) + 0.5), text, color="#ffa500", fontsize=9, va="top", wrap=True,
                      transform=notes_ax.transAxes)
    # fixed margins: tight_layout would draw the whole figure once more only to measure its titles
    height_in = fig.get_size_inches()[1]
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1.0 - 0.3 / height_in, wspace=0.05, hspace=0.08)
    with atomic_file(path) as tmp:  # PNG compression level 1: as small as the default 6 here, in half the time
        fig.savefig(tmp, format="png", dpi=DPI, facecolor="black", pil_kwargs={"compress_level": 1})
    return Path(path)


def _uncertain_row(axes, ct: sitk.Image, mask: sitk.Image, uncertainty: Uncertainty, bounds, shape: tuple[int, int],
                   spacing: float) -> None:
    """The least certain slices: the LPS-aligned axial plane through the centre of each CT slice ``k``."""
    grid = Grid.of_image(ct)
    low, _ = bounds
    centre_ij = (np.asarray(grid.size[:2], dtype=float) - 1) / 2
    ex, ey, _ = np.eye(3)
    shown = uncertainty.least_certain_slices[:UNCERTAIN_SHOWN]
    for n, ax in enumerate(axes):
        ax.axis("off")
        if n >= len(shown):
            if n == 0:
                ax.text(0.5, 0.5, "No uncertain slice", color="white", fontsize=11, ha="center",
                        transform=ax.transAxes)
            continue
        k = shown[n]
        z = float(grid.index_to_lps(np.array([[centre_ij[0], centre_ij[1], float(k)]]))[0, 2])
        origin = (low[0], low[1], z)
        image = _plane(ct, origin, (ex, ey), shape, spacing, sitk.sitkLinear, -1024.0)
        outline = _plane(mask, origin, (ex, ey), shape, spacing, sitk.sitkLinear, 0.0)
        values = _plane(uncertainty.map, origin, (ex, ey), shape, spacing, sitk.sitkLinear, 0.0)
        ax.imshow(image, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], interpolation="bilinear")
        ax.imshow(np.ma.masked_less(values, 5.0), cmap="plasma", vmin=0.0, vmax=100.0, alpha=0.6,
                  interpolation="bilinear")
        if outline.max() >= 0.5:
            ax.contour(outline, levels=[0.5], colors=["#00ff00"], linewidths=1.0)
        ax.set_title(f"uncertain: slice {k}, band {uncertainty.slice_scores[k]:.1f} mm", color="white", fontsize=10,
                     y=1.0)
        ax.text(0.01, 0.5, "R", color="yellow", transform=ax.transAxes, fontsize=12, va="center")
        ax.text(0.97, 0.5, "L", color="yellow", transform=ax.transAxes, fontsize=12, va="center")
