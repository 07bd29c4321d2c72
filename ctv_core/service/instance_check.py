"""What the DICOM node accepts of a received instance, checked in the order that costs least first.

1. The C-STORE request's own UIDs: the SOP class must be one the node stores (CT Image Storage:
   0x0122 otherwise) and the instance UID a UID (0x0117, invalid SOP instance, otherwise: a UID
   such as ``../cases/x/versions/1`` never reaches the disk or the index).
2. The size of what arrived (the data set is streamed to a file as it arrives, and capped there
   at the limit; :mod:`.pdu_guard`): above ``max_bytes`` it is refused with 0xA700 (out of
   resources) without being parsed.
3. The header (read up to the pixel data, :func:`~ctv_core.dicom.files.read_dicom_header`): its
   SOPClassUID and SOPInstanceUID must be the request's (0xA900, data set does not match SOP
   class), its Study and Series Instance UIDs UIDs (0xC000, cannot understand).
4. The pixel data must all be there: the element's declared length fits in the file and, for
   native pixel data, holds Rows x Columns x samples x bits; encapsulated fragments end with their
   delimiter (0xC000 otherwise: a truncated instance is never acknowledged as stored).

Pixel data are never read into memory here: the checks walk the element and fragment headers.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import UID

from ..dicom.files import CT_IMAGE_STORAGE, looks_like_dicom, read_dicom_header
from ..dicom.uids import uid_problem

#: C-STORE statuses (PS3.4 B.2.3, PS3.7 C).
SUCCESS = 0x0000
INVALID_SOP_INSTANCE = 0x0117
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000

#: The storage classes the node stores, with their names for messages.
ACCEPTED_CLASSES = {CT_IMAGE_STORAGE: "CT Image Storage"}
_DEFLATED = "1.2.840.10008.1.2.1.99"
_ITEM, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD


class InstanceRefused(Exception):
    """A received instance the node does not store: the C-STORE ``status`` and the ``reason`` for the audit log."""

    def __init__(self, status: int, reason: str, series_uid: str | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason
        #: The series the instance claims (a valid UID), when its header was read that far.
        self.series_uid = series_uid


@dataclass(frozen=True)
class AcceptedInstance:
    """The UIDs of an instance that passed every check (each a valid UID)."""

    sop_uid: str
    series_uid: str
    study_uid: str
    sop_class: str


def check_request(sop_class: str, sop_uid: str) -> None:
    """Step 1 of the module docstring, on the C-STORE request's Affected SOP Class and Instance UIDs."""
    if sop_class not in ACCEPTED_CLASSES:
        name = UID(sop_class).name if uid_problem(sop_class, "") is None else repr(sop_class[:80])
        raise InstanceRefused(SOP_CLASS_NOT_SUPPORTED, f"{name} is not CT Image Storage; the node delineates CT "
                                                       "series only")
    problem = uid_problem(sop_uid, "the request's Affected SOP Instance UID")
    if problem:
        raise InstanceRefused(INVALID_SOP_INSTANCE, problem)


def check_received(path: Path, sop_class: str, sop_uid: str, max_bytes: int) -> AcceptedInstance:
    """Steps 2 to 4 of the module docstring on the received file ``path`` (request already checked).

    Raises
    ------
    InstanceRefused
        With the status to answer and the reason.
    """
    size = os.path.getsize(path)
    if size > max_bytes:
        raise InstanceRefused(OUT_OF_RESOURCES, f"larger than the node's limit of {max_bytes / 2**20:g} MB per "
                                                "instance (ctv node --max-instance-mb)")
    if not looks_like_dicom(path):
        raise InstanceRefused(CANNOT_UNDERSTAND, "the data set does not start as a DICOM data set does")
    try:
        with open(path, "rb") as handle:
            ds = read_dicom_header(handle)
            end_of_header = handle.tell()
    except Exception as exc:  # noqa: BLE001 - a peer's undecodable data set is its problem, reported back
        raise InstanceRefused(CANNOT_UNDERSTAND, f"the data set cannot be read ({type(exc).__name__}: {exc})") \
            from exc
    series_uid = str(ds.get("SeriesInstanceUID", ""))
    try:
        _check_header(ds, sop_class, sop_uid)
        if str(ds.file_meta.get("TransferSyntaxUID", "")) == _DEFLATED:
            _check_deflated_pixels(path)
        else:
            _check_pixels(path, ds, end_of_header, size)
    except InstanceRefused as refused:
        refused.series_uid = series_uid if uid_problem(series_uid, "") is None else None
        raise
    return AcceptedInstance(sop_uid, str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID), sop_class)


def _check_header(ds: pydicom.Dataset, sop_class: str, sop_uid: str) -> None:
    """Step 3 of the module docstring."""
    if str(ds.get("SOPClassUID", "")) != sop_class:
        raise InstanceRefused(DATA_SET_DOES_NOT_MATCH, f"the data set's SOPClassUID "
                                                       f"{str(ds.get('SOPClassUID', ''))[:80]!r} is not the "
                                                       f"request's {sop_class}")
    if str(ds.get("SOPInstanceUID", "")) != sop_uid:
        raise InstanceRefused(DATA_SET_DOES_NOT_MATCH, f"the data set's SOPInstanceUID "
                                                       f"{str(ds.get('SOPInstanceUID', ''))[:80]!r} is not the "
                                                       f"request's {sop_uid}")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        problem = uid_problem(str(ds.get(keyword, "")), f"the data set's {keyword}")
        if problem:
            raise InstanceRefused(CANNOT_UNDERSTAND, problem)


def _check_pixels(path: Path, ds: pydicom.Dataset, offset: int, size: int) -> None:
    """The pixel data element at ``offset`` is whole (walks headers only)."""
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    little = syntax.is_little_endian
    order = "<" if little else ">"
    with open(path, "rb") as handle:
        handle.seek(offset)
        header = handle.read(8)
        if len(header) < 8:
            raise InstanceRefused(CANNOT_UNDERSTAND, "the data set has no pixel data (it ends before them)")
        group, element = struct.unpack(order + "HH", header[:4])
        if (group, element) != (0x7FE0, 0x0010):
            raise InstanceRefused(CANNOT_UNDERSTAND, f"the data set has no pixel data where they belong (element "
                                                     f"({group:04X},{element:04X}) after the header, out of order)")
        if syntax.is_implicit_VR:
            length = struct.unpack(order + "L", header[4:8])[0]
        else:
            length = struct.unpack(order + "L", handle.read(4))[0]
        start = handle.tell()
        if length == 0xFFFFFFFF:
            _check_fragments(handle, order, size)
            return
        if start + length > size:
            raise InstanceRefused(CANNOT_UNDERSTAND, f"truncated: the pixel data declare {length} bytes, "
                                                     f"{size - start} arrived")
    expected = _native_pixel_bytes(ds)
    if expected is not None and length < expected:
        raise InstanceRefused(CANNOT_UNDERSTAND, f"the pixel data hold {length} bytes; {ds.get('Rows')} x "
                                                 f"{ds.get('Columns')} pixels need {expected}")


def _check_fragments(handle, order: str, size: int) -> None:
    """Encapsulated pixel data: items (offset table, fragments) up to the sequence delimiter, all in the file."""
    while True:
        header = handle.read(8)
        if len(header) < 8:
            raise InstanceRefused(CANNOT_UNDERSTAND, "truncated: the encapsulated pixel data end without their "
                                                     "sequence delimiter")
        group, element, length = struct.unpack(order + "HHL", header)
        tag = group << 16 | element
        if tag == _SEQUENCE_END:
            return
        if tag != _ITEM or handle.tell() + length > size:
            raise InstanceRefused(CANNOT_UNDERSTAND, "truncated or damaged encapsulated pixel data")
        handle.seek(length, 1)


def _check_deflated_pixels(path: Path) -> None:
    """A deflated data set is inflated to be read (rare; bounded by the instance limit)."""
    try:
        ds = pydicom.dcmread(path)
        data = ds.PixelData
    except Exception as exc:  # noqa: BLE001 - undecodable: the peer's problem, reported back
        raise InstanceRefused(CANNOT_UNDERSTAND, f"the deflated data set cannot be read ({exc})") from exc
    expected = _native_pixel_bytes(ds)
    if expected is not None and len(data) < expected:
        raise InstanceRefused(CANNOT_UNDERSTAND, f"the pixel data hold {len(data)} bytes; need {expected}")


def _native_pixel_bytes(ds: pydicom.Dataset) -> int | None:
    """Bytes native pixel data of this header need (None when the header does not say)."""
    try:
        rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        samples, frames = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    return rows * columns * samples * frames * bits // 8
