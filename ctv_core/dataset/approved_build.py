"""A training set of approved contours: each case the CT a clinician approved a contour on, the approved contour as
its target and the approval's edit record (:mod:`ctv_core.evaluation.edits`) as its ``approval`` attribute.

``ctv dataset build`` of a case store (a ``--data`` folder of the review station or DICOM node) takes the store's
approved cases (:func:`ctv_core.service.approvals.approved_versions`) and writes them here. Each approved contour
must lie on the CT it is stored with: the approval's record names the CT its contour lies on (series and frame of
reference UIDs), and the approved RTSTRUCT references that series and frame of reference; a contour whose record or
RTSTRUCT names another CT than the case's is skipped (category ``approval on another CT``) with the UIDs in the build
report, never stored on the wrong CT (:mod:`.approvals`). A source with no approved case is refused
(:class:`DatasetError` naming the fix). The file is written whole or not at all (:class:`.hdf5_writer.DatasetWriter`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pydicom.errors
import SimpleITK as sitk

from ..dicom.ct_series import CTSeries
from ..dicom.series import load_ct_series
from ..errors import CTVError, DatasetError, StructureSetError
from ..structures.rtstruct_reader import read_rtstruct
from .approvals import ANOTHER_CT, check_on_ct, check_record, no_approved_case
from .archive import StructureSetRecord, structure_set_record
from .builder import BuildSummary, BuiltCase, SkippedCase
from .hdf5_writer import DatasetWriter
from .pairing import CaseSkipped

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class ApprovedContour:
    """One approved contour to store.

    ``source``: how the build report names it (case id and version); ``ct_dir``: the folder of the CT series
    the contour was approved on; ``rtstruct``: the approved RTSTRUCT; ``record``: the approval's edit record.
    """

    source: str
    ct_dir: Path
    rtstruct: Path
    record: Mapping[str, Any]


def _check_same_ct(contour: ApprovedContour, header: StructureSetRecord, ct: CTSeries) -> None:
    """Skip a contour whose record or RTSTRUCT names another series or frame of reference than ``ct``'s."""
    check_on_ct(contour.record, ct.reference)
    here = (ct.reference.frame_of_reference_uid, ct.reference.series_instance_uid)
    if header.frames_of_reference - {here[0]} or any(pair != here for pair in header.references):
        raise CaseSkipped(ANOTHER_CT, f"{ANOTHER_CT}: the approved RTSTRUCT references (frame of reference, series) "
                                      f"{sorted(header.references)}, the case's CT is {here}. Not stored: approve "
                                      "the contour again on the case's own CT.")


def _case(contour: ApprovedContour) -> tuple[CTSeries, StructureSetRecord, tuple[str, sitk.Image]]:
    """The contour's CT, its RTSTRUCT's header and the target (ROI name, mask on the CT grid).

    Raises
    ------
    CaseSkipped
        The record is not an edit record, the contour lies on another CT, or several ROIs match.
    CTVError
        The CT or the RTSTRUCT cannot be read, or the RTSTRUCT has no such ROI.
    """
    check_record(contour.record)
    try:
        header = structure_set_record(contour.rtstruct, pydicom.dcmread(contour.rtstruct, stop_before_pixels=True))
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise StructureSetError(f"the approved RTSTRUCT '{contour.rtstruct}' cannot be read ({exc})") from exc
    ct = load_ct_series(contour.ct_dir)
    _check_same_ct(contour, header, ct)
    masks = read_rtstruct(contour.rtstruct, ct, roi=str(contour.record.get("roi") or "CTV"))
    if len(masks) != 1:
        raise CaseSkipped("ambiguous ROI", f"ambiguous ROI: the approved RTSTRUCT has {len(masks)} ROIs named like "
                                           f"the approved one ({', '.join(masks)}); approve a version with one CTV.")
    return ct, header, next(iter(masks.items()))


def build_approved_dataset(contours: Sequence[ApprovedContour], out_path: str | Path, *, where: str | Path,
                           overwrite: bool = False,
                           progress: Callable[[str, int, int], None] | None = None) -> BuildSummary:
    """Write the approved contours as one HDF5 training set (schema: :mod:`.hdf5_schema`, with ``approval``).

    Parameters
    ----------
    contours
        The approved contours (one per case; a case store's current approvals).
    out_path
        The ``.h5`` file to write (temporary name, renamed when complete).
    where
        The source's folder (root attribute ``source_archive``; named in errors).
    overwrite
        Replace an existing ``out_path``.
    progress
        Called as ``progress("building", done, total)``.

    Raises
    ------
    DatasetError
        No approved contour, none usable, or ``out_path`` exists (without ``overwrite``).
    """
    start = time.perf_counter()
    out_path = Path(out_path)
    if not contours:
        raise no_approved_case(where)
    if out_path.exists() and not overwrite:
        raise DatasetError(f"'{out_path}' exists. Choose another name, or replace it (--overwrite).")
    summary = BuildSummary(out_path=out_path)
    writer = DatasetWriter(out_path, target_pattern="", target_aliases=(), source_archive=Path(where).resolve())
    with writer:
        for n, contour in enumerate(contours, start=1):
            try:
                ct, header, target = _case(contour)
            except CaseSkipped as skip:
                category, reason = skip.category, skip.reason
            except CTVError as exc:
                category, reason = "unusable input", f"unusable input: {exc}"
            else:
                case_id = f"case_{len(summary.cases):05d}"
                ref = ct.reference
                key = ref.patient_study.patient_id or f"series:{ref.series_instance_uid}"
                writer.add_case(case_id, ct.image, {"target": target}, patient_key=key,
                                patient_position=ref.patient_position,
                                provenance={"study_instance_uid": ref.study_instance_uid,
                                            "series_instance_uid": ref.series_instance_uid,
                                            "frame_of_reference_uid": ref.frame_of_reference_uid,
                                            "rtstruct_sop_instance_uid": header.sop_instance_uid,
                                            "rtstruct_series_instance_uid": header.series_instance_uid,
                                            "ct_source": str(contour.ct_dir), "rtstruct_source": str(contour.rtstruct),
                                            "ct_warnings": list(ct.warnings)},
                                approval=contour.record)
                summary.cases.append(BuiltCase(case_id, contour.rtstruct, key, target[0]))
                category = None
            if category is not None:
                logger.warning("skipped %s: %s", contour.source, reason)
                summary.skipped.append(SkippedCase(Path(contour.source), category, reason))
                writer.add_skipped(contour.source, category, reason)
            if progress is not None:
                progress("building", n, len(contours))
        if not summary.cases:
            raise DatasetError(f"None of the {len(contours)} approved case(s) in '{where}' could be used: " +
                               "; ".join(f"{s.source}: {s.reason}" for s in summary.skipped))
    summary.seconds = time.perf_counter() - start
    return summary
