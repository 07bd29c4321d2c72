"""Simulated label noise, seeded: what noisy clinical contours look like, for experiments with known truth.

Two kinds, both pure functions of their seed: which cases are corrupted (or which clinician
draws each case) is one seeded draw over the sorted case ids, and each case then draws from its
own ``numpy.random.Generator`` seeded by the seed and the case id.

* **Erosion or dilation** (the noisy-label experiments of the method): a chosen fraction of
  the cases is corrupted; in a corrupted case every structure is, independently, eroded or
  dilated (probability 1/2 each) by ``n`` pixels, ``n`` uniform among the integers of a range
  (:func:`simulate_label_noise`).
* **Clinic-like noise** for 3D contours: each simulated clinician has a systematic margin in
  millimetres (positive: generous, negative: tight), a case-to-case spread around it, and a
  fraction of the axial slices left undrawn (:class:`ClinicianStyle`, :func:`clinic_label`);
  cases are dealt to the clinicians by a seeded shuffle (:func:`assign_clinicians`).

Arrays are boolean or 0/1 masks, one structure per array or stacked ``[K, *spatial]``; 3D
masks are ``[z, y, x]`` and spacings ``(z, y, x)`` in millimetres. Distances are Euclidean
(exact distance transform, :func:`scipy.ndimage.distance_transform_edt`, which takes the
voxel spacing, so one margin in mm is right on anisotropic CT grids): dilation by ``d`` adds
every voxel within ``d`` of the structure, erosion by ``d`` removes every voxel within ``d``
of the background. The array's border is not background (a structure cut by the image edge
is not eroded from the edge).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..strict_config import is_number

#: Stream tags of the seeded draws (which cases, each case's operations, each case's clinician noise).
_CHOICE, _CASE, _CLINIC = 0x6E01, 0x6E02, 0x6E03


def _case_rng(seed: int, tag: int, case_id: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), tag, zlib.crc32(case_id.encode("utf-8"))])


def grow(mask: np.ndarray, distance: float, spacing: Sequence[float] | None = None) -> np.ndarray:
    """``mask`` dilated (``distance > 0``) or eroded (``< 0``) by ``|distance|``, as a new bool array.

    ``distance`` is in the units of ``spacing`` (per axis, e.g. mm), or in pixels when
    ``spacing`` is None.
    """
    mask = np.asarray(mask, dtype=bool)
    if distance == 0 or not mask.any():
        return mask.copy()
    if distance > 0:
        return mask | (ndimage.distance_transform_edt(~mask, sampling=spacing) <= distance)
    if mask.all():
        return mask.copy()
    return ndimage.distance_transform_edt(mask, sampling=spacing) > -distance


def noisy_case_ids(case_ids: Sequence[str], fraction: float, seed: int) -> list[str]:
    """The ``round(fraction * len(case_ids))`` cases to corrupt, drawn with ``seed`` (sorted)."""
    if not is_number(fraction) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"noise fraction must be within 0..1, not {fraction!r}")
    ordered = sorted(case_ids)
    count = int(round(fraction * len(ordered)))
    rng = np.random.default_rng([int(seed), _CHOICE])
    return sorted(ordered[i] for i in rng.choice(len(ordered), size=count, replace=False))


@dataclass(frozen=True)
class StructureNoise:
    """What was done to one structure: ``distance`` pixels of ``"erode"`` or ``"dilate"``."""

    structure: int
    operation: str
    distance: int


def corrupt_structures(label: np.ndarray, distance_range: tuple[int, int],
                       rng: np.random.Generator) -> tuple[np.ndarray, list[StructureNoise]]:
    """Each structure of ``label`` (``[K, *spatial]``) eroded or dilated by ``n`` in ``distance_range`` (pixels)."""
    low, high = (int(v) for v in distance_range)
    if not 0 <= low <= high:
        raise ValueError(f"noise range must be two integers 0 <= low <= high, not {distance_range!r}")
    out = np.empty(label.shape, dtype=bool)
    record = []
    for k in range(label.shape[0]):
        operation = "dilate" if rng.random() < 0.5 else "erode"
        distance = int(rng.integers(low, high + 1))
        out[k] = grow(label[k], distance if operation == "dilate" else -distance)
        record.append(StructureNoise(k, operation, distance))
    return out, record


def simulate_label_noise(labels: Mapping[str, np.ndarray], fraction: float, distance_range: tuple[int, int],
                         seed: int) -> tuple[dict[str, np.ndarray], dict[str, list[StructureNoise]]]:
    """Erosion/dilation noise on a fraction of the cases.

    Parameters
    ----------
    labels
        Case id -> ``[K, *spatial]`` masks (K structures).
    fraction
        Share of the cases corrupted (exactly ``round(fraction * cases)``).
    distance_range
        ``(low, high)``: each structure of a corrupted case is eroded or dilated by an integer
        number of pixels uniform in ``low..high`` (the method: 1-8 or 5-13 px at 256 x 256).
    seed
        Seed of the choice of cases and of every case's draws.

    Returns
    -------
    noisy, record
        Case id -> bool masks (the clean ones copied), and case id -> what was done to each
        structure of the corrupted cases (absent: clean).
    """
    chosen = set(noisy_case_ids(list(labels), fraction, seed))
    noisy, record = {}, {}
    for case_id in sorted(labels):
        label = np.asarray(labels[case_id], dtype=bool)
        if case_id in chosen:
            noisy[case_id], record[case_id] = corrupt_structures(label, distance_range, _case_rng(seed, _CASE, case_id))
        else:
            noisy[case_id] = label.copy()
    return noisy, record


@dataclass(frozen=True)
class ClinicianStyle:
    """How one simulated clinician contours a 3D structure.

    Attributes
    ----------
    name
        The clinician's label in records.
    margin_mm
        Systematic margin added to the truth, mm (positive: generous, negative: tight).
    margin_sd_mm
        Case-to-case spread of the margin (normal, standard deviation in mm).
    skip_fraction
        Share of the structure's axial slices left undrawn (each slice independently).
    """

    name: str
    margin_mm: float = 0.0
    margin_sd_mm: float = 0.0
    skip_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a clinician needs a name, not {self.name!r}")
        if not is_number(self.margin_mm) or not -50 <= self.margin_mm <= 50:
            raise ValueError(f"clinician {self.name}: margin_mm must be within -50..50 mm, not {self.margin_mm!r}")
        if not is_number(self.margin_sd_mm) or self.margin_sd_mm < 0:
            raise ValueError(f"clinician {self.name}: margin_sd_mm must be >= 0, not {self.margin_sd_mm!r}")
        if not is_number(self.skip_fraction) or not 0 <= self.skip_fraction < 1:
            raise ValueError(f"clinician {self.name}: skip_fraction must be within [0, 1), not {self.skip_fraction!r}")

    @property
    def exact(self) -> bool:
        """True for a clinician who draws the truth itself."""
        return self.margin_mm == 0 and self.margin_sd_mm == 0 and self.skip_fraction == 0


@dataclass(frozen=True)
class ClinicNoise:
    """What a clinician did to one case: the margin drawn (mm) and the slices left out (z indices)."""

    clinician: str
    margin_mm: float
    skipped_slices: tuple[int, ...]


def assign_clinicians(case_ids: Sequence[str], styles: Sequence[ClinicianStyle], seed: int) -> dict[str, str]:
    """Case id -> clinician name: the cases, shuffled with ``seed``, dealt to the clinicians in turn."""
    if not styles:
        raise ValueError("at least one clinician is needed")
    ordered = sorted(case_ids)
    order = np.random.default_rng([int(seed), _CHOICE]).permutation(len(ordered))
    return {ordered[i]: styles[n % len(styles)].name for n, i in enumerate(order)}


def clinic_label(mask: np.ndarray, spacing_zyx: Sequence[float], style: ClinicianStyle,
                 rng: np.random.Generator) -> tuple[np.ndarray, ClinicNoise]:
    """``mask`` (``[z, y, x]``) as ``style``'s clinician draws it: margin in mm, then slices skipped.

    The margin is ``margin_mm + N(0, margin_sd_mm)``; each axial slice that holds the
    structure is then left empty with probability ``skip_fraction``.
    """
    margin = float(style.margin_mm + (rng.normal(0.0, style.margin_sd_mm) if style.margin_sd_mm else 0.0))
    drawn = grow(mask, margin, spacing_zyx)
    slices = np.flatnonzero(drawn.any(axis=(1, 2)))
    skipped = slices[rng.random(slices.size) < style.skip_fraction] if style.skip_fraction else slices[:0]
    drawn[skipped] = False
    return drawn, ClinicNoise(style.name, round(margin, 3), tuple(int(z) for z in skipped))


def simulate_clinic_noise(masks: Mapping[str, np.ndarray], spacings: Mapping[str, Sequence[float]],
                          styles: Sequence[ClinicianStyle],
                          seed: int) -> tuple[dict[str, np.ndarray], dict[str, ClinicNoise]]:
    """Every case drawn by its clinician (:func:`assign_clinicians`): case id -> bool mask, and the record."""
    by_name = {style.name: style for style in styles}
    if len(by_name) != len(styles):
        raise ValueError("clinician names must be distinct")
    assigned = assign_clinicians(list(masks), styles, seed)
    noisy, record = {}, {}
    for case_id in sorted(masks):
        noisy[case_id], record[case_id] = clinic_label(np.asarray(masks[case_id], dtype=bool), spacings[case_id],
                                                       by_name[assigned[case_id]], _case_rng(seed, _CLINIC, case_id))
    return noisy, record
