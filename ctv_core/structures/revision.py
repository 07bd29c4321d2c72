"""A structure set that replaces an earlier one of the same CT: same series, the next instance, its predecessor named.

When a CT is delineated again (its series grew after a first delineation), the planning system
must end with one current structure set for that CT, not two unrelated ones. The new RTSTRUCT
(or SEG) therefore continues the earlier one's series (same SeriesInstanceUID), with the next
InstanceNumber, and an RTSTRUCT names the one it replaces in its Predecessor Structure Set
Sequence (3006,0018). It is a new instance (a new SOPInstanceUID: its content differs); a planning
system or PACS shows it as the newest instance of the same structure-set series.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom

from ..dicom.ct_series import CTSeries
from ..dicom.uids import is_uid
from ..errors import StructureSetError


@dataclass(frozen=True)
class SeriesRevision:
    """Where a replacing structure set goes.

    Attributes
    ----------
    series_uid, series_number
        The replaced object's series, continued.
    instance_number
        The replaced object's InstanceNumber plus one.
    predecessor
        (SOPClassUID, SOPInstanceUID) of the replaced object.
    """

    series_uid: str
    series_number: int
    instance_number: int
    predecessor: tuple[str, str]


def revision_of(previous: str | Path, ct: CTSeries) -> SeriesRevision:
    """The revision that replaces the RTSTRUCT or SEG file ``previous``, made on ``ct``.

    Raises
    ------
    StructureSetError
        ``previous`` cannot be read, is neither RTSTRUCT nor SEG, or was not made on ``ct``'s series
        (a structure set never replaces one of another CT).
    """
    try:
        ds = pydicom.dcmread(previous, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the earlier file cannot be replaced
        raise StructureSetError(f"The structure set to replace, '{previous}', cannot be read ({exc}).") from exc
    referenced = _referenced_series(ds)
    if referenced != ct.reference.series_instance_uid:
        raise StructureSetError(
            f"The structure set to replace, '{previous}', was made on CT series {referenced or '(none)'}, not on "
            f"{ct.reference.series_instance_uid}; a structure set only replaces one of the same CT.")
    uids = (str(ds.get("SeriesInstanceUID", "")), str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")))
    if not all(is_uid(uid) for uid in uids):
        raise StructureSetError(f"The structure set to replace, '{previous}', lacks valid series or instance UIDs.")
    try:
        number = int(ds.get("InstanceNumber") or 1)
        series_number = int(ds.get("SeriesNumber") or 0)
    except (TypeError, ValueError) as exc:
        raise StructureSetError(f"The structure set to replace, '{previous}', has a damaged InstanceNumber or "
                                f"SeriesNumber ({exc}).") from exc
    return SeriesRevision(uids[0], series_number, number + 1, (uids[1], uids[2]))


def _referenced_series(ds: pydicom.Dataset) -> str:
    """The CT series an RTSTRUCT or a SEG was made on ('' when it names none)."""
    if ds.get("Modality") == "RTSTRUCT":
        for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
            for study in frame.get("RTReferencedStudySequence", []):
                for series in study.get("RTReferencedSeriesSequence", []):
                    return str(series.get("SeriesInstanceUID", ""))
        return ""
    if ds.get("Modality") == "SEG":
        for series in ds.get("ReferencedSeriesSequence", []):
            return str(series.get("SeriesInstanceUID", ""))
        return ""
    raise StructureSetError(f"'{ds.filename}' is a {ds.get('Modality', 'DICOM')} object, not an RTSTRUCT or SEG.")
