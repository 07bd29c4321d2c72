"""Finding DICOM files in a folder and grouping them into series.

Owns: the recursive scan (any layout, with or without ``.dcm`` endings), header reading,
telling CT image slices from everything else a CT export folder holds (localizers, secondary
captures, dose reports, RT objects, DICOMDIR, vendor files), and grouping slices by series.
Pixel data is not read here.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGES = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

_GEOMETRY_KEYWORDS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")


@dataclass
class SkippedFile:
    """A file that was passed over, and why."""

    path: Path
    reason: str


@dataclass
class SeriesFiles:
    """The files of one series found in a folder, with what is needed to describe it.

    ``key`` is the SeriesInstanceUID, or a stand-in built from other attributes when a
    (broken) export left the UID empty; ``uid_missing`` says which.
    """

    key: str
    uid_missing: bool
    modality: str
    sop_class_uid: str
    description: str
    date: str
    number: str
    headers: list[tuple[Path, pydicom.Dataset]] = field(default_factory=list)
    is_localizer: bool = False

    @property
    def is_ct_volume_candidate(self) -> bool:
        """Single-frame CT image slices with full geometry (what load_ct_series can load)."""
        return self.modality == "CT" and not self.is_localizer and self.sop_class_uid in ("", CT_IMAGE_STORAGE)

    @property
    def is_enhanced_ct(self) -> bool:
        return self.sop_class_uid in ENHANCED_CT_STORAGES

    def summary(self) -> str:
        """One line naming the series the way a user recognises it."""
        what = ENHANCED_CT_STORAGES.get(self.sop_class_uid, self.modality or "unknown modality")
        if self.is_localizer:
            what += " localizer"
        uid = "(no SeriesInstanceUID)" if self.uid_missing else self.key
        desc = self.description or "no description"
        return (
            f"{uid}  [{what}] '{desc}', series {self.number or '?'}, "
            f"{len(self.headers)} file(s), date {self.date or '?'}"
        )


def _read_header(path: Path) -> pydicom.Dataset | None:
    """Header of a DICOM file, or None when the file is not DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        # Files without the 128-byte preamble are still DICOM when they parse to a dataset with
        # an SOP class; anything else (vendor files, text) is not ours to read.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - any parse failure means "not DICOM"
            return None
        return ds if "SOPClassUID" in ds and "Modality" in ds else None


def scan_folder(folder: Path) -> tuple[list[SeriesFiles], list[SkippedFile]]:
    """Read the header of every file below ``folder`` and group image files by series.

    Returns the series found (in a stable order: by series number then key) and the files
    passed over with the reason (not DICOM, unreadable, DICOMDIR, no image).
    """
    series: dict[str, SeriesFiles] = {}
    skipped: list[SkippedFile] = []
    paths = sorted(Path(root) / name for root, _, names in os.walk(folder) for name in names)
    for path in paths:
        try:
            ds = _read_header(path)
        except Exception as exc:  # noqa: BLE001 - truncated/corrupt headers are reported, not fatal
            skipped.append(SkippedFile(path, f"unreadable DICOM header ({exc.__class__.__name__}: {exc})"))
            continue
        if ds is None:
            skipped.append(SkippedFile(path, "not a DICOM file"))
            continue
        media_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
        if media_class == MEDIA_STORAGE_DIRECTORY or path.name.upper() == "DICOMDIR":
            skipped.append(SkippedFile(path, "DICOMDIR (the folder is scanned instead)"))
            continue
        if "Modality" not in ds and "SOPClassUID" not in ds:
            skipped.append(SkippedFile(path, "DICOM file without SOP class or modality"))
            continue
        key, uid_missing = _series_key(ds)
        entry = series.get(key)
        if entry is None:
            image_type = [str(v).upper() for v in ds.get("ImageType", [])]
            entry = SeriesFiles(
                key=key,
                uid_missing=uid_missing,
                modality=str(ds.get("Modality", "")),
                sop_class_uid=str(ds.get("SOPClassUID", "")),
                description=str(ds.get("SeriesDescription", "")),
                date=str(ds.get("SeriesDate", "") or ds.get("StudyDate", "")),
                number=str(ds.get("SeriesNumber", "")),
                is_localizer="LOCALIZER" in image_type,
            )
            series[key] = entry
        entry.headers.append((path, ds))
    ordered = sorted(series.values(), key=lambda s: (_as_int(s.number), s.key))
    return ordered, skipped


def _series_key(ds: pydicom.Dataset) -> tuple[str, bool]:
    uid = str(ds.get("SeriesInstanceUID", "")).strip()
    if uid:
        return uid, False
    # Some exports drop the UID; slices still belong together when study, series number,
    # frame of reference and orientation agree.
    parts = [
        str(ds.get("StudyInstanceUID", "")),
        str(ds.get("SeriesNumber", "")),
        str(ds.get("FrameOfReferenceUID", "")),
        str(ds.get("Modality", "")),
        "/".join(f"{float(v):.4f}" for v in ds.get("ImageOrientationPatient", [])),
    ]
    return "no-uid:" + "|".join(parts), True


def _as_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 1 << 30


def has_slice_geometry(ds: pydicom.Dataset) -> bool:
    """True when the header carries everything needed to place the slice in space."""
    return all(k in ds and ds[k].value not in (None, "") for k in _GEOMETRY_KEYWORDS)
