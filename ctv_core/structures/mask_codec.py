"""A binary mask as a short line of text, to travel with a segment (a Slicer segment tag) and be read back exactly.

The text is ``ctvmask1;K,J,I;k0,j0,i0,k1,j1,i1;DATA``: the mask's shape ``[k, j, i]``, the box
holding its voxels (half-open index ranges; all zero for an empty mask) and DATA, the box's
voxels in C order, bit-packed, deflated and base64-encoded (a CTV of 1000 cc on a 512 x 512 CT:
some tens of kB). Only the voxel pattern is kept: the grid it lies on is the caller's to know.
"""

from __future__ import annotations

import base64
import binascii
import zlib

import numpy as np

from ..errors import StructureSetError

PREFIX = "ctvmask1"


def encode_mask(array: np.ndarray) -> str:
    """The text of a 3D mask indexed ``[k, j, i]`` (non-zero = inside)."""
    inside = np.asarray(array) != 0
    if inside.ndim != 3:
        raise ValueError(f"a mask is 3D, not {inside.ndim}D")
    present = np.nonzero(inside)
    if present[0].size:
        low = [int(p.min()) for p in present]
        high = [int(p.max()) + 1 for p in present]
    else:
        low = high = [0, 0, 0]
    box = inside[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
    data = base64.b64encode(zlib.compress(np.packbits(box).tobytes(), 9)).decode("ascii")
    return f"{PREFIX};{','.join(map(str, inside.shape))};{','.join(map(str, low + high))};{data}"


def decode_mask(text: str) -> np.ndarray:
    """The uint8 0/1 mask ``[k, j, i]`` of a text made by :func:`encode_mask`.

    Raises
    ------
    StructureSetError
        The text is not such a mask (damaged, or made by something else).
    """
    try:
        prefix, shape_text, box_text, data = text.split(";")
        if prefix != PREFIX:
            raise ValueError(f"it starts with {prefix[:20]!r}")
        shape = tuple(int(v) for v in shape_text.split(","))
        box = [int(v) for v in box_text.split(",")]
        if len(shape) != 3 or len(box) != 6 or min(shape) < 1:
            raise ValueError("its shape or box is not 3D")
        low, high = box[:3], box[3:]
        if any(not 0 <= lo <= hi <= n for lo, hi, n in zip(low, high, shape)):
            raise ValueError("its box lies outside its shape")
        extent = tuple(hi - lo for lo, hi in zip(low, high))
        bits = np.frombuffer(zlib.decompress(base64.b64decode(data, validate=True)), np.uint8)
        count = int(np.prod(extent))
        if bits.size != (count + 7) // 8:
            raise ValueError("its data does not fill its box")
    except (ValueError, binascii.Error, zlib.error) as exc:
        raise StructureSetError(f"The stored AI contour cannot be read ({exc}); it was damaged or made by another "
                                "program.") from exc
    mask = np.zeros(shape, np.uint8)
    mask[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = np.unpackbits(bits, count=count).reshape(extent)
    return mask
