"""From a department's DICOM archive to one HDF5 training set (``ctv dataset build``).

Owns: walking an archive, pairing each RTSTRUCT with its CT, choosing the target ROI by
name, rasterising it on the CT grid, and writing the cases (and the reasons for every
structure set that could not be used) into the file whose schema, reader and storage choices
are in :mod:`ctv_core.hdf5_dataset`::

    /                      attrs: format="ctv-dataset", format_version=1, created, ctv_core_version,
                                  target_pattern, target_aliases, extra_rois, deidentified, ...
    /cases/<case_id>/ct            int16 [k, j, i] HU     attrs: spacing, origin, direction, roi_name,
    /cases/<case_id>/masks/target  uint8 [k, j, i] 0/1          patient_key, patient_position, provenance
    /cases/<case_id>/masks/<extra> uint8 [k, j, i] 0/1
    /skipped                       table (source, category, reason)

The rules:

* **Archive**: any folder layout, files with or without ``.dcm``; headers are read with
  :func:`ctv_core.dicom_files.scan_folder`, one top-level folder at a time so that the
  headers of a large archive are never all in memory. Unreadable files are logged and listed
  in the summary; they stop nothing.
* **Case** = one RTSTRUCT file. It is paired with the CT series named in its
  ReferencedFrameOfReferenceSequence > RTReferencedStudySequence > RTReferencedSeriesSequence
  (wherever that series lies in the archive); the frame of reference under which it is named
  must be the CT's FrameOfReferenceUID. A structure set that names no series is paired with
  the one CT series of its frame of reference, if there is exactly one. Each CT is loaded
  with :func:`ctv_core.load_ct_series` (``series_uid`` given, so other series beside it do
  not matter) and only once for all its structure sets.
* **Target ROI**: names matching the regular expression ``RoiSelection.pattern`` (through
  :func:`ctv_core.rtstruct.select_rois`: exact name, else case-insensitive name, else
  case-insensitive full match) or one of ``RoiSelection.aliases`` (compared ignoring case,
  spaces, ``_``, ``-`` and ``.``; default ``DEFAULT_TARGET_ALIASES``). Exactly one ROI must
  match; none or several (two candidate names, or one name used twice) skip the case.
* **Extra ROIs** (``NAME=PATTERN``): stored as ``masks/NAME`` where exactly one ROI matches;
  otherwise recorded in ``extra_rois_missing`` and the case is still used.
* **Skipped** (logged, in ``BuildSummary.skipped`` and the ``/skipped`` table): missing CT,
  frame of reference mismatch, no ROI matches, ambiguous ROI, empty target, a second copy of
  a structure set already used (same SOPInstanceUID), CT that cannot be loaded, CT resampled by the loader (gantry tilt, uneven spacing: the contours cannot lie
  on its voxel slices), structure set that cannot be read. One bad case never stops the run.
* **De-identification** (``deidentify=True``): no patient name, ID, birth date, path or UID is
  written; cases are ``case_NNNNN``, the patient key is an HMAC-SHA256 of the PatientID with a
  secret salt (random per build unless ``deidentify_salt`` is given, never stored); geometry,
  patient position and ROI names are kept.
* **Nothing half-written**: the file is written under a temporary name beside ``OUT.h5`` and
  renamed when complete; an error or interruption removes it and leaves any previous file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pydicom
import SimpleITK as sitk

from .._version import __version__
from ..atomic_files import atomic_file
from ..dicom.ct_series import CTSeries
from ..dicom.files import SkippedFile, scan_folder
from ..dicom.series import load_ct_series
from ..errors import CTVError, DicomInputError, ROINotFoundError, StructureSetError
from .hdf5_reader import (
    CHUNK_KJI,
    FORMAT_NAME,
    FORMAT_VERSION,
    TARGET_MASK,
    CTVDataset,
    DatasetError,
    describe_dataset,
)
from ..cli.progress import StageBars
from ..structures.rtstruct import RT_STRUCTURE_SET_STORAGE, read_rtstruct, select_rois

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TARGET_ALIASES", "BuildSummary", "BuiltCase", "DatasetError", "RoiSelection", "SkippedCase",
    "add_dataset_commands", "build_dataset", "parse_extra_roi",
]

#: Names clinics give the whole cervical-cancer CTV (primary + nodal, the 45-50.4 Gy volume).
#: Compared ignoring case, spaces, "_", "-" and ".", so "ctv 45", "CTV-45" and "Ctv_45" all
#: match "CTV_45". Parts of the target (CTVp, CTV_T, CTVn, CTV_LN) and boosts (CTV_55, CTV_60)
#: are deliberately absent: they are not the volume the network learns.
DEFAULT_TARGET_ALIASES: tuple[str, ...] = (
    "CTV", "CTV1", "CTV_45", "CTV45", "CTV_4500", "CTV4500", "CTV_45Gy", "CTV45Gy",
    "CTV_50", "CTV50", "CTV_5000", "CTV_50.4", "CTV_5040", "CTV5040",
    "CTVp+n", "CTV_p+n", "CTV_pn", "CTVpn", "CTV_pelvis", "CTV_pelvic", "CTV_total", "CTV_tot", "CTV_all",
)

_PATIENT_KEYWORDS = ("PatientID", "PatientName", "PatientBirthDate")
_EXTRA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
ProgressCallback = Callable[[str, int, int], None]
_LISTED = 30  # skipped structure sets listed one by one in the summary


def _alias_key(name: str) -> str:
    return re.sub(r"[\s_.\-]", "", name.lower())


# --- what to pick ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RoiSelection:
    """Which ROI is the target, and which extra ROIs to store beside it.

    Attributes
    ----------
    pattern
        Regular expression for the target's name (case-insensitive, full match), or None.
    aliases
        Target names accepted as they are (ignoring case, spaces, ``_``, ``-``, ``.``).
    extras
        Stored name -> regular expression for extra ROIs (e.g. ``{"Bladder": "bladder|blase"}``).
    """

    pattern: str | None = None
    aliases: tuple[str, ...] = DEFAULT_TARGET_ALIASES
    extras: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_options(
        cls,
        pattern: str | None = None,
        aliases: Sequence[str] | None = None,
        default_aliases: bool = False,
        extra_rois: Sequence[str] = (),
    ) -> RoiSelection:
        """The selection the command line describes.

        With neither ``pattern`` nor ``aliases`` the default aliases are used; with either,
        only what was given, plus the default aliases when ``default_aliases`` is set.
        ``extra_rois`` are ``NAME=PATTERN`` strings.
        """
        chosen = list(aliases or ())
        if default_aliases or (pattern is None and not chosen):
            chosen = list(DEFAULT_TARGET_ALIASES) + chosen
        extras: dict[str, str] = {}
        for spec in extra_rois:
            name, regex = parse_extra_roi(spec)
            if name.lower() in (n.lower() for n in extras):
                raise DatasetError(f"Extra ROI '{name}' is given twice; give each --extra-roi NAME once.")
            extras[name] = regex
        selection = cls(pattern=pattern, aliases=tuple(dict.fromkeys(chosen)), extras=extras)
        selection.validate()
        return selection

    def validate(self) -> None:
        """Raise ``DatasetError`` naming the problem when the selection cannot be used."""
        if self.pattern is not None:
            _compile(self.pattern, "--roi")
        if not self.pattern and not self.aliases:
            raise DatasetError("No target ROI given: give --roi PATTERN (a regular expression) or --alias NAME.")
        for name, regex in self.extras.items():
            if not _EXTRA_NAME.fullmatch(name) or name.lower() == TARGET_MASK:
                raise DatasetError(
                    f"'{name}' cannot name an extra ROI: use letters, digits and _ . + - (not 'target'), "
                    "e.g. --extra-roi Bladder=bladder|blase."
                )
            _compile(regex, f"--extra-roi {name}")

    def describe(self) -> str:
        parts = [f"pattern '{self.pattern}'"] if self.pattern else []
        if self.aliases:
            parts.append(f"aliases {', '.join(self.aliases)}")
        return " or ".join(parts)


def _compile(regex: str, what: str) -> re.Pattern:
    try:
        return re.compile(regex, re.IGNORECASE)
    except re.error as exc:
        raise DatasetError(f"{what} '{regex}' is not a valid regular expression ({exc}); fix or quote it.") from exc


def parse_extra_roi(spec: str) -> tuple[str, str]:
    """Split ``NAME=PATTERN`` (e.g. ``Bladder=bladder|blase``) into name and pattern."""
    name, sep, regex = spec.partition("=")
    if not sep or not name.strip() or not regex.strip():
        raise DatasetError(
            f"--extra-roi '{spec}' is not NAME=PATTERN; write e.g. --extra-roi 'Bladder=bladder|blase'."
        )
    return name.strip(), regex.strip()


# --- results --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuiltCase:
    """A case written to the file."""

    case_id: str
    source: Path
    patient_key: str
    roi_name: str
    extras_missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class SkippedCase:
    """A structure set that gave no case: ``category`` for counting, ``reason`` in full."""

    source: Path
    category: str
    reason: str


@dataclass
class BuildSummary:
    """What ``build_dataset`` did. Paths and reasons here are full (the console's view), even
    when the file itself is de-identified."""

    out_path: Path
    cases: list[BuiltCase] = field(default_factory=list)
    skipped: list[SkippedCase] = field(default_factory=list)
    unreadable_files: list[SkippedFile] = field(default_factory=list)
    unpaired_ct_series: list[str] = field(default_factory=list)
    unmatched_roi_names: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def skipped_by_category(self) -> dict[str, int]:
        return dict(Counter(s.category for s in self.skipped).most_common())

    def describe(self) -> str:
        """A few lines for the command line and logs."""
        patients = len({c.patient_key for c in self.cases})
        lines = [f"Wrote {self.out_path}: {len(self.cases)} case(s) from {patients} patient(s) "
                 f"in {self.seconds:.1f} s"]
        if self.skipped:
            by = ", ".join(f"{cat} {n}" for cat, n in self.skipped_by_category().items())
            lines.append(f"  skipped {len(self.skipped)} structure set(s): {by}")
            lines.extend(f"    {s.source}: {s.reason}" for s in self.skipped[:_LISTED])
            if len(self.skipped) > _LISTED:
                more = len(self.skipped) - _LISTED
                lines.append(f"    … and {more} more (in the log and the file's skipped table)")
        if self.unmatched_roi_names:
            names = ", ".join(f"{n} ({c})" for n, c in self.unmatched_roi_names.most_common(15))
            lines.append(f"  ROI names in structure sets where no target matched: {names}")
        if self.unreadable_files:
            lines.append(f"  {len(self.unreadable_files)} unreadable file(s) passed over, e.g. "
                         f"{self.unreadable_files[0].path}")
        if self.unpaired_ct_series:
            lines.append(f"  {len(self.unpaired_ct_series)} CT series without a structure set")
        return "\n".join(lines)


# --- the archive, as compact records ------------------------------------------------------------

@dataclass
class _SeriesRecord:
    uid: str
    modality: str
    is_ct: bool
    summary: str
    frame_of_reference_uid: str
    patient: tuple[str, str, str]  # PatientID, PatientName, PatientBirthDate
    files: list[Path] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return Path(os.path.commonpath([str(p.parent) for p in self.files]))


@dataclass
class _StructureSetRecord:
    path: Path
    sop_instance_uid: str
    series_instance_uid: str
    references: list[tuple[str, str]]  # (frame of reference UID, referenced series UID)
    frames_of_reference: set[str]
    roi_names: list[str]


def _scan_units(archive: Path) -> list[Path]:
    """Folders to scan one at a time: the top-level folders, or the whole archive when files lie at its root."""
    entries = sorted(archive.iterdir())
    if any(e.is_file() for e in entries):
        return [archive]
    return [e for e in entries if e.is_dir()]


def _structure_set_record(path: Path, ds: pydicom.Dataset) -> _StructureSetRecord:
    references, frames = [], set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for_uid = str(frame.get("FrameOfReferenceUID", ""))
        if for_uid:
            frames.add(for_uid)
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                uid = str(series.get("SeriesInstanceUID", ""))
                if uid:
                    references.append((for_uid, uid))
    if not frames and ds.get("FrameOfReferenceUID"):
        frames.add(str(ds.FrameOfReferenceUID))
    return _StructureSetRecord(
        path=path,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        references=references,
        frames_of_reference=frames,
        roi_names=[str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])],
    )


def _scan_archive(archive: Path, summary: BuildSummary, progress: ProgressCallback | None):
    series: dict[str, _SeriesRecord] = {}
    structure_sets: list[_StructureSetRecord] = []
    units = _scan_units(archive)
    for n, unit in enumerate(units, start=1):
        found, skipped = scan_folder(unit)
        for s in skipped:
            if s.reason.startswith("unreadable"):
                logger.warning("passed over %s: %s", s.path, s.reason)
                summary.unreadable_files.append(s)
        for s in found:
            first = s.headers[0][1]
            if s.modality == "RTSTRUCT" or s.sop_class_uid == RT_STRUCTURE_SET_STORAGE:
                for path, ds in s.headers:
                    try:
                        structure_sets.append(_structure_set_record(path, ds))
                    except Exception as exc:  # noqa: BLE001 - a malformed sequence is this file's problem only
                        summary.unreadable_files.append(SkippedFile(path, f"unreadable structure set ({exc})"))
                        logger.warning("passed over %s: unreadable structure set (%s)", path, exc)
                continue
            record = series.get(s.key)
            if record is None:
                record = series[s.key] = _SeriesRecord(
                    uid=s.key, modality=s.modality, is_ct=s.is_ct_volume_candidate and not s.uid_missing,
                    summary=s.summary(), frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
                    patient=tuple(str(first.get(k, "") or "") for k in _PATIENT_KEYWORDS),
                )
            record.files.extend(p for p, _ in s.headers)
        del found  # the headers of this folder are not needed any more
        if progress is not None:
            progress("scanning", n, len(units))
    return series, structure_sets


# --- one case ------------------------------------------------------------------------------------

class _CaseSkipped(Exception):
    """Internal: why a structure set gives no case. ``public`` holds no path or UID."""

    def __init__(self, category: str, reason: str, public: str | None = None):
        super().__init__(reason)
        self.category = category
        self.reason = reason
        self.public = public or category


@dataclass
class _PreparedCase:
    structure_set: _StructureSetRecord
    series: _SeriesRecord
    ct: CTSeries
    roi_name: str
    masks: dict[str, tuple[str, sitk.Image]]  # stored name -> (ROI name, mask)
    extras_missing: dict[str, str]  # stored name -> why


def _find_ct(rs: _StructureSetRecord, series: dict[str, _SeriesRecord]) -> _SeriesRecord:
    if not rs.references:
        candidates = [s for s in series.values() if s.is_ct and s.frame_of_reference_uid in rs.frames_of_reference]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise _CaseSkipped("missing CT", "missing CT: the structure set names no CT series and no CT of its "
                               f"frame of reference {', '.join(sorted(rs.frames_of_reference)) or '(none)'} "
                               "is in the archive")
        raise _CaseSkipped("ambiguous CT", f"ambiguous CT: the structure set names no CT series and {len(candidates)} "
                           "CT series share its frame of reference")
    present = [(f, uid) for f, uid in rs.references if uid in series]
    if not present:
        uids = ", ".join(dict.fromkeys(uid for _, uid in rs.references))
        raise _CaseSkipped("missing CT", f"missing CT: the referenced series {uids} is not in the archive",
                           "missing CT: the referenced series is not in the archive")
    cts = list(dict.fromkeys((f, uid) for f, uid in present if series[uid].is_ct))
    if not cts:
        what = "; ".join(series[uid].summary for _, uid in present)
        raise _CaseSkipped("missing CT", f"missing CT: the referenced series is not a loadable CT series ({what})",
                           "missing CT: the referenced series is not a CT image series")
    if len({uid for _, uid in cts}) > 1:
        raise _CaseSkipped("ambiguous CT", f"ambiguous CT: the structure set references {len(cts)} CT series "
                           f"({', '.join(uid for _, uid in cts)})", "ambiguous CT: several CT series referenced")
    for_uid, uid = cts[0]
    record = series[uid]
    theirs = {for_uid} if for_uid else rs.frames_of_reference
    if record.frame_of_reference_uid and theirs and record.frame_of_reference_uid not in theirs:
        raise _CaseSkipped(
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
    alias_keys = {_alias_key(a) for a in rois.aliases}
    matched += [n for n in dict.fromkeys(names) if _alias_key(n) in alias_keys and n not in matched]
    if not matched:
        unmatched.update(list(dict.fromkeys(names)))
        listing = ", ".join(names) or "(no ROIs)"
        message = f"no ROI matches the target ({rois.describe()}); the structure set has: {listing}"
        raise _CaseSkipped("no ROI matches", message, f"no ROI matches; ROIs: {listing}")
    counts = Counter(names)
    if len(matched) > 1 or counts[matched[0]] > 1:
        listing = ", ".join(f"'{n}'" + (f" ({counts[n]} ROIs)" if counts[n] > 1 else "") for n in matched)
        message = f"ambiguous: {listing} all match the target; keep one in the structure set or narrow --roi"
        raise _CaseSkipped("ambiguous ROI", message, f"ambiguous: {listing}")
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


class _CTCache:
    """The last CT loaded (structure sets are processed grouped by CT), or why it failed."""

    def __init__(self):
        self._uid: str | None = None
        self._result: CTSeries | _CaseSkipped | None = None

    def load(self, record: _SeriesRecord) -> CTSeries:
        if record.uid != self._uid:
            self._uid, self._result = record.uid, None
            try:
                ct = load_ct_series(record.folder, series_uid=record.uid)
            except DicomInputError as exc:
                self._result = _CaseSkipped("CT cannot be loaded", f"CT cannot be loaded: {exc}",
                                            f"CT cannot be loaded ({type(exc).__name__})")
            else:
                if ct.regularization is not None:
                    self._result = _CaseSkipped(
                        "CT resampled",
                        f"CT resampled by the loader ({ct.regularization}): the contours cannot lie on its slices",
                        f"CT resampled by the loader ({ct.regularization})",
                    )
                else:
                    self._result = ct
        if isinstance(self._result, _CaseSkipped):
            raise self._result
        return self._result


def _prepare_case(rs: _StructureSetRecord, series: dict[str, _SeriesRecord], rois: RoiSelection,
                  cts: _CTCache, unmatched: Counter, built: dict[str, Path]) -> _PreparedCase:
    if rs.sop_instance_uid in built:
        raise _CaseSkipped("duplicate structure set",
                           f"duplicate structure set: a copy of {built[rs.sop_instance_uid]} (same SOPInstanceUID), "
                           "which is already a case")
    record = _find_ct(rs, series)
    target = _match_target(rs.roi_names, rois, unmatched)
    extras, extras_missing = _match_extras(rs.roi_names, rois)
    ct = cts.load(record)
    try:
        images = read_rtstruct(rs.path, ct, roi=[target, *extras.values()])
    except StructureSetError as exc:
        raise _CaseSkipped("structure set cannot be read", f"structure set cannot be read: {exc}",
                           f"structure set cannot be read ({type(exc).__name__})") from exc
    if not sitk.GetArrayViewFromImage(images[target]).any():
        raise _CaseSkipped("empty target", f"empty target: ROI '{target}' has no contour on the CT's slices")
    masks = {TARGET_MASK: (target, images[target])}
    masks.update({stored: (name, images[name]) for stored, name in extras.items()})
    return _PreparedCase(rs, record, ct, target, masks, extras_missing)


# --- writing --------------------------------------------------------------------------------------

def _strings(values) -> np.ndarray:
    return np.array(list(values), dtype=h5py.string_dtype())


def _patient_key(record: _SeriesRecord, deidentify: bool, salt: bytes) -> str:
    patient_id, name, birth = record.patient
    key = patient_id or (f"name:{name}|{birth}" if name else f"series:{record.uid}")
    if not deidentify:
        return key
    return "p_" + hmac.new(salt, key.encode("utf-8"), hashlib.sha256).hexdigest()[:20]


def _relative(path: Path, archive: Path) -> str:
    try:
        return path.resolve().relative_to(archive.resolve()).as_posix()
    except ValueError:
        return str(path)


def _write_array(group: h5py.Group, name: str, array: np.ndarray) -> h5py.Dataset:
    chunks = tuple(min(c, s) for c, s in zip(CHUNK_KJI, array.shape))
    return group.create_dataset(name, data=array, chunks=chunks, compression="gzip", compression_opts=1,
                                shuffle=array.dtype.itemsize > 1, fletcher32=True)


def _write_case(cases: h5py.Group, case_id: str, case: _PreparedCase, patient_key: str, archive: Path,
                deidentify: bool) -> None:
    image = case.ct.image
    hu = sitk.GetArrayViewFromImage(image)
    rounded = hu.dtype != np.int16
    if rounded:
        info = np.iinfo(np.int16)
        hu = np.clip(np.rint(hu), info.min, info.max).astype(np.int16)
        logger.info("%s: HU rounded to whole numbers to store them as int16", case_id)
    group = cases.create_group(case_id)
    _write_array(group, "ct", np.ascontiguousarray(hu))
    voxel_cc = float(np.prod(image.GetSpacing())) / 1000.0
    masks = group.create_group("masks")
    for stored, (roi_name, mask) in case.masks.items():
        array = (sitk.GetArrayViewFromImage(mask) != 0).astype(np.uint8)
        data = _write_array(masks, stored, array)
        count = int(np.count_nonzero(array))
        data.attrs["roi_name"] = roi_name
        data.attrs["voxel_count"] = count
        data.attrs["volume_cc"] = count * voxel_cc
    a = group.attrs
    a["spacing"] = np.asarray(image.GetSpacing(), dtype=np.float64)
    a["origin"] = np.asarray(image.GetOrigin(), dtype=np.float64)
    a["direction"] = np.asarray(image.GetDirection(), dtype=np.float64)
    a["roi_name"] = case.roi_name
    a["patient_key"] = patient_key
    a["patient_position"] = case.ct.reference.patient_position
    a["hu_rounded"] = rounded
    a["extra_rois_missing"] = _strings(case.extras_missing)
    a["extra_rois_missing_reasons"] = _strings(case.extras_missing.values())
    if not deidentify:
        ref = case.ct.reference
        a["study_instance_uid"] = ref.study_instance_uid
        a["series_instance_uid"] = ref.series_instance_uid
        a["frame_of_reference_uid"] = ref.frame_of_reference_uid
        a["rtstruct_sop_instance_uid"] = case.structure_set.sop_instance_uid
        a["rtstruct_series_instance_uid"] = case.structure_set.series_instance_uid
        a["ct_source"] = _relative(case.ct.folder, archive)
        a["rtstruct_source"] = _relative(case.structure_set.path, archive)
        a["ct_warnings"] = _strings(case.ct.warnings)


def _write_root(h5: h5py.File, archive: Path, rois: RoiSelection, deidentify: bool) -> None:
    a = h5.attrs
    a["format"] = FORMAT_NAME
    a["format_version"] = FORMAT_VERSION
    a["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    a["ctv_core_version"] = __version__
    a["target_pattern"] = rois.pattern or ""
    a["target_aliases"] = _strings(rois.aliases)
    a["extra_rois"] = json.dumps(dict(rois.extras))
    a["deidentified"] = bool(deidentify)
    a["axis_order"] = "k,j,i"
    a["frame"] = "LPS"
    if not deidentify:
        a["source_archive"] = str(archive.resolve())


def _write_skipped(h5: h5py.File, rows: list[tuple[str, str, str]]) -> None:
    text = h5py.string_dtype()
    table = np.array(rows, dtype=[("source", text), ("category", text), ("reason", text)])
    h5.create_dataset("skipped", data=table)


def _share_like_a_new_file(path: Path) -> None:
    """Give the file the permissions the user's umask gives new files (the temporary file is private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


# --- the build ------------------------------------------------------------------------------------

def build_dataset(
    archive: str | Path,
    out_path: str | Path,
    rois: RoiSelection | None = None,
    *,
    deidentify: bool = False,
    deidentify_salt: bytes | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> BuildSummary:
    """Turn a DICOM archive of planning CTs and their RTSTRUCTs into one HDF5 training set.

    Parameters
    ----------
    archive
        Folder holding CT series and RTSTRUCTs in any layout (searched recursively).
    out_path
        The ``.h5`` file to write (schema in :mod:`ctv_core.hdf5_dataset`); written under a
        temporary name beside it and renamed when complete.
    rois
        Target and extra ROIs; default: the target by ``DEFAULT_TARGET_ALIASES``, no extras.
    deidentify
        Store no patient names, IDs, birth dates, paths or UIDs (see the module docstring).
    deidentify_salt
        Secret for the patient-key hash; give the same bytes to get the same keys across builds.
        Default: random for this build.
    overwrite
        Replace an existing ``out_path`` (only once the new file is complete).
    progress
        Called as ``progress(stage, done, total)`` with stage ``"scanning"`` (folders) then
        ``"building"`` (structure sets). An exception it raises aborts the build cleanly.

    Returns
    -------
    BuildSummary
        Cases written, structure sets skipped with reasons, unreadable files.

    Raises
    ------
    DatasetError
        The archive is not a folder, holds no structure set, no case is usable, or ``out_path``
        exists (without ``overwrite``).
    """
    start = time.perf_counter()
    archive, out_path = Path(archive), Path(out_path)
    rois = rois or RoiSelection()
    rois.validate()
    if not archive.is_dir():
        raise DatasetError(f"'{archive}' is not a folder. Give the folder that holds the CT series and RTSTRUCTs.")
    if out_path.is_dir():
        raise DatasetError(f"'{out_path}' is a folder. Give the name of the .h5 file to write.")
    if out_path.exists() and not overwrite:
        raise DatasetError(f"'{out_path}' exists. Choose another name, or replace it (--overwrite).")
    summary = BuildSummary(out_path=out_path)
    series, structure_sets = _scan_archive(archive, summary, progress)
    if not structure_sets:
        cts = sum(1 for s in series.values() if s.is_ct)
        raise DatasetError(
            f"No RTSTRUCT found in '{archive}' ({cts} CT series, {len(summary.unreadable_files)} unreadable file(s)). "
            "Export the structure sets together with the planning CTs into the archive."
        )

    # Group structure sets by the CT they reference so each CT is loaded once.
    def order(rs: _StructureSetRecord):
        return (next((uid for _, uid in rs.references if uid in series), ""), str(rs.path))

    structure_sets.sort(key=order)
    salt = deidentify_salt if deidentify_salt is not None else secrets.token_bytes(32)
    referenced = {uid for rs in structure_sets for _, uid in rs.references}
    summary.unpaired_ct_series = [s.summary for s in series.values() if s.is_ct and s.uid not in referenced]
    cts = _CTCache()
    built_sops: dict[str, Path] = {}  # SOPInstanceUID -> path of structure sets already written
    skipped_rows: list[tuple[str, str, str]] = []
    with atomic_file(out_path) as tmp:
        with h5py.File(tmp, "w") as h5:
            _write_root(h5, archive, rois, deidentify)
            cases = h5.create_group("cases")
            for n, rs in enumerate(structure_sets, start=1):
                try:
                    case = _prepare_case(rs, series, rois, cts, summary.unmatched_roi_names, built_sops)
                except _CaseSkipped as skip:
                    category, reason, public = skip.category, skip.reason, skip.public
                    case = None
                except CTVError as exc:
                    category, reason = "unusable input", f"unusable input: {exc}"
                    public, case = f"unusable input ({type(exc).__name__})", None
                except Exception as exc:  # noqa: BLE001 - one bad case never stops the run; logged with traceback
                    logger.exception("unexpected error on %s", rs.path)
                    category, reason = "unexpected error", f"unexpected error: {type(exc).__name__}: {exc}"
                    public, case = f"unexpected error ({type(exc).__name__})", None
                if case is None:
                    logger.warning("skipped %s: %s", rs.path, reason)
                    summary.skipped.append(SkippedCase(rs.path, category, reason))
                    source = f"structure_set_{n - 1:04d}" if deidentify else _relative(rs.path, archive)
                    skipped_rows.append((source, category, public if deidentify else reason))
                else:
                    case_id = f"case_{len(summary.cases):05d}"
                    key = _patient_key(case.series, deidentify, salt)
                    _write_case(cases, case_id, case, key, archive, deidentify)
                    if rs.sop_instance_uid:
                        built_sops[rs.sop_instance_uid] = rs.path
                    summary.cases.append(BuiltCase(case_id, rs.path, key, case.roi_name, tuple(case.extras_missing)))
                    logger.info("%s: '%s' on CT %s from %s", case_id, case.roi_name, case.series.uid, rs.path)
                    del case
                if progress is not None:
                    progress("building", n, len(structure_sets))
            if not summary.cases:
                by = ", ".join(f"{cat} {k}" for cat, k in summary.skipped_by_category().items())
                names = ", ".join(n for n, _ in summary.unmatched_roi_names.most_common(10))
                hint = f" ROI names seen where nothing matched: {names}." if names else ""
                raise DatasetError(
                    f"None of the {len(structure_sets)} structure set(s) in '{archive}' gave a usable case "
                    f"({by}).{hint} "
                    "Give the target's name with --roi PATTERN (a case-insensitive regular expression) or --alias "
                    "NAME, and make sure each RTSTRUCT's CT is in the archive."
                )
            _write_skipped(h5, skipped_rows)
            h5.attrs["case_count"] = len(summary.cases)
        _share_like_a_new_file(tmp)
    summary.seconds = time.perf_counter() - start
    logger.info("%s", summary.describe())
    return summary


# --- command-line glue (called from ctv_core.cli; parses and calls the functions above) ------------

def add_dataset_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``ctv dataset build`` and ``ctv dataset info`` to the ``ctv`` parser's subcommands."""
    dataset = sub.add_parser("dataset", help="training set from a DICOM archive (build, info)")
    commands = dataset.add_subparsers(dest="dataset_command", required=True)

    p = commands.add_parser("build", parents=[common], help="DICOM archive (CTs + RTSTRUCTs) -> one HDF5 file",
                            description="Pair every RTSTRUCT with its CT, pick the target ROI by name and write "
                                        "one HDF5 training set; unusable cases are skipped with their reason.")
    p.add_argument("archive", type=Path, help="folder with the CT series and RTSTRUCTs (any layout)")
    p.add_argument("out", type=Path, help="the .h5 file to write")
    p.add_argument("--roi", default=None, metavar="PATTERN",
                   help="target ROI name as a regular expression (case-insensitive, full match)")
    p.add_argument("--alias", action="append", default=None, metavar="NAME",
                   help="a target ROI name (repeatable; case, spaces, _ - . ignored)")
    p.add_argument("--default-aliases", action="store_true",
                   help="also accept the built-in target names (used anyway when neither --roi nor --alias is given)")
    p.add_argument("--extra-roi", action="append", default=[], metavar="NAME=PATTERN",
                   help="also store this ROI as masks/NAME, e.g. Bladder='bladder|blase' (repeatable)")
    p.add_argument("--deidentify", action="store_true",
                   help="store no patient names, IDs, birth dates, paths or UIDs (patient key hashed)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it exists")
    p.set_defaults(func=_cmd_dataset_build)

    p = commands.add_parser("info", parents=[common], help="summarise a training set")
    p.add_argument("dataset", type=Path, help="the .h5 file")
    p.add_argument("--json", action="store_true", help="print the info dictionary as JSON")
    p.set_defaults(func=_cmd_dataset_info)


def _cmd_dataset_build(args: argparse.Namespace) -> int:
    rois = RoiSelection.from_options(pattern=args.roi, aliases=args.alias, default_aliases=args.default_aliases,
                                     extra_rois=args.extra_roi)
    with StageBars(args.quiet, {"scanning": "folder", "building": "RTSTRUCT"}) as bars:
        summary = build_dataset(args.archive, args.out, rois, deidentify=args.deidentify, overwrite=args.overwrite,
                                progress=bars)
    print(summary.describe())
    return 0


def _cmd_dataset_info(args: argparse.Namespace) -> int:
    with CTVDataset(args.dataset) as dataset:
        info = dataset.info()
    print(json.dumps(info, indent=2) if args.json else describe_dataset(info))
    return 0
