"""Surface points of two masks, the area each stands for, and their directed distances (through MONAI).

The representation is Nikolov et al.'s (see :mod:`.metrics` for the definitions it serves):
points on the voxel corners between inside and outside, each with its marching-cubes patch
area for the actual spacing. Both masks are first cut to the bounding box of their union plus
one voxel of background, so the cost depends on the structure, not on the CT's size. MONAI
(and torch) are imported on first use, not with this module, because their import takes
seconds.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import EvaluationError, require_extra


@dataclass(frozen=True)
class SurfaceDistances:
    """Directed surface distances between a prediction P and a reference R.

    Attributes
    ----------
    pred_to_ref_mm, pred_areas_mm2
        For every surface point of P: distance in mm to R's surface (inf when R is empty), and
        the surface area in mm² that the point stands for. 1-D float64, same length.
    ref_to_pred_mm, ref_areas_mm2
        The same for the surface points of R.
    """

    pred_to_ref_mm: np.ndarray
    pred_areas_mm2: np.ndarray
    ref_to_pred_mm: np.ndarray
    ref_areas_mm2: np.ndarray

    @property
    def both_empty(self) -> bool:
        """True when neither mask has a surface (both masks are empty)."""
        return self.pred_to_ref_mm.size == 0 and self.ref_to_pred_mm.size == 0


def surface_distances(prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, float, float]) -> SurfaceDistances:
    """Directed distances and areas of the surface points of two ``[k, j, i]`` masks.

    Parameters
    ----------
    prediction, reference
        Arrays of one shape indexed ``[k, j, i]``; non-zero = inside.
    spacing
        Voxel spacing in mm in (i, j, k) order.
    """
    pred, ref = crop_to_union(np.asarray(prediction) != 0, np.asarray(reference) != 0)
    empty = np.zeros(0, dtype=np.float64)
    if pred is None:
        return SurfaceDistances(empty, empty, empty, empty)
    if not pred.any() or not ref.any():
        # Only one mask has a surface: its points are infinitely far from the other's (none).
        present = pred if pred.any() else ref
        areas = _surface_areas_alone(present, spacing)
        far = np.full(areas.shape, np.inf)
        if pred.any():
            return SurfaceDistances(far, areas, empty, empty)
        return SurfaceDistances(empty, empty, far, areas)

    torch = _torch()
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():
        # MONAI passes one of its own deprecated arguments to itself (1.5 - 1.6); not ours to act on.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        (edges_pred, edges_ref), (d_pred_ref, d_ref_pred), (areas_pred, areas_ref) = get_edge_surface_distance(
            torch.from_numpy(pred),
            torch.from_numpy(ref),
            distance_metric="euclidean",
            spacing=tuple(float(s) for s in spacing[::-1]),  # NumPy axis order (k, j, i)
            use_subvoxels=True,
            symmetric=True,
        )
    return SurfaceDistances(
        pred_to_ref_mm=_numpy64(d_pred_ref),
        pred_areas_mm2=_numpy64(areas_pred[edges_pred]),
        ref_to_pred_mm=_numpy64(d_ref_pred),
        ref_areas_mm2=_numpy64(areas_ref[edges_ref]),
    )


def crop_to_union(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Both masks cut to their union's bounding box with one voxel of background all round.

    Returns ``(None, None)`` when both are empty.
    Where the box reaches the image border the background margin is padding.
    """
    if pred.shape != ref.shape:
        raise EvaluationError(f"The masks have shapes {pred.shape} and {ref.shape}; they must be on one grid.")
    bounds = []
    for axis in range(pred.ndim):
        other = tuple(a for a in range(pred.ndim) if a != axis)
        present = np.flatnonzero(np.any(pred, axis=other) | np.any(ref, axis=other))
        if present.size == 0:
            return None, None
        bounds.append((int(present[0]), int(present[-1]) + 1))
    box = tuple(slice(lo, hi) for lo, hi in bounds)
    shape = tuple(hi - lo + 2 for lo, hi in bounds)
    inner = tuple(slice(1, s - 1) for s in shape)
    out = []
    for mask in (pred, ref):
        padded = np.zeros(shape, dtype=bool)
        padded[inner] = mask[box]
        out.append(padded)
    return out[0], out[1]


def _surface_areas_alone(mask: np.ndarray, spacing) -> np.ndarray:
    """Surface-point areas (mm²) of a single non-empty mask, the same points MONAI uses."""
    torch = _torch()
    from monai.metrics.utils import get_mask_edges

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        tensor = torch.from_numpy(mask)
        edges, _, areas, _ = get_mask_edges(tensor, tensor, spacing=tuple(float(s) for s in spacing[::-1]))
    return _numpy64(areas[edges])


def _numpy64(values) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).ravel()


def _torch():
    """torch and MONAI for the surface metrics, or MissingDependencyError naming the extra that brings them."""
    require_extra("monai", "torch", "The surface distances of ctv evaluate",
                  "PyTorch and MONAI, for training, export, CUDA and evaluation")
    return require_extra("torch", "torch", "The surface distances of ctv evaluate",
                         "PyTorch and MONAI, for training, export, CUDA and evaluation")
