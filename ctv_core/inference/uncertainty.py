"""How sure the network was, voxel by voxel and slice by slice, from the prediction's own probability.

No extra network pass: the signal is the **margin** of the final CTV probability ``p`` (the one
thresholded into the mask, averaged over the test-time flips where they are on),
``1 - |2p - 1|``: 0 where the network is certain (``p`` at 0 or 1), 1 where it is undecided
(``p`` at 0.5). The margin was chosen among entropy, disagreement between the refinement passes
and between test-time flips, and a size-only baseline by how well its slice score ranks the
slices where the CTV is wrong above those where it is right (``benchmarks/uncertainty_ranking.py``,
figures in docs/prediction.md).

* The voxel map is on the CT's grid (the probability resampled linearly like the mask), stored as
  uint8 percent 0-100, ``[k, j, i]`` as every CT-grid array.
* The slice score, per slice ``k`` of the CT grid (the CT array's first axis, the slice index of
  the CT as loaded), is in **mm**: the mean width of the uncertain band (margin above
  ``BAND_THRESHOLD``) along the CTV's outline on that slice, i.e. the band's area (mm²) over the
  outline's length (mm). So 3 mm means the CTV's edge on that slice could lie anywhere within a
  band about 3 mm wide, whatever the CT's pixel spacing. Slices without CTV or without band score 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..geometry import Grid, nonzero_box
from .preprocessing import resample_to_ct

SIGNAL = "margin"
#: Voxels whose margin exceeds this are the uncertain band (margin 0.2: p between 0.1 and 0.9); chosen among 0.2,
#: 0.35, 0.5 and 0.7 by ``benchmarks/uncertainty_ranking.py`` (AUC pooled 0.724, within CT 0.741, against 0.695 and
#: 0.711 at 0.5).
BAND_THRESHOLD = 0.2
#: How many of the least certain slices are named.
LEAST_CERTAIN_COUNT = 10
#: Probabilities below this give a margin under 0.5 %, which rounds to 0 in the percent map.
_FLOOR = 0.0025
#: Mean ratio of a curve's length to its length counted along the pixel edges (Cauchy-Crofton: pi / 4).
_EDGE_TO_LENGTH = np.pi / 4


@dataclass
class Uncertainty:
    """The uncertainty of one prediction.

    Attributes
    ----------
    map
        uint8 percent 0-100 (margin x 100) on the CT's grid, with the CT's geometry.
    slice_scores
        mm per slice ``k`` of the CT grid (index as in the CT array's first axis), 0 where no CTV or band.
    least_certain_slices
        Slice indices ``k`` with a score above 0, highest score first, at most ``LEAST_CERTAIN_COUNT``.
    seconds
        Wall time to compute the map and the scores.
    signal
        Which signal the map holds ("margin").
    """

    map: sitk.Image
    slice_scores: list[float]
    least_certain_slices: list[int]
    seconds: float
    signal: str = SIGNAL

    def to_report(self) -> dict:
        """The ``uncertainty`` entry of ``report.json`` and of the prediction process's ``result.json``."""
        return {"signal": self.signal, "slice_scores": [round(s, 3) for s in self.slice_scores],
                "slice_score_unit": "mm", "least_certain_slices": list(self.least_certain_slices),
                "seconds": round(self.seconds, 3)}


def margin(probability: np.ndarray) -> np.ndarray:
    """``1 - |2p - 1|`` as float32: 0 where ``p`` is 0 or 1, 1 where ``p`` is 0.5."""
    out = np.asarray(probability, dtype=np.float32) * 2.0 - 1.0
    np.abs(out, out=out)
    np.subtract(1.0, out, out=out)
    return out


def uncertainty_percent(probability: np.ndarray, grid: Grid, ct_grid: Grid) -> np.ndarray:
    """The margin of a ``[z, y, x]`` probability on the model ``grid`` as uint8 percent ``[k, j, i]`` on ``ct_grid``.

    The probability is resampled linearly onto the CT (as for the mask), only where it reaches
    ``_FLOOR``; elsewhere the map is 0.
    """
    out = np.zeros(ct_grid.shape, dtype=np.uint8)
    resampled = resample_to_ct(probability, grid, ct_grid, _FLOOR)
    if resampled is None:
        return out
    region, values = resampled
    del resampled  # one float32 copy of the region at a time
    values = margin(values)
    values *= 100.0
    np.rint(values, out=values)
    out[region] = values
    return out


def outline_length_mm(mask: np.ndarray, spacing_xy: tuple[float, float]) -> np.ndarray:
    """Length (mm) of the outline of a ``[k, j, i]`` mask on each slice ``k``.

    The pixel edges between inside and outside are counted (an edge between columns is
    ``spacing_y`` long, between rows ``spacing_x``), times pi/4: the mean ratio of a curve's length
    to its length along the pixel edges over all orientations.
    """
    length = np.zeros(mask.shape[0])
    box = nonzero_box(mask)
    if box is None:
        return length
    k, j, i = box  # outside the CTV's box there is no edge: count on the box, padded by one
    inside = np.pad(mask[k, j, i] != 0, ((0, 0), (1, 1), (1, 1)))
    between_columns = np.count_nonzero(inside[:, :, 1:] != inside[:, :, :-1], axis=(1, 2))
    between_rows = np.count_nonzero(inside[:, 1:, :] != inside[:, :-1, :], axis=(1, 2))
    length[k] = _EDGE_TO_LENGTH * (between_columns * spacing_xy[1] + between_rows * spacing_xy[0])
    return length


def slice_scores(percent: np.ndarray, mask: np.ndarray, spacing_xy: tuple[float, float],
                 band_threshold: float = BAND_THRESHOLD) -> np.ndarray:
    """Per slice ``k``: the uncertain band's area over the CTV outline's length, in mm (see the module docstring).

    ``percent`` is the uint8 map and ``mask`` the CTV, both ``[k, j, i]`` on a CT grid whose
    in-slice spacing is ``spacing_xy`` (mm, i then j).
    """
    length = outline_length_mm(mask, spacing_xy)
    scores = np.zeros(len(length))
    pixel_mm2 = spacing_xy[0] * spacing_xy[1]
    for k in np.flatnonzero(length > 0):  # slice by slice: no CT-sized boolean array
        scores[k] = np.count_nonzero(percent[k] > band_threshold * 100.0) * pixel_mm2 / length[k]
    return scores


def least_certain_slices(scores: np.ndarray, count: int = LEAST_CERTAIN_COUNT) -> list[int]:
    """The slice indices with a score above 0, highest first (ties: lower index first), at most ``count``."""
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="stable")
    return [int(k) for k in order[:count] if scores[k] > 0]


def uncertainty_of(probability: np.ndarray, grid: Grid, ct_grid: Grid, mask: np.ndarray) -> Uncertainty:
    """The uncertainty of a prediction: ``probability`` ``[z, y, x]`` on the model ``grid``, ``mask`` ``[k, j, i]``
    the final CTV on ``ct_grid``."""
    start = time.perf_counter()
    percent = uncertainty_percent(probability, grid, ct_grid)
    scores = slice_scores(percent, mask, ct_grid.spacing[:2])
    return Uncertainty(map=ct_grid.image(percent), slice_scores=[float(s) for s in scores],
                       least_certain_slices=least_certain_slices(scores), seconds=time.perf_counter() - start)
