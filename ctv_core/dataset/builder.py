"""From a department's DICOM archive to one HDF5 training set (``ctv dataset build``).

The build: scan the archive (:mod:`.archive`), pair each RTSTRUCT with its CT and choose its
target ROI (:mod:`.pairing`, :mod:`.roi_selection`), write the cases and the reasons for every
structure set that could not be used (:mod:`.hdf5_writer`, schema in :mod:`.hdf5_schema`)::

    /                      attrs: format="ctv-dataset", format_version=1, created, ctv_core_version,
                                  target_pattern, target_aliases, extra_rois, deidentified, ...
    /cases/<case_id>/ct            int16 [k, j, i] HU     attrs: spacing, origin, direction, roi_name,
    /cases/<case_id>/masks/target  uint8 [k, j, i] 0/1          patient_key, patient_position, provenance
    /cases/<case_id>/masks/<extra> uint8 [k, j, i] 0/1
    /cases/<case_id>/tissue_labels uint8 [k, j, i]        (--tissue-labels; legend: root attr tissue_legend)
    /skipped                       table (source, category, reason)

The rules:

* **Archive**: any folder layout, files with or without ``.dcm``; headers are read with
  :func:`ctv_core.dicom.files.scan_folder`, one top-level folder at a time so that the
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
  :func:`ctv_core.structures.rtstruct_reader.select_rois`: exact name, else case-insensitive name, else
  case-insensitive full match) or one of ``RoiSelection.aliases`` (compared ignoring case,
  spaces, ``_``, ``-`` and ``.``; default: the structure catalogue's CTV aliases). Exactly one ROI must
  match; none or several (two candidate names, or one name used twice) skip the case.
* **Extra ROIs** (``NAME=PATTERN``): stored as ``masks/NAME`` where exactly one ROI matches;
  otherwise recorded in ``extra_rois_missing`` and the case is still used.
* **Damaged contours** (fewer than three points, a coordinate count not a multiple of three)
  are passed over and counted per ROI in the case's ``dropped_contours``; ``strict=True``
  (``--strict``) skips such cases instead. Coordinates that are not numbers make the whole
  structure set unreadable.
* **Skipped** (logged, in ``BuildSummary.skipped`` and the ``/skipped`` table): missing CT,
  frame of reference mismatch, no ROI matches, ambiguous ROI, empty target, a second copy of
  a structure set already used (same SOPInstanceUID), CT that cannot be loaded, CT resampled by the loader (gantry tilt, uneven spacing: the contours cannot lie
  on its voxel slices), structure set that cannot be read. One bad case never stops the run.
* **De-identification** (``deidentify=True``): no patient name, ID, birth date, path or UID is
  written; cases are ``case_NNNNN``, the patient key is an HMAC-SHA256 of the PatientID with a
  secret salt (random per build unless ``deidentify_salt`` is given, never stored); geometry,
  patient position and ROI names are kept.
* **Tissue label maps** (``tissue_labels=True``, ``--tissue-labels``): each case's tissue label
  map (beside its RTSTRUCT, as ``ctv phantom`` writes it) is stored as ``tissue_labels`` for
  appearance-randomised training; a structure set without one, or whose legend differs from
  the first case's, is skipped.
* **Approved only** (``approved_only=True``, ``--approved-only``): only RTSTRUCTs with their approval's
  edit record beside them (``X.ai-edits.json``, as Slicer's Export writes it) are used, the record stored
  as the case's ``approval``; see :mod:`.approvals`.
* **Nothing half-written**: the file is written under a temporary name beside ``OUT.h5`` and
  renamed when complete; an error or interruption removes it and leaves any previous file.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..dicom.files import SkippedFile
from ..errors import CTVError, DatasetError
from ..structures.label_maps import TissueLegend
from ..evaluation.edits import sidecar_path
from .approvals import approval_beside, check_on_ct, no_approved_case
from .archive import ProgressCallback, SeriesRecord, StructureSetRecord, scan_archive
from .hdf5_writer import DatasetWriter
from .pairing import CaseSkipped, CTCache, PairedCase, pair_case
from .roi_selection import DEFAULT_TARGET_ALIASES, RoiSelection, parse_extra_roi

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TARGET_ALIASES", "BuildSummary", "BuiltCase", "DatasetError", "RoiSelection", "SkippedCase",
    "build_dataset", "parse_extra_roi",
]

_LISTED = 30  # skipped structure sets listed one by one in the summary


@dataclass(frozen=True)
class BuiltCase:
    """A case written to the file."""

    case_id: str
    source: Path
    patient_key: str
    roi_name: str
    extras_missing: tuple[str, ...] = ()
    dropped_contours: dict[str, int] = field(default_factory=dict)


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


def _patient_key(record: SeriesRecord, deidentify: bool, salt: bytes) -> str:
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


def _provenance(case: PairedCase, archive: Path) -> dict[str, str | list[str]]:
    ref = case.ct.reference
    return {"study_instance_uid": ref.study_instance_uid, "series_instance_uid": ref.series_instance_uid,
            "frame_of_reference_uid": ref.frame_of_reference_uid,
            "rtstruct_sop_instance_uid": case.structure_set.sop_instance_uid,
            "rtstruct_series_instance_uid": case.structure_set.series_instance_uid,
            "ct_source": _relative(case.ct.folder, archive),
            "rtstruct_source": _relative(case.structure_set.path, archive),
            "ct_warnings": list(case.ct.warnings)}


def _check_legend(case: PairedCase, legend: TissueLegend | None) -> None:
    """Every case of a file shares one tissue legend (the first case's)."""
    if case.tissue_labels is None or legend is None:
        return
    if case.tissue_labels[1].labels != legend.labels:
        raise CaseSkipped("other tissue legend", "other tissue legend: its tissue label map numbers tissues "
                          f"unlike the cases already stored ({case.tissue_labels[1].source or 'unknown source'} vs "
                          f"{legend.source or 'unknown source'}); build phantoms of one version together")


def build_dataset(
    archive: str | Path,
    out_path: str | Path,
    rois: RoiSelection | None = None,
    *,
    deidentify: bool = False,
    deidentify_salt: bytes | None = None,
    overwrite: bool = False,
    strict: bool = False,
    tissue_labels: bool = False,
    approved_only: bool = False,
    progress: ProgressCallback | None = None,
) -> BuildSummary:
    """Turn a DICOM archive of planning CTs and their RTSTRUCTs into one HDF5 training set.

    Parameters
    ----------
    archive
        Folder holding CT series and RTSTRUCTs in any layout (searched recursively).
    out_path
        The ``.h5`` file to write (schema in :mod:`ctv_core.dataset.hdf5_schema`); written under a
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
    strict
        Skip a structure set whose chosen ROIs have damaged contours (not polygons) instead of
        storing the case without them (the count per ROI is stored either way).
    tissue_labels
        Store each case's tissue label map (see the module docstring); cases without one are skipped.
    approved_only
        Use only RTSTRUCTs exported with their approval's record beside them (``X.ai-edits.json`` beside
        ``X.dcm``, as Slicer's Export writes it), storing the record as the case's ``approval`` (not when
        de-identified); one whose record puts the contour on another CT is skipped (:mod:`.approvals`).
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
        The archive is not a folder, holds no structure set (with ``approved_only``: no approved
        one), no case is usable, or ``out_path`` exists (without ``overwrite``).
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
    series, structure_sets, summary.unreadable_files = scan_archive(archive, progress)
    if not structure_sets:
        cts = sum(1 for s in series.values() if s.is_ct)
        raise DatasetError(
            f"No RTSTRUCT found in '{archive}' ({cts} CT series, {len(summary.unreadable_files)} unreadable file(s)). "
            "Export the structure sets together with the planning CTs into the archive."
        )

    if approved_only and not any(sidecar_path(rs.path).is_file() for rs in structure_sets):
        raise no_approved_case(archive)

    # Group structure sets by the CT they reference so each CT is loaded once.
    def order(rs: StructureSetRecord):
        return (next((uid for _, uid in rs.references if uid in series), ""), str(rs.path))

    structure_sets.sort(key=order)
    salt = deidentify_salt if deidentify_salt is not None else secrets.token_bytes(32)
    referenced = {uid for rs in structure_sets for _, uid in rs.references}
    summary.unpaired_ct_series = [s.summary for s in series.values() if s.is_ct and s.uid not in referenced]
    cts = CTCache()
    built_sops: dict[str, Path] = {}  # SOPInstanceUID -> path of structure sets already written
    writer = DatasetWriter(out_path, target_pattern=rois.pattern or "", target_aliases=rois.aliases,
                           extra_rois=rois.extras, deidentified=deidentify,
                           source_archive=None if deidentify else archive.resolve())
    with writer:
        for n, rs in enumerate(structure_sets, start=1):
            try:
                approval = approval_beside(rs.path) if approved_only else None
                case = pair_case(rs, series, rois, cts, summary.unmatched_roi_names, built_sops, strict, tissue_labels)
                _check_legend(case, writer.tissue_legend)
                if approval is not None:
                    check_on_ct(approval, case.ct.reference)
            except CaseSkipped as skip:
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
                writer.add_skipped(source, category, public if deidentify else reason)
            else:
                case_id = f"case_{len(summary.cases):05d}"
                key = _patient_key(case.series, deidentify, salt)
                writer.add_case(case_id, case.ct.image, case.masks, patient_key=key,
                                patient_position=case.ct.reference.patient_position,
                                extras_missing=case.extras_missing, dropped_contours=case.dropped_contours,
                                provenance=None if deidentify else _provenance(case, archive),
                                tissue_labels=case.tissue_labels,
                                approval=None if deidentify else approval)
                if rs.sop_instance_uid:
                    built_sops[rs.sop_instance_uid] = rs.path
                summary.cases.append(BuiltCase(case_id, rs.path, key, case.roi_name, tuple(case.extras_missing),
                                               dict(case.dropped_contours)))
                if case.dropped_contours:
                    logger.warning("%s: damaged contours passed over (%s); build with --strict to skip such cases",
                                   case_id, case.dropped_contours)
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
    summary.seconds = time.perf_counter() - start
    logger.info("%s", summary.describe())
    return summary
