"""An archive of DICOM files as compact records: CT series and structure sets, headers read once.

Any folder layout, files with or without ``.dcm``; headers are read with
:func:`ctv_core.dicom.files.scan_folder`, one top-level folder at a time so that the headers of
a large archive are never all in memory. Unreadable files are recorded; they stop nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from ..dicom.files import SkippedFile, scan_folder
from ..structures.rtstruct import RT_STRUCTURE_SET_STORAGE

logger = logging.getLogger(__name__)

_PATIENT_KEYWORDS = ("PatientID", "PatientName", "PatientBirthDate")
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class SeriesRecord:
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
class StructureSetRecord:
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


def structure_set_record(path: Path, ds: pydicom.Dataset) -> StructureSetRecord:
    """What an RTSTRUCT's header says: its UIDs, the (frame of reference, series) pairs it references, its ROI names."""
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
    return StructureSetRecord(
        path=path,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        references=references,
        frames_of_reference=frames,
        roi_names=[str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])],
    )


def scan_archive(archive: Path, progress: ProgressCallback | None = None
                 ) -> tuple[dict[str, SeriesRecord], list[StructureSetRecord], list[SkippedFile]]:
    """CT (and other) series by UID, structure sets, and the files that could not be read."""
    series: dict[str, SeriesRecord] = {}
    unreadable: list[SkippedFile] = []
    structure_sets: list[StructureSetRecord] = []
    units = _scan_units(archive)
    for n, unit in enumerate(units, start=1):
        found, skipped = scan_folder(unit)
        for s in skipped:
            if s.reason.startswith("unreadable"):
                logger.warning("passed over %s: %s", s.path, s.reason)
                unreadable.append(s)
        for s in found:
            first = s.headers[0][1]
            if s.modality == "RTSTRUCT" or s.sop_class_uid == RT_STRUCTURE_SET_STORAGE:
                for path, ds in s.headers:
                    try:
                        structure_sets.append(structure_set_record(path, ds))
                    except Exception as exc:  # noqa: BLE001 - a malformed sequence is this file's problem only
                        unreadable.append(SkippedFile(path, f"unreadable structure set ({exc})"))
                        logger.warning("passed over %s: unreadable structure set (%s)", path, exc)
                continue
            record = series.get(s.key)
            if record is None:
                record = series[s.key] = SeriesRecord(
                    uid=s.key, modality=s.modality, is_ct=s.is_ct_volume_candidate and not s.uid_missing,
                    summary=s.summary(), frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
                    patient=tuple(str(first.get(k, "") or "") for k in _PATIENT_KEYWORDS),
                )
            record.files.extend(p for p, _ in s.headers)
        del found  # the headers of this folder are not needed any more
        if progress is not None:
            progress("scanning", n, len(units))
    return series, structure_sets, unreadable
