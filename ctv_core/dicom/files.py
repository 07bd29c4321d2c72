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
from collections.abc import Callable
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


#: Explicit VRs with a 4-byte length (PS3.5 7.1.2).
_LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
#: A data set starts with group 0008 (images) or 0004 (DICOMDIR), in either byte order.
_FIRST_GROUPS = {b"\x08\x00", b"\x04\x00", b"\x00\x08", b"\x00\x04"}
_DEFLATED = b"1.2.840.10008.1.2.1.99"
#: The first element a header read may stop at: float, double or integer Pixel Data.
_PIXEL_DATA_TAGS = 0x7FE00008


def looks_like_dicom(path: Path) -> bool:
    """A look at the first bytes, before any parse: the 128-byte preamble and "DICM" (or none), the file meta
    elements (group 0002), then a data set that starts as one does (group 0008, or 0004 for a DICOMDIR).

    Anything else is not parsed at all: pydicom reads leading group-0000 elements without end, so a forced
    parse of a megabyte of zeros costs a third of a second of CPU, a 100 MB member of a zip half a minute.
    """
    try:
        with open(path, "rb") as handle:
            has_preamble = handle.read(132)[128:] == b"DICM"
            offset = 132 if has_preamble else 0
            handle.seek(offset)
            meta = b""
            for _ in range(64):  # a file meta has a handful of elements
                header = handle.read(8)
                if header[:2] != b"\x02\x00":
                    break
                length = int.from_bytes(header[6:8], "little")
                if header[4:6] in _LONG_LENGTH_VRS:
                    length = int.from_bytes(handle.read(4), "little")
                meta += header + handle.read(min(length, 256))
                offset = handle.tell() + max(length - 256, 0)
                handle.seek(offset)
            else:
                return False
    except OSError:
        return True  # the reader says what is wrong with it
    if has_preamble and not meta:
        return False
    return _DEFLATED in meta or header[:2] in _FIRST_GROUPS


def _stop_at_pixels_or_disorder():
    """A ``stop_when`` for pydicom: stop before the pixel data, and at the first element out of ascending tag
    order (a damaged or forged file: pydicom would otherwise read on, element by element, to its end)."""
    last = [-1]

    def stop(tag, vr, length) -> bool:
        if tag >= _PIXEL_DATA_TAGS or tag <= last[0]:
            return True
        last[0] = int(tag)
        return False

    return stop


def read_dicom_header(source, force: bool = False) -> pydicom.Dataset:
    """The header of a DICOM file (path or open binary file) up to its pixel data; an open file is left at
    the element the reading stopped at (the pixel data, an element out of order, or the end).

    Raises pydicom's ``InvalidDicomError`` for a file without preamble unless ``force``; other exceptions
    for damaged files. Call :func:`looks_like_dicom` first for files from outside.
    """
    from pydicom.filereader import read_partial

    if isinstance(source, (str, Path)):
        with open(source, "rb") as handle:
            return read_dicom_header(handle, force)
    return read_partial(source, stop_when=_stop_at_pixels_or_disorder(), force=force)


def _read_header(path: Path) -> pydicom.Dataset | None:
    """Header of a DICOM file, or None when the file is not DICOM."""
    if not looks_like_dicom(path):
        return None
    try:
        return read_dicom_header(path)
    except InvalidDicomError:
        # Files without the 128-byte preamble are still DICOM when they parse to a dataset with
        # an SOP class; anything else (vendor files, text) is not ours to read.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = read_dicom_header(path, force=True)
        except Exception:  # noqa: BLE001 - any parse failure means "not DICOM"
            return None
        return ds if "SOPClassUID" in ds and "Modality" in ds else None


def scan_folder(folder: Path, checkpoint: Callable[[], None] | None = None
                ) -> tuple[list[SeriesFiles], list[SkippedFile]]:
    """Read the header of every file below ``folder`` and group image files by series.

    Returns the series found (in a stable order: by series number then key) and the files
    passed over with the reason (not DICOM, unreadable, DICOMDIR, no image). ``checkpoint`` is
    called before each file (a caller's budget may raise from it).
    """
    series: dict[str, SeriesFiles] = {}
    skipped: list[SkippedFile] = []
    paths = sorted(Path(root) / name for root, _, names in os.walk(folder) for name in names)
    for path in paths:
        if checkpoint is not None:
            checkpoint()
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
