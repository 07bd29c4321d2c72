"""Stepping through the CT slices that hold the CTV, by key or at a steady pace, as the thesis' web
system reviewed its contours (one slice every 250 ms).

``sliceOffsets`` gives, for a slice view whose normal is ``normal`` (RAS), the view offsets (mm
along that normal) of the CT slices holding the segment, in increasing order; the CT axis most
nearly along the normal is the one stepped. ``ReviewPlayer`` walks that list forwards, backwards
and round. The widget moves Slicer's slice view; nothing here needs Qt.
"""

from __future__ import annotations

import numpy as np
import vtk

from .conversion import segmentMask
from .patient_frame import gridOfVolume, matrixToArray

#: Autoplay interval of the original review system, ms per slice.
AUTOPLAY_INTERVAL_MS = 250


def sliceOffsets(mask: np.ndarray, ijkToRas: np.ndarray, normal) -> list[float]:
    """View offsets (mm along the unit ``normal``, RAS) of the CT planes that hold ``mask`` voxels.

    ``mask`` is ``[k, j, i]`` on the CT whose IJK-to-RAS matrix is ``ijkToRas`` (4 x 4).
    """
    normal = np.asarray(normal, dtype=float)
    normal = normal / np.linalg.norm(normal)
    axes = ijkToRas[:3, :3]
    alignment = np.abs(axes.T @ normal) / np.linalg.norm(axes, axis=0)
    axis = int(np.argmax(alignment))  # grid axis (i, j, k) most nearly along the view normal
    other = tuple(2 - a for a in range(3) if a != axis)
    holding = np.flatnonzero(np.asarray(mask).any(axis=other))
    if holding.size == 0:
        return []
    size = np.array(mask.shape[::-1], dtype=float)
    centres = np.tile((size - 1) / 2, (holding.size, 1))
    centres[:, axis] = holding
    points = centres @ axes.T + ijkToRas[:3, 3]
    return sorted({round(float(p @ normal), 4) for p in points})


class ReviewPlayer:
    """A position in the list of slice offsets holding the CTV.

    Parameters
    ----------
    offsets
        Increasing view offsets, mm (from :func:`sliceOffsets`).
    """

    def __init__(self, offsets: list[float]):
        self.offsets = list(offsets)
        self.index = -1

    @classmethod
    def forSegment(cls, segmentationNode, segmentId: str, volumeNode, sliceToRas, currentOffset: float) -> ReviewPlayer:
        """A player over a segment's slices as they are now, for a slice view (its SliceToRAS
        vtkMatrix4x4; the normal is the third column), starting near the view's current offset."""
        normal = [sliceToRas.GetElement(r, 2) for r in range(3)]
        player = cls(segmentSliceOffsets(segmentationNode, segmentId, volumeNode, normal))
        player.startAt(currentOffset)
        return player

    def __len__(self) -> int:
        return len(self.offsets)

    def startAt(self, offset: float) -> None:
        """Start from the slice nearest the view's current ``offset``."""
        if self.offsets:
            self.index = int(np.argmin(np.abs(np.asarray(self.offsets) - offset)))

    def step(self, direction: int = 1) -> float | None:
        """The offset ``direction`` slices on (wrapping round at either end); None when the CTV is empty."""
        if not self.offsets:
            return None
        self.index = (self.index + direction) % len(self.offsets) if self.index >= 0 else (
            0 if direction > 0 else len(self.offsets) - 1)
        return self.offsets[self.index]

    def position(self) -> str:
        """"slice 3 of 41" for the status line."""
        return f"CTV slice {self.index + 1} of {len(self.offsets)}" if self.index >= 0 else (
            f"{len(self.offsets)} slices hold the CTV")


def segmentSliceOffsets(segmentationNode, segmentId: str, volumeNode, normal) -> list[float]:
    """:func:`sliceOffsets` of a segment as it is now (edits included), on the CT ``volumeNode``."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    mask = segmentMask(segmentationNode, segmentId, gridOfVolume(volumeNode)).array
    return sliceOffsets(mask, matrixToArray(matrix), normal)
