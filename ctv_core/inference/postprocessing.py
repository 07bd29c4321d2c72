"""Clean-up of the predicted mask on the CT grid: components, minimum volume, holes.

Works on the bounding box of the mask only, so a small CTV in a large CT costs little.
Connectivity is 26-neighbour in 3D; holes are filled slice by slice (in the CT's own slices).
"""

from __future__ import annotations

import numpy as np

from ..geometry import nonzero_box
from ..model.settings import PostprocessingConfig
from .morphology import component_sizes, fill_holes_by_slice, label_components


def postprocess(mask: np.ndarray, voxel_volume_cc: float, config: PostprocessingConfig) -> np.ndarray:
    """Apply ``config`` to a uint8 ``[k, j, i]`` mask; returns a new uint8 mask."""
    out = np.zeros_like(mask, dtype=np.uint8)
    box = nonzero_box(mask)
    if box is None:
        return out
    region = mask[box] != 0
    if config.keep_largest or config.min_component_cc:
        labels, count = label_components(region, fully_connected=True)
        sizes = component_sizes(labels, count)
        order = np.argsort(sizes)[::-1]
        keep = order[: config.keep_largest] if config.keep_largest else order
        keep = [int(i) + 1 for i in keep if sizes[i] * voxel_volume_cc >= config.min_component_cc]
        region = np.isin(labels, keep)
    if config.fill_holes:
        region = fill_holes_by_slice(region)
    out[box] = region
    return out
