"""Reading DICOM RT Structure Sets from any system onto the CT grid, and saying what was passed over.

Masks on the CT grid: ROI by exact name, case-insensitive name or regular expression; contours
assigned to the CT slice whose plane they lie on (every point within
``PLANE_TOLERANCE_FRACTION`` of the slice spacing of that plane), whatever their point density
and whether or not they carry a ContourImageSequence; all contours of a slice combined by the
even-odd rule (holes, keyholes), a voxel inside when its centre is. An RTSTRUCT in another frame
of reference is refused unless explicitly allowed; coordinates that are not numbers (NaN,
infinity, text) are refused as a damaged file. Contours that enclose nothing (OPEN_PLANAR,
POINT), that are not polygons (fewer than three points, a coordinate count not a multiple of
three) or that lie beyond the CT's slices are passed over and counted per ROI
(:class:`ContourNotes`), so callers can tell a partial structure from a whole one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset

from ..dicom.ct_series import CTSeries
from ..errors import FrameOfReferenceMismatchError, ROINotFoundError, StructureSetError
from ..geometry import Grid
from .contours import fill_slice
from .rtstruct import CONTOUR_DATA, RT_STRUCTURE_SET_STORAGE

logger = logging.getLogger(__name__)

PLANE_TOLERANCE_FRACTION = 0.3


@dataclass
class ContourNotes:
    """What reading one ROI found and passed over (counts of contours).

    Attributes
    ----------
    contours
        Contour items of the ROI in the file.
    used
        CLOSED_PLANAR polygons rasterised onto the CT.
    not_closed
        OPEN_PLANAR, POINT and other contours that enclose nothing.
    not_polygons
        Contours with fewer than three points or a coordinate count not a multiple of three
        (damaged data).
    outside
        Polygons on planes beyond the CT's first or last slice.
    """

    contours: int = 0
    used: int = 0
    not_closed: int = 0
    not_polygons: int = 0
    outside: int = 0

    @property
    def all_outside(self) -> bool:
        """True when the ROI has polygons and every one lies beyond the CT's slices."""
        return self.outside > 0 and self.used == 0

    def describe(self) -> str:
        """What was passed over, in words ('' when nothing was)."""
        parts = [f"{n} {what}" for n, what in ((self.not_polygons, "damaged (not a polygon)"),
                                               (self.not_closed, "open or point"),
                                               (self.outside, "beyond the CT's slices")) if n]
        return f"{', '.join(parts)} of {self.contours} contour(s) passed over" if parts else ""


def select_rois(names: Sequence[str], roi: str | Sequence[str] | None) -> list[str]:
    """Names among ``names`` that ``roi`` asks for.

    ``roi`` is None (all), a name, or a list of names; each name matches exactly, else
    case-insensitively, else as a regular expression matched against the whole name
    (case-insensitive), in that order of preference.
    """
    if roi is None:
        return list(names)
    wanted = [roi] if isinstance(roi, str) else list(roi)
    chosen: list[str] = []
    for want in wanted:
        exact = [n for n in names if n == want]
        if not exact:
            exact = [n for n in names if n.lower() == want.lower()]
        if not exact:
            try:
                pattern = re.compile(want, re.IGNORECASE)
            except re.error:
                pattern = None
            exact = [n for n in names if pattern is not None and pattern.fullmatch(n)]
        if not exact:
            raise ROINotFoundError(
                f"No ROI matches '{want}'. The structure set has: {', '.join(names) or '(no ROIs)'}. "
                "Give one of these names (case does not matter) or a regular expression."
            )
        chosen.extend(n for n in exact if n not in chosen)
    return chosen


def read_rtstruct(
    path: str | Path,
    ct: CTSeries,
    roi: str | Sequence[str] | None = "CTV",
    *,
    allow_frame_of_reference_mismatch: bool = False,
) -> dict[str, sitk.Image]:
    """Rasterise ROIs of an RT Structure Set onto the CT grid (see :func:`read_rtstruct_with_notes`)."""
    masks, _ = read_rtstruct_with_notes(path, ct, roi,
                                        allow_frame_of_reference_mismatch=allow_frame_of_reference_mismatch)
    return masks


def read_rtstruct_with_notes(
    path: str | Path,
    ct: CTSeries,
    roi: str | Sequence[str] | None = "CTV",
    *,
    allow_frame_of_reference_mismatch: bool = False,
) -> tuple[dict[str, sitk.Image], dict[str, ContourNotes]]:
    """Rasterise ROIs of an RT Structure Set onto the CT grid, with what was passed over per ROI.

    Parameters
    ----------
    path
        The RTSTRUCT file.
    ct
        The CT the structures were drawn on.
    roi
        Which ROIs: a name, a list of names, regular expressions, or None for all (see
        ``select_rois``).
    allow_frame_of_reference_mismatch
        Read even when the RTSTRUCT's frame of reference is not the CT's (contours are then
        placed by their coordinates alone, which is only right if both share the same space).

    Returns
    -------
    tuple
        ROI name -> uint8 mask image (1 inside) on ``ct.image``'s grid, and ROI name ->
        :class:`ContourNotes`.

    Raises
    ------
    StructureSetError
        Not an RTSTRUCT, damaged coordinates, a contour off the CT's slice planes.
    FrameOfReferenceMismatchError, ROINotFoundError
        Another scan's structures; no ROI matches ``roi``.
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad input file
        raise StructureSetError(f"'{path}' cannot be read as DICOM ({exc}). Give an RTSTRUCT file.") from exc
    if str(ds.get("SOPClassUID", "")) != RT_STRUCTURE_SET_STORAGE and ds.get("Modality") != "RTSTRUCT":
        raise StructureSetError(
            f"'{path}' is not an RT Structure Set (SOP class {ds.get('SOPClassUID', '?')}, modality "
            f"{ds.get('Modality', '?')}). Give the RTSTRUCT file."
        )
    _check_frame_of_reference(ds, ct, path, allow_frame_of_reference_mismatch)
    numbers = {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}
    chosen = select_rois(list(numbers.values()), roi)
    grid = ct.grid
    out: dict[str, sitk.Image] = {}
    notes: dict[str, ContourNotes] = {}
    for item in ds.get("ROIContourSequence", []):
        name = numbers.get(int(item.ReferencedROINumber))
        if name not in chosen:
            continue
        out[name], notes[name] = _rasterise_roi(name, item, grid)
    for name in chosen:
        if name not in out:  # an ROI declared without any contour item
            out[name] = grid.image(np.zeros(grid.shape, dtype=np.uint8))
            notes[name] = ContourNotes()
    return {name: out[name] for name in chosen}, {name: notes[name] for name in chosen}


def _check_frame_of_reference(ds: Dataset, ct: CTSeries, path: Path, allow: bool) -> None:
    theirs = {str(f.FrameOfReferenceUID) for f in ds.get("ReferencedFrameOfReferenceSequence", [])
              if "FrameOfReferenceUID" in f}
    ours = ct.reference.frame_of_reference_uid
    if ours and theirs and ours not in theirs:
        message = (
            f"'{path}' was drawn in frame of reference {', '.join(sorted(theirs))}, but the CT is in {ours}: "
            "the structures belong to another scan (or an unregistered one)."
        )
        if not allow:
            raise FrameOfReferenceMismatchError(
                message + " Pair the RTSTRUCT with its own CT; if you know both share one space, allow the "
                "mismatch explicitly (allow_frame_of_reference_mismatch=True)."
            )
        logger.warning("%s Read anyway, as asked.", message)


def _contour_data(contour: Dataset, name: str, number: int) -> np.ndarray:
    """ContourData as finite floats, parsed straight from the encoded string when pydicom has not yet."""
    element = contour.get_item(CONTOUR_DATA)
    if element is None:
        return np.zeros(0)
    try:
        if element.is_raw:
            text = element.value.decode("ascii").strip(" \x00")
            data = np.array(text.split("\\"), dtype=float) if text else np.zeros(0)
        else:
            data = np.asarray(element.value, dtype=float)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise StructureSetError(f"ROI '{name}': contour {number} has coordinates that are not numbers ({exc}); "
                                "the structure set is damaged. Export it again from the system that made it.") from exc
    if not np.isfinite(data).all():
        raise StructureSetError(f"ROI '{name}': contour {number} has coordinates that are not finite numbers "
                                "(NaN or infinity); the structure set is damaged. Export it again from the system "
                                "that made it.")
    return data


def _rasterise_roi(name: str, item: Dataset, grid: Grid) -> tuple[sitk.Image, ContourNotes]:
    nk = grid.size[2]
    per_slice: dict[int, list[np.ndarray]] = {}
    notes = ContourNotes()
    tolerance = PLANE_TOLERANCE_FRACTION  # in slices
    for number, contour in enumerate(item.get("ContourSequence", []), start=1):
        notes.contours += 1
        kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR"))
        if kind != "CLOSED_PLANAR":
            notes.not_closed += 1
            continue
        data = _contour_data(contour, name, number)
        if data.size < 9 or data.size % 3:
            notes.not_polygons += 1
            continue
        index = grid.lps_to_index(data.reshape(-1, 3))
        k = int(np.rint(index[:, 2].mean()))
        off = float(np.abs(index[:, 2] - k).max())
        if off > tolerance:
            raise StructureSetError(
                f"ROI '{name}': a contour lies {off * grid.spacing[2]:.2f} mm from the nearest CT slice plane "
                f"(tolerance {tolerance * grid.spacing[2]:.2f} mm). The structure set was drawn on a CT with "
                "other slices or another orientation; read it against its own CT."
            )
        if not 0 <= k < nk:
            notes.outside += 1
            continue
        notes.used += 1
        per_slice.setdefault(k, []).append(index[:, :2])
    if notes.describe():
        logger.warning("ROI '%s': %s", name, notes.describe())
    mask = np.zeros(grid.shape, dtype=np.uint8)
    for k, polygons in per_slice.items():
        mask[k] = fill_slice(polygons, (grid.size[1], grid.size[0]))
    return grid.image(mask), notes
