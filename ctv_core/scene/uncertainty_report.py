"""The uncertainty figures of a prediction's report, read and checked before any door shows them.

A prediction's ``report.json`` (``ctv predict``, a review-station version) and the prediction
process's ``result.json`` hold ``uncertainty``: ``signal`` ("margin": voxel uncertainty
1 - |2p - 1| of the CTV probability p), ``slice_scores`` (one per axial CT slice, index k of the
CT grid, in ``slice_score_unit``, "mm"), ``least_certain_slices`` (CT slice indices k,
least certain first) and ``seconds``. The Slicer module and the review station read them
through :func:`readUncertaintyFigures`, which refuses anything malformed with a sentence saying
what is wrong and what to do (a report from another version, an edited file), never a traceback;
the review station reads reports it wrote itself but treats them like any file on disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import CTVError

#: The report's key.
KEY = "uncertainty"
#: The signals this version shows.
SIGNALS = ("margin",)


class UncertaintyReportError(CTVError):
    """A report's uncertainty figures are missing or malformed."""


@dataclass(frozen=True)
class UncertaintyFigures:
    """A prediction's uncertainty figures, checked.

    Attributes
    ----------
    signal
        How a voxel's uncertainty was computed ("margin").
    sliceScores
        One score per axial CT slice (index k of the CT grid), in :attr:`unit`.
    unit
        The unit of the scores ("mm").
    leastCertainSlices
        CT slice indices k, least certain first (each within the CT, no repeats).
    seconds
        Time the map took, s.
    """

    signal: str
    sliceScores: tuple[float, ...]
    unit: str
    leastCertainSlices: tuple[int, ...]
    seconds: float


def _refuse(problem: str) -> UncertaintyReportError:
    return UncertaintyReportError(
        f"The prediction's uncertainty figures cannot be shown: {problem}. The prediction and this program come "
        "from different versions, or the report was edited; predict the CTV again to get them.")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def readUncertaintyFigures(report: Any, sliceCount: int) -> UncertaintyFigures:
    """The checked uncertainty figures of ``report`` (a decoded report.json / result.json) for a CT of
    ``sliceCount`` axial slices.

    Raises
    ------
    UncertaintyReportError
        The report has no ``uncertainty`` (a prediction made without it, or by an older version), or
        any of its fields is missing, of the wrong type, or does not fit the CT.
    """
    figures = report.get(KEY) if isinstance(report, dict) else None
    if figures is None:
        raise UncertaintyReportError(
            "This prediction has no uncertainty figures (it was made without the uncertainty map, or by an "
            "older version of ctv_core); predict the CTV again to see them.")
    if not isinstance(figures, dict):
        raise _refuse(f"'{KEY}' is a {type(figures).__name__}, not an object")
    signal = figures.get("signal")
    if signal not in SIGNALS:
        raise _refuse(f"the signal {signal!r} is not among {', '.join(SIGNALS)}")
    unit = figures.get("slice_score_unit")
    if unit != "mm":
        raise _refuse(f"the slice scores' unit {unit!r} is not 'mm'")
    scores = figures.get("slice_scores")
    if not isinstance(scores, list) or len(scores) != sliceCount or not all(
            _number(s) and s >= 0 for s in scores):
        raise _refuse(f"'slice_scores' is not a list of {sliceCount} non-negative numbers (one per CT slice)")
    slices = figures.get("least_certain_slices")
    if not isinstance(slices, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in slices):
        raise _refuse("'least_certain_slices' is not a list of CT slice indices")
    if any(not 0 <= k < sliceCount for k in slices) or len(set(slices)) != len(slices):
        raise _refuse(f"'least_certain_slices' names slices outside 0-{sliceCount - 1} or one slice twice")
    seconds = figures.get("seconds")
    if not _number(seconds) or seconds < 0:
        raise _refuse(f"'seconds' is {seconds!r}, not a non-negative number")
    return UncertaintyFigures(signal, tuple(float(s) for s in scores), unit, tuple(slices), float(seconds))
