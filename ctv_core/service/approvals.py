"""Approvals in the case store: what the clinician changed in the AI contour, measured and recorded when a version
of a case is approved (the review station, and a DICOM node's cases held for review before sending).

The approved version's CTV is compared with the AI contour it started from: the version itself
when it is a prediction, otherwise the prediction at the root of its ``derives_from`` chain (the
review station's edits name the version they were made from). Both are read onto the case's CT
(``ctv.nii.gz``, or the RTSTRUCT's CTV for a DICOM node's versions) and measured by
:func:`ctv_core.evaluation.edits.edit_figures`. The record (:func:`ctv_core.evaluation.edits.edit_record`)
goes beside the version's RTSTRUCT (``rtstruct.ai-edits.json``) and into the index's approvals
table, in the transaction that records the approval (:meth:`.outbox.Outbox.approve`); an
approval that cannot be measured (another CT, no prediction to start from) is refused before
anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import SimpleITK as sitk

from ..dicom.ct_series import CTSeries
from ..dicom.series import load_ct_series
from ..errors import EditRecordError, StoreError, describe_os_error
from ..evaluation.edits import (AIProvenance, check_same_ct, edit_figures, edit_record, sidecar_path,
                                write_edit_record)
from ..inference.predict_job import FILE_NAMES, REPORT
from ..structures.mask_files import read_mask
from ..structures.rtstruct_reader import read_rtstruct

if TYPE_CHECKING:
    from .store import CaseStore

#: Where a record is said to be made.
DOOR = "review-station"
#: The approved RTSTRUCT of a version (its record goes beside it).
RTSTRUCT = FILE_NAMES["rtstruct"]
#: Longest chain of edits followed back to the prediction (a loop in forged reports ends here).
MAX_DERIVATIONS = 1000


def version_mask(folder: Path, ct: CTSeries) -> sitk.Image:
    """The CTV of a version folder on the CT's grid: its ``ctv.nii.gz``, or the CTV of its RTSTRUCT (a DICOM node's
    versions hold the RTSTRUCT only).

    Raises
    ------
    GridMismatchError, StructureSetError
        The file does not lie on this CT (another grid, another frame of reference) or holds no CTV.
    """
    if (folder / FILE_NAMES["nifti"]).is_file():
        return read_mask(folder / FILE_NAMES["nifti"], ct.grid, name="CTV")
    masks = read_rtstruct(folder / RTSTRUCT, ct, roi="CTV")
    return next(iter(masks.values()))


def approval_record(store: CaseStore, case_id: str, version: int, approved_by: str,
                    ct: CTSeries | None = None) -> dict[str, Any]:
    """Measure what the clinician changed from the AI contour to version ``version`` of a case, as a record.

    ``ct``: the case's CT when already loaded (else it is loaded from the case folder).

    Raises
    ------
    EditRecordError
        The version or the prediction it started from is missing or unreadable, or the version's
        contour lies on another CT than the prediction's.
    """
    ct = ct if ct is not None else load_ct_series(store.ct_dir(case_id))
    approved = _report(store, case_id, version)
    origin, origin_report = prediction_of(store, case_id, version)
    ai = AIProvenance.from_report(origin_report)
    given = approved.get("input") or {}
    check_same_ct(ai, str(given.get("series_instance_uid", "")), str(given.get("frame_of_reference_uid", "")))
    check_same_ct(ai, ct.reference.series_instance_uid, ct.reference.frame_of_reference_uid)
    figures = edit_figures(version_mask(store.version_dir(case_id, origin), ct),
                           version_mask(store.version_dir(case_id, version), ct))
    case = store.case(case_id) or {}
    return edit_record(ai, figures, door=DOOR, approved_ct=ct.reference, approved_by=approved_by,
                       context={"case": case_id, "case_source": case.get("source", ""), "version": version,
                                "ai_version": origin, "rtstruct": RTSTRUCT})


def prediction_of(store: CaseStore, case_id: str, version: int) -> tuple[int, dict[str, Any]]:
    """The prediction a version started from: its number and report (the version itself when it is a prediction,
    else the root of its ``derives_from`` chain).

    Raises
    ------
    EditRecordError
        A version of the chain is missing or its report unreadable.
    """
    number, report = version, _report(store, case_id, version)
    for _ in range(MAX_DERIVATIONS):
        if report.get("kind") != "edit":
            break
        number = int((report.get("derives_from") or {}).get("version", 0))
        report = _report(store, case_id, number)
    return number, report


def write_sidecar(store: CaseStore, case_id: str, version: int, record: dict[str, Any]) -> Path:
    """The record beside the version's RTSTRUCT (written whole or not at all); returns its path.

    Raises
    ------
    StoreError
        The file cannot be written (disk full, permissions): the approval is not recorded.
    """
    path = store.inside(sidecar_path(store.version_dir(case_id, version) / RTSTRUCT))
    try:
        return write_edit_record(record, path)
    except OSError as exc:
        raise StoreError(describe_os_error(exc, f"writing the approval's record '{path}'") +
                         " Nothing was approved.") from exc


def approved_records(store: CaseStore) -> list[dict[str, Any]]:
    """The record of every approved case's current approval (a case approved twice counts once, as last approved)."""
    return [record for *_, record in approved_versions(store)]


def _report(store: CaseStore, case_id: str, version: int) -> dict[str, Any]:
    path = store.version_dir(case_id, version) / REPORT
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EditRecordError(f"Version {version} of case {case_id} has no readable {REPORT} ({exc}); the AI contour "
                              "it started from cannot be found, so the approval cannot be recorded. Approve a "
                              "complete version.") from exc
    if not isinstance(report, dict):
        raise EditRecordError(f"The {REPORT} of version {version} of case {case_id} is not a report.")
    return report


def approved_versions(store: CaseStore) -> list[tuple[str, int, Path, Path, dict[str, Any]]]:
    """Every approved case's current approval, for training: (case id, version, the case's CT folder, the approved
    RTSTRUCT, the approval's record), in the order approved. A case approved before approvals were recorded (an
    index upgraded from schema 2) has no record and is left out."""
    rows = store.query("SELECT a.case_id, a.version, a.record FROM approvals a JOIN cases c ON c.id = a.case_id "
                       "WHERE a.id = (SELECT MAX(id) FROM approvals WHERE case_id = a.case_id) "
                       "AND a.version = c.approved_version ORDER BY a.id")
    return [(r["case_id"], int(r["version"]), store.ct_dir(r["case_id"]),
             store.version_dir(r["case_id"], int(r["version"])) / RTSTRUCT, json.loads(r["record"])) for r in rows]
