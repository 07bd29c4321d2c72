"""Whether the slices received of a CT series are the whole series, by what the images themselves say.

A series arriving over the network carries no count of its slices, so completeness is judged
from the headers the node holds (pixel data is not read):

* every slice places itself in space (ImagePositionPatient, ImageOrientationPatient) and all share
  one orientation;
* the positions are contiguous: no gap that is a multiple of the spacing (the loader's rule,
  :func:`~ctv_core.dicom.slice_geometry.analyse_slice_positions`), so the count matches the
  extent, and no two slices at one position;
* the InstanceNumbers, where every slice has one, run without a hole;
* where every slice gives the same ImagesInAcquisition and one acquisition, no fewer slices than
  that number arrived.

Slices missing at either end of a series leave no trace in the others, so a series that passes
is complete as far as the images can tell; the DICOM node adds what the network tells (an
association that ended without release, an instance it refused).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom

from ..errors import DuplicateSliceError
from ..geometry import direction_from_iop
from .slice_geometry import analyse_slice_positions

ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class SeriesCompleteness:
    """The verdict on the slices of one series.

    Attributes
    ----------
    slices
        How many slices were assessed.
    problems
        What says the series is not whole, one sentence each (empty when it is complete).
    """

    slices: int
    problems: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        """One line for a log or a status list."""
        if self.complete:
            return f"{self.slices} slice(s), complete by what the images say"
        return f"{self.slices} slice(s): " + "; ".join(self.problems)


def assess_completeness(headers: Sequence[pydicom.Dataset]) -> SeriesCompleteness:
    """Judge whether ``headers`` (one per received slice of one series, any order) are the whole series."""
    problems: list[str] = []
    placed = [ds for ds in headers if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds]
    if len(placed) < len(headers):
        problems.append(f"{len(headers) - len(placed)} slice(s) without ImagePositionPatient or "
                        "ImageOrientationPatient")
    if not placed:
        return SeriesCompleteness(len(headers), tuple(problems or ["no slice"]))
    try:
        orientations = {tuple(round(float(v) / ORIENTATION_TOLERANCE) for v in ds.ImageOrientationPatient)
                        for ds in placed}
        direction = direction_from_iop([float(v) for v in placed[0].ImageOrientationPatient])
        positions = np.asarray([[float(v) for v in ds.ImagePositionPatient] for ds in placed])
    except (ValueError, TypeError) as exc:
        return SeriesCompleteness(len(headers), tuple(problems + [f"damaged slice geometry ({exc})"]))
    if len(orientations) > 1:
        problems.append(f"the slices have {len(orientations)} different orientations")
    else:
        problems += _position_problems(placed, positions, direction)
    problems += _instance_number_problems(placed)
    problems += _acquisition_count_problems(placed)
    return SeriesCompleteness(len(headers), tuple(problems))


def _position_problems(placed, positions: np.ndarray, direction: np.ndarray) -> list[str]:
    labels = [f"instance {ds.get('InstanceNumber', '?')}" for ds in placed]
    try:
        layout = analyse_slice_positions(positions, direction, labels)
    except DuplicateSliceError:
        return ["two or more slices lie at one position (two reconstructions in one series?)"]
    if not layout.missing:
        return []
    extent = float(layout.normal_mm[-1])
    expected = int(round(extent / layout.spacing)) + 1
    return [f"{expected - len(placed)} slice(s) missing over {extent:.1f} mm at {layout.spacing:.2f} mm spacing ("
            + "; ".join(layout.missing) + ")"]


def _instance_number_problems(placed) -> list[str]:
    try:
        numbers = sorted(int(ds.InstanceNumber) for ds in placed if ds.get("InstanceNumber") not in (None, ""))
    except (ValueError, TypeError):
        return []
    if len(numbers) < len(placed) or len(numbers) < 2:
        return []
    holes = numbers[-1] - numbers[0] + 1 - len(set(numbers))
    if holes <= 0:
        return []
    return [f"InstanceNumbers run from {numbers[0]} to {numbers[-1]} with {holes} missing"]


def _acquisition_count_problems(placed) -> list[str]:
    counts = {ds.get("ImagesInAcquisition") for ds in placed}
    acquisitions = {str(ds.get("AcquisitionNumber", "")) for ds in placed}
    if len(counts) != 1 or None in counts or len(acquisitions) != 1:
        return []
    try:
        expected = int(next(iter(counts)))
    except (ValueError, TypeError):
        return []
    if expected <= len(placed):
        return []
    return [f"the images say their acquisition has {expected} images; {len(placed)} arrived"]
