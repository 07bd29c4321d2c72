"""Binary slices <-> closed planar polygons, in continuous voxel-index coordinates.

Owns the two conversions every planar-contour format needs, on one 2D slice ``[j, i]``
(row, column), with polygon vertices given as continuous (i, j) indices (voxel centres at
integers):

* ``trace_slice``: the boundary of the mask traced along voxel *edges*, so that every vertex
  lies on a voxel corner (half-integer index) and testing voxel centres against the polygons
  gives back exactly the mask. Each connected island is one outer polygon; each hole in it is
  one inner polygon. Islands are 4-connected: two voxels touching only at a corner are two
  islands. Vertices where the boundary goes straight on are dropped.
* ``fill_slice``: the voxels whose centres lie inside the polygons under the even-odd rule,
  i.e. the polygons of a slice are XOR-ed. A polygon nested in another is a hole, a keyhole
  (zero-width channel) contour works, and overlapping contours from other systems cancel the
  way plastimatch ``--xor-contours``, Slicer and most planning systems read them. A centre
  exactly on a boundary is inside (contours some systems draw through the centres of the
  outermost voxels give those voxels back). Scanline rule: an edge spans rows
  ``ymin <= j < ymax``; crossings of a row are paired in x order.

Polygons are ``(n, 2)`` float arrays of (i, j), implicitly closed (last vertex not repeated).
"""

from __future__ import annotations

import numpy as np

# Edge directions in corner coordinates (x = i + 0.5, y = j + 0.5): +x, +y, -x, -y.
_STEPS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])


def trace_slice(mask: np.ndarray) -> list[np.ndarray]:
    """Trace the boundary polygons of a 2D boolean mask ``[j, i]`` along voxel edges.

    Returns polygons of (i, j) continuous indices. Outer boundaries wind one way and holes
    the other (orientation is not needed by the even-odd rule; it is a by-product).
    """
    mask = np.asarray(mask, dtype=bool)
    row_any, col_any = mask.any(axis=1), mask.any(axis=0)
    if not row_any.any():
        return []
    # Trace only the bounding box of the mask; shift the polygons back at the end.
    j0, j1 = np.flatnonzero(row_any)[[0, -1]]
    i0, i1 = np.flatnonzero(col_any)[[0, -1]]
    mask = mask[j0:j1 + 1, i0:i1 + 1]
    rows, cols = mask.shape
    padded = np.zeros((rows + 2, cols + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask
    width = cols + 1  # corners per row: x in 0..cols, y in 0..rows

    starts, dirs = [], []
    # Horizontal edges at corner row y between pixel rows y-1 (above) and y (below).
    above, below = padded[:-1, 1:-1], padded[1:, 1:-1]  # shape (rows + 1, cols)
    y, x = np.nonzero(below & ~above)  # inside below: run +x from (x, y)
    starts.append(y * width + x), dirs.append(np.full(x.size, 0))
    y, x = np.nonzero(above & ~below)  # inside above: run -x from (x + 1, y)
    starts.append(y * width + x + 1), dirs.append(np.full(x.size, 2))
    # Vertical edges at corner column x between pixel columns x-1 (left) and x (right).
    left, right = padded[1:-1, :-1], padded[1:-1, 1:]  # shape (rows, cols + 1)
    y, x = np.nonzero(right & ~left)  # inside right: run -y from (x, y + 1)
    starts.append((y + 1) * width + x), dirs.append(np.full(x.size, 3))
    y, x = np.nonzero(left & ~right)  # inside left: run +y from (x, y)
    starts.append(y * width + x), dirs.append(np.full(x.size, 1))

    start = np.concatenate(starts)
    direction = np.concatenate(dirs)
    step = _STEPS[direction]
    end = start + step[:, 0] + step[:, 1] * width

    # Successor of each edge: the edge leaving its end vertex. At a saddle vertex (two diagonal
    # voxels inside) two edges leave; take the left turn, which keeps the islands apart.
    order = np.argsort(start, kind="stable")
    sorted_start = start[order]
    first = np.searchsorted(sorted_start, end, side="left")
    count = np.searchsorted(sorted_start, end, side="right") - first
    nxt = order[np.minimum(first, len(order) - 1)]
    saddle = np.flatnonzero(count == 2)
    if saddle.size:
        left_turn = (direction[saddle] + 1) % 4  # +x -> +y with y pointing down the rows
        a, b = order[first[saddle]], order[first[saddle] + 1]
        nxt[saddle] = np.where(direction[a] == left_turn, a, b)

    polygons = []
    visited = np.zeros(len(start), dtype=bool)
    nxt_list = nxt.tolist()
    for seed in range(len(start)):
        if visited[seed]:
            continue
        loop = []
        edge = seed
        while not visited[edge]:
            visited[edge] = True
            loop.append(edge)
            edge = nxt_list[edge]
        loop = np.asarray(loop)
        turning = direction[loop] != direction[np.roll(loop, 1)]  # keep corners only
        corners = start[loop[turning]]
        polygons.append(np.column_stack([corners % width - 0.5 + i0, corners // width - 0.5 + j0]).astype(float))
    return polygons


def fill_slice(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Voxels ``[j, i]`` of a slice of ``shape`` whose centres are inside ``polygons`` (even-odd).

    A voxel centre lying on a polygon's boundary (within 1e-3 voxel) counts as inside, so
    contours drawn through the centres of the outermost voxels (as some systems write them)
    give back those voxels. Parts of polygons outside the slice are clipped.
    """
    rows, cols = shape
    eps = 1e-3  # voxel: other systems write coordinates through float32 (errors ~1e-5 voxel)
    crossing_rows, crossing_x = [], []
    on_boundary = np.zeros(shape, dtype=bool)
    for poly in polygons:
        poly = np.asarray(poly, dtype=float)
        if len(poly) < 3:
            continue
        x0, y0 = poly[:, 0], poly[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        _mark_centres_on_horizontal_edges(on_boundary, x0, y0, x1, y1, eps)
        moving = np.abs(y0 - y1) > eps
        x0, y0, x1, y1 = x0[moving], y0[moving], x1[moving], y1[moving]
        first_row = np.clip(np.ceil(np.minimum(y0, y1) - eps).astype(np.int64), 0, rows)
        stop_row = np.clip(np.ceil(np.maximum(y0, y1) - eps).astype(np.int64), 0, rows)
        n = np.maximum(stop_row - first_row, 0)
        if n.sum() == 0:
            continue
        edge = np.repeat(np.arange(len(n)), n)
        row = first_row[edge] + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        crossing_rows.append(row)
        crossing_x.append(x0[edge] + (row - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge]))
    inside = on_boundary
    if crossing_rows:
        row = np.concatenate(crossing_rows)
        x = np.concatenate(crossing_x)
        order = np.lexsort((x, row))
        row, x = row[order], x[order]
        rank = np.arange(len(row)) - np.searchsorted(row, row, side="left")
        entering = rank % 2 == 0
        # A span runs from the first centre at or right of the entering crossing to the last
        # centre at or left of the leaving crossing.
        col = np.where(entering, np.ceil(x - eps), np.floor(x + eps) + 1)
        col = np.clip(col, 0, cols).astype(np.int64)
        toggles = np.zeros((rows, cols + 1), dtype=np.int32)
        np.add.at(toggles, (row, col), np.where(entering, 1, -1))
        inside = inside | (np.cumsum(toggles[:, :cols], axis=1) > 0)
    return inside


def _mark_centres_on_horizontal_edges(out: np.ndarray, x0, y0, x1, y1, eps: float) -> None:
    """Set voxels whose centres lie on a horizontal polygon edge or on a vertex."""
    rows, cols = out.shape
    on_row = np.abs(y0 - np.rint(y0)) <= eps
    horizontal = on_row & (np.abs(y0 - y1) <= eps)
    for xa, xb, y in zip(np.minimum(x0, x1)[horizontal], np.maximum(x0, x1)[horizontal], np.rint(y0[horizontal])):
        j = int(y)
        lo, hi = max(int(np.ceil(xa - eps)), 0), min(int(np.floor(xb + eps)), cols - 1)
        if 0 <= j < rows and lo <= hi:
            out[j, lo:hi + 1] = True
    at_centre = on_row & (np.abs(x0 - np.rint(x0)) <= eps)
    i, j = np.rint(x0[at_centre]).astype(np.int64), np.rint(y0[at_centre]).astype(np.int64)
    keep = (0 <= i) & (i < cols) & (0 <= j) & (j < rows)
    out[j[keep], i[keep]] = True
