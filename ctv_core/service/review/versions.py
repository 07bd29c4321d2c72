"""Saving an edit: the segments as the clinician left them become a new version of the case's result.

A version folder is written whole or not at all (:func:`ctv_core.output_folder.output_set`): the
RTSTRUCT through the Slicer module's own export (``exportRTStruct`` on the case's CT folder: every
non-empty segment on the CT's own UIDs, the CTV typed CTV, UNAPPROVED, an edited CTV SEMIAUTOMATIC
with the model it started from named), the DICOM SEG of the same segments, ``ctv.nii.gz`` (the CTV on the CT's
grid, which the viewer reads back), the QA image, the uncertainty map of the prediction it derives
from (``uncertainty.nii.gz``, its figures in the report with ``of_version``) when there is one, and
``report.json`` (who, when, what it derives from). Its number is reserved before the folder is
written and recorded after it is complete; a failed save gives the number back and leaves no folder.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..._version import __version__
from ...errors import EditRecordError, StructureSetError
from ...evaluation.edits import AIProvenance
from ...inference.predict_job import KNOWN_FILES, REPORT, UNCERTAINTY_FILE, describe_input
from ...inference.qa_image import write_qa_image
from ...output_folder import output_set
from ...structures.mask_files import write_mask
from ...structures.seg import write_seg
from ..approvals import prediction_of
from .desk import ReviewDesk
from .scene import CaseScene

logger = logging.getLogger(__name__)

LABEL = "CTV_REVIEW"
DESCRIPTION = "CTV reviewed in the review station (unapproved)"


@dataclass(frozen=True)
class SavedEdit:
    """A saved edit: its version number and report."""

    version: int
    report: dict


def save_edit(desk: ReviewDesk, scene: CaseScene, author: str, note: str = "", who: str = "the page") -> SavedEdit:
    """Write the open case's segments as a new version (see the module docstring).

    Raises
    ------
    CTVError
        Nothing to save (no CTV segment, every segment empty), the CT's files disagree with the
        scene, the folder cannot be written; nothing is recorded then.
    """
    from ...scene.rtstruct_export import exportRTStruct

    case = scene.open
    if case is None or case.segmentation is None:
        raise StructureSetError("No case with a CTV is open; open a case whose prediction is done, then edit it.")
    author = " ".join(author.split())
    if not author:
        raise StructureSetError("Give your name before saving: every version records who made it.")
    store = desk.store
    number = store.reserve_version(case.case_id)
    try:
        with output_set(store.version_dir(case.case_id, number), KNOWN_FILES, marker=REPORT,
                        owner="review station save") as staging:
            export = exportRTStruct(case.segmentation, case.volume, staging / "rtstruct.dcm", case.ct.folder,
                                    terminology=scene.terminology, label=LABEL, description=DESCRIPTION)
            masks = _segment_masks(scene)
            ctv = masks.get(_ctv_name(scene))
            if ctv is None:
                raise StructureSetError("The CTV segment is empty or was removed; undo the deletion, or draw the CTV "
                                        "before saving.")
            write_seg(case.ct, masks, staging / "seg.dcm", algorithm=None, series_description=DESCRIPTION)
            write_mask(ctv, staging / "ctv.nii.gz")
            voxels = np.count_nonzero(sitk.GetArrayViewFromImage(ctv))
            volume_cc = float(voxels) * case.ct.grid.voxel_cc
            notes = [f"CTV volume: {volume_cc:.0f} cc", f"Edited by {author}, from version {case.version}",
                     "Review before use (unapproved)."]
            write_qa_image(case.ct.image, ctv, staging / "qa.png", "CTV edited in the review station", notes)
            uncertainty = _keep_uncertainty(desk, case.case_id, case.version, staging)
            report = {
                "ctv_core_version": __version__, "kind": "edit",
                "created": dt.datetime.now().isoformat(timespec="seconds"),
                "author": author, "note": note, "case": case.case_id,
                "derives_from": {"version": case.version, "kind": case.version_kind},
                **_ai_provenance(desk, case.case_id, case.version),
                "input": describe_input(case.ct), "ctv": {"volume_cc": round(volume_cc, 1)},
                "rois": export.rois, "outputs": ["rtstruct.dcm", "seg.dcm", "ctv.nii.gz", "qa.png", REPORT] + (
                    [UNCERTAINTY_FILE] if uncertainty else []),
                "warnings": export.warnings, **uncertainty}
            (staging / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        store.release_version(case.case_id, number)
        raise
    store.record_version(case.case_id, number, "edit", author=author,
                         note=note or f"edit of version {case.version}")
    desk.audit("edit", f"case {case.case_id} version {number} by {who} (signed {author!r}) from version "
                       f"{case.version}: {', '.join(export.rois)}; CTV {volume_cc:.1f} cc")
    return SavedEdit(number, report)


def _keep_uncertainty(desk: ReviewDesk, case_id: str, version: int, staging) -> dict:
    """The uncertainty of the version the edit started from, kept with the edit: its map copied into ``staging``
    and ``{"uncertainty": figures}`` with ``of_version`` (where the model hesitated is still where to look while
    editing); {} when that version has none."""
    source = desk.store.version_dir(case_id, version) / UNCERTAINTY_FILE
    figures = desk.report(case_id, version).get("uncertainty")
    if not source.is_file() or not isinstance(figures, dict):
        return {}
    shutil.copyfile(source, staging / UNCERTAINTY_FILE)
    return {"uncertainty": {**figures, "of_version": figures.get("of_version", version)}}


def _ai_provenance(desk: ReviewDesk, case_id: str, version: int) -> dict:
    """``{"ai": ...}``: the model and CT of the prediction the edit started from (the RTSTRUCT of an edit of this
    edit names that model too); {} when that prediction cannot be found (the edit is then of unknown origin)."""
    try:
        return {"ai": AIProvenance.from_report(prediction_of(desk.store, case_id, version)[1]).as_dict()}
    except EditRecordError:
        return {}


def _ctv_name(scene: CaseScene) -> str:
    segment = scene.open.segmentation.GetSegmentation().GetSegment(scene.open.segment_id)
    return segment.GetName() if segment is not None else "CTV"


def _segment_masks(scene: CaseScene) -> dict[str, sitk.Image]:
    """Every non-empty segment, by name, as a mask on the CT's grid (the grid the volume was built from)."""
    from ...scene.conversion import segmentMask

    case = scene.open
    segmentation = case.segmentation.GetSegmentation()
    masks = {}
    for n in range(segmentation.GetNumberOfSegments()):
        mask = segmentMask(case.segmentation, segmentation.GetNthSegmentID(n), case.ct.grid)
        if mask.array.any():
            masks[mask.name] = case.ct.grid.image(mask.array)
    return masks
