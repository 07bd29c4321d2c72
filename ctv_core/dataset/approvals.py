"""Approved contours as training cases: the approval's edit record (:mod:`ctv_core.evaluation.edits`) that goes with
each, and the check that the contour lies on the case's CT.

A record names the CT its approved contour lies on (``ct``: series and frame of reference UIDs). A case is stored
only when those are the case's CT's; otherwise it is skipped (:data:`ANOTHER_CT`), never stored on the wrong CT.
Two sources: a case store's approvals (:mod:`.approved_build`), and an archive of RTSTRUCTs exported with their
record beside them (``X.dcm`` and ``X.ai-edits.json``, as Slicer's Export writes them; ``ctv dataset build
--approved-only``, :func:`.builder.build_dataset`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..dicom.ct_series import CTReference
from ..errors import DatasetError, EditRecordError
from ..evaluation.edits import RECORD_FORMAT, is_edit_record, read_edit_record, sidecar_path
from .pairing import CaseSkipped

#: The skip category of an approval whose contour lies on another CT than the case's.
ANOTHER_CT = "approval on another CT"
#: The skip category of a structure set without an approval (``--approved-only``).
NOT_APPROVED = "not approved"
#: The skip category of an approval whose record cannot be read or is not one.
UNREADABLE = "unreadable approval"


def no_approved_case(where: str | Path) -> DatasetError:
    """The error for a source without any approved case, naming the fix."""
    return DatasetError(f"'{where}' holds no approved case, so there is nothing to train on. Approve cases first "
                        "(the review station's Approve, 'ctv review --data FOLDER'; or Slicer's Export RTSTRUCT of a "
                        "CTV from Apply, which writes X.ai-edits.json beside X.dcm), or build without --approved-only.")


def check_record(record: Any) -> Mapping[str, Any]:
    """``record`` when it is an edit record; else :class:`CaseSkipped` (:data:`UNREADABLE`)."""
    if not is_edit_record(record):
        raise CaseSkipped(UNREADABLE, f"{UNREADABLE}: its record is not an edit record ({RECORD_FORMAT}); approve or "
                                      "export the contour again.")
    return record


def approval_beside(rtstruct: Path) -> Mapping[str, Any]:
    """The record beside an exported RTSTRUCT (``X.dcm`` -> ``X.ai-edits.json``).

    Raises
    ------
    CaseSkipped
        No record beside it (:data:`NOT_APPROVED`), or one that cannot be read (:data:`UNREADABLE`).
    """
    path = sidecar_path(rtstruct)
    if not path.is_file():
        raise CaseSkipped(NOT_APPROVED, f"{NOT_APPROVED}: no approval record {path.name} beside it")
    try:
        return read_edit_record(path)
    except EditRecordError as exc:
        raise CaseSkipped(UNREADABLE, f"{UNREADABLE}: {exc}") from exc


def check_on_ct(record: Mapping[str, Any], ct: CTReference) -> None:
    """Skip a case whose approval puts the contour on another CT than ``ct`` (series or frame of reference).

    Raises
    ------
    CaseSkipped
        :data:`ANOTHER_CT`, the UIDs of both named.
    """
    named = record["ct"]
    recorded = (named.get("series_instance_uid", ""), named.get("frame_of_reference_uid", ""))
    if recorded != (ct.series_instance_uid, ct.frame_of_reference_uid):
        raise CaseSkipped(ANOTHER_CT, f"{ANOTHER_CT}: the approval's record puts the contour on series "
                                      f"{recorded[0] or '?'} (frame of reference {recorded[1] or '?'}), the case's CT "
                                      f"is series {ct.series_instance_uid} (frame of reference "
                                      f"{ct.frame_of_reference_uid}). Not stored: approve the contour again on the "
                                      "case's own CT.")
