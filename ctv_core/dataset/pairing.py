"""One structure set as one training case: its CT found, its target ROI chosen, its masks rasterised.

The rules (each failure is a :class:`CaseSkipped` with a category for counting and a reason):

* A structure set is paired with the CT series named in its ReferencedFrameOfReferenceSequence
  > RTReferencedStudySequence > RTReferencedSeriesSequence (wherever that series lies in the
  archive); the frame of reference under which it is named must be the CT's. A structure set
  that names no series is paired with the one CT series of its frame of reference, if there
  is exactly one.
* Each CT is loaded with :func:`ctv_core.load_ct_series` (``series_uid`` given, so other
  series beside it do not matter) and only once for all its structure sets; a CT the loader
  resampled (gantry tilt, uneven spacing) is refused, as contours cannot lie on its slices.
* Exactly one ROI must match the target (:mod:`.roi_selection`); extra ROIs are stored where
  exactly one ROI matches, else recorded as missing.
* With ``tissue_labels``, the tissue label map beside the RTSTRUCT file
  (``tissue_labels.nii.gz`` and its legend ``tissue_labels.json``, as ``ctv phantom`` writes
  them: :mod:`ctv_core.structures.label_maps`) must exist and lie on the CT's grid.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..dicom.ct_series import CTSeries
from ..dicom.series import load_ct_series
from ..errors import DicomInputError, GridMismatchError, ROINotFoundError, StructureSetError
from ..structures.catalogue import alias_key
from ..structures.label_maps import LABELS_FILE, LEGEND_FILE, TissueLegend, find_tissue_labels, read_tissue_labels
from ..structures.rtstruct_reader import read_rtstruct_with_notes, select_rois
from .archive import SeriesRecord, StructureSetRecord
from .hdf5_schema import TARGET_MASK
from .roi_selection import RoiSelection


class CaseSkipped(Exception):
    """Why a structure set gives no case. ``public`` holds no path or UID."""

    def __init__(self, category: str, reason: str, public: str | None = None):
        super().__init__(reason)
        self.category = category
        self.reason = reason
        self.public = public or category


@dataclass
class PairedCase:
    """A structure set ready to be written: its CT, the target's ROI name, the masks on the CT grid."""

    structure_set: StructureSetRecord
    series: SeriesRecord
    ct: CTSeries
    roi_name: str
    masks: dict[str, tuple[str, sitk.Image]]  # stored name -> (ROI name, mask)
    extras_missing: dict[str, str]  # stored name -> why
    dropped_contours: dict[str, int] = field(default_factory=dict)  # ROI name -> contours passed over as damaged
    tissue_labels: tuple[np.ndarray, TissueLegend] | None = None  # uint8 [k, j, i] on the CT grid, and its legend


def find_ct(rs: StructureSetRecord, series: dict[str, SeriesRecord]) -> SeriesRecord:
    if not rs.references:
        candidates = [s for s in series.values() if s.is_ct and s.frame_of_reference_uid in rs.frames_of_reference]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise CaseSkipped("missing CT", "missing CT: the structure set names no CT series and no CT of its "
                               f"frame of reference {', '.join(sorted(rs.frames_of_reference)) or '(none)'} "
                               "is in the archive")
        raise CaseSkipped("ambiguous CT", f"ambiguous CT: the structure set names no CT series and {len(candidates)} "
                           "CT series share its frame of reference")
    present = [(f, uid) for f, uid in rs.references if uid in series]
    if not present:
        uids = ", ".join(dict.fromkeys(uid for _, uid in rs.references))
        raise CaseSkipped("missing CT", f"missing CT: the referenced series {uids} is not in the archive",
                           "missing CT: the referenced series is not in the archive")
    cts = list(dict.fromkeys((f, uid) for f, uid in present if series[uid].is_ct))
    if not cts:
        what = "; ".join(series[uid].summary for _, uid in present)
        raise CaseSkipped("missing CT", f"missing CT: the referenced series is not a loadable CT series ({what})",
                           "missing CT: the referenced series is not a CT image series")
    if len({uid for _, uid in cts}) > 1:
        raise CaseSkipped("ambiguous CT", f"ambiguous CT: the structure set references {len(cts)} CT series "
                           f"({', '.join(uid for _, uid in cts)})", "ambiguous CT: several CT series referenced")
    for_uid, uid = cts[0]
    record = series[uid]
    theirs = {for_uid} if for_uid else rs.frames_of_reference
    if record.frame_of_reference_uid and theirs and record.frame_of_reference_uid not in theirs:
        raise CaseSkipped(
            "frame of reference mismatch",
            f"frame of reference mismatch: the structure set names series {uid} in frame of reference "
            f"{', '.join(sorted(theirs))}, but that CT is in {record.frame_of_reference_uid}",
        )
    return record


def _match_target(names: list[str], rois: RoiSelection, unmatched: Counter) -> str:
    matched: list[str] = []
    if rois.pattern:
        try:
            matched = select_rois(list(dict.fromkeys(names)), rois.pattern)
        except ROINotFoundError:
            matched = []
    alias_keys = {alias_key(a) for a in rois.aliases}
    matched += [n for n in dict.fromkeys(names) if alias_key(n) in alias_keys and n not in matched]
    if not matched:
        unmatched.update(list(dict.fromkeys(names)))
        listing = ", ".join(names) or "(no ROIs)"
        message = f"no ROI matches the target ({rois.describe()}); the structure set has: {listing}"
        raise CaseSkipped("no ROI matches", message, f"no ROI matches; ROIs: {listing}")
    counts = Counter(names)
    if len(matched) > 1 or counts[matched[0]] > 1:
        listing = ", ".join(f"'{n}'" + (f" ({counts[n]} ROIs)" if counts[n] > 1 else "") for n in matched)
        message = f"ambiguous: {listing} all match the target; keep one in the structure set or narrow --roi"
        raise CaseSkipped("ambiguous ROI", message, f"ambiguous: {listing}")
    return matched[0]


def _match_extras(names: list[str], rois: RoiSelection) -> tuple[dict[str, str], dict[str, str]]:
    found, missing = {}, {}
    counts = Counter(names)
    for stored, regex in rois.extras.items():
        try:
            matched = select_rois(list(counts), regex)
        except ROINotFoundError:
            missing[stored] = f"no ROI matches '{regex}'"
            continue
        if len(matched) > 1 or counts[matched[0]] > 1:
            missing[stored] = f"ambiguous: {', '.join(matched)}"
            continue
        found[stored] = matched[0]
    return found, missing


class CTCache:
    """The last CT loaded (structure sets are processed grouped by CT), or why it failed."""

    def __init__(self):
        self._uid: str | None = None
        self._result: CTSeries | CaseSkipped | None = None

    def load(self, record: SeriesRecord) -> CTSeries:
        if record.uid != self._uid:
            self._uid, self._result = record.uid, None
            try:
                ct = load_ct_series(record.folder, series_uid=record.uid)
            except DicomInputError as exc:
                self._result = CaseSkipped("CT cannot be loaded", f"CT cannot be loaded: {exc}",
                                            f"CT cannot be loaded ({type(exc).__name__})")
            else:
                if ct.regularization is not None:
                    self._result = CaseSkipped(
                        "CT resampled",
                        f"CT resampled by the loader ({ct.regularization}): the contours cannot lie on its slices",
                        f"CT resampled by the loader ({ct.regularization})",
                    )
                else:
                    self._result = ct
        if isinstance(self._result, CaseSkipped):
            raise self._result
        return self._result


def _tissue_labels(rs: StructureSetRecord, ct: CTSeries) -> tuple[np.ndarray, TissueLegend]:
    """The tissue label map beside the structure set's file, on the CT's grid, or ``CaseSkipped``."""
    path = find_tissue_labels(rs.path.parent)
    if path is None:
        raise CaseSkipped("no tissue labels", f"no tissue label map: {LABELS_FILE} with {LEGEND_FILE} is not beside "
                          f"{rs.path.name} (ctv phantom writes them; build without --tissue-labels otherwise)",
                          "no tissue label map beside the structure set")
    try:
        return read_tissue_labels(path, ct.grid)
    except (StructureSetError, GridMismatchError) as exc:
        raise CaseSkipped("tissue labels unusable", f"tissue labels unusable: {exc}",
                          f"tissue labels unusable ({type(exc).__name__})") from exc


def pair_case(rs: StructureSetRecord, series: dict[str, SeriesRecord], rois: RoiSelection,
              cts: CTCache, unmatched: Counter, built: dict[str, Path], strict: bool = False,
              tissue_labels: bool = False) -> PairedCase:
    """The case a structure set gives, or ``CaseSkipped`` saying why it gives none.

    ``strict`` also skips a structure set whose chosen ROIs have damaged contours (passed over
    otherwise, and recorded in ``PairedCase.dropped_contours``); ``tissue_labels`` reads the
    tissue label map beside the structure set (and skips it without one).
    """
    if rs.sop_instance_uid in built:
        raise CaseSkipped("duplicate structure set",
                          f"duplicate structure set: a copy of {built[rs.sop_instance_uid]} (same SOPInstanceUID), "
                          "which is already a case")
    record = find_ct(rs, series)
    target = _match_target(rs.roi_names, rois, unmatched)
    extras, extras_missing = _match_extras(rs.roi_names, rois)
    ct = cts.load(record)
    try:
        images, notes = read_rtstruct_with_notes(rs.path, ct, roi=[target, *extras.values()])
    except StructureSetError as exc:
        raise CaseSkipped("structure set cannot be read", f"structure set cannot be read: {exc}",
                          f"structure set cannot be read ({type(exc).__name__})") from exc
    dropped = {name: note.not_polygons for name, note in notes.items() if note.not_polygons}
    if dropped and strict:
        listing = ", ".join(f"'{name}' {n}" for name, n in dropped.items())
        raise CaseSkipped("damaged contours", f"damaged contours (--strict): contours that are not polygons in "
                          f"{listing}", f"damaged contours in {len(dropped)} ROI(s)")
    if not sitk.GetArrayViewFromImage(images[target]).any():
        raise CaseSkipped("empty target", f"empty target: ROI '{target}' has no contour on the CT's slices")
    masks = {TARGET_MASK: (target, images[target])}
    masks.update({stored: (name, images[name]) for stored, name in extras.items()})
    labels = _tissue_labels(rs, ct) if tissue_labels else None
    return PairedCase(rs, record, ct, target, masks, extras_missing, dropped, labels)
