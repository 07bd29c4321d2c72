"""DICOM Segmentation (SEG) of masks on a CT, written and read through highdicom.

Writing: one BINARY segmentation with a segment per mask, each frame referencing the CT slice
it lies on (the CT's own SOPInstanceUIDs, study and frame of reference), segment codes from
:mod:`ctv_core.structures.catalogue` (CTV as SCT 228792002 "Clinical target volume" in the DCM "RT
Target" category), algorithm type AUTOMATIC with the model named, empty frames omitted.
Reading: segments back onto the CT grid by the source SOPInstanceUID of every frame, so a SEG
that does not reference this CT's slices is refused. highdicom is imported when a SEG is
written or read, not with this module (it takes about half a second).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import generate_uid

from .._version import __version__
from ..atomic_files import atomic_file
from ..dicom.ct_series import CTSeries
from ..errors import FrameOfReferenceMismatchError, StructureSetError, require_extra
from .rtstruct_reader import select_rois
from .catalogue import Code, structure_for
from .revision import SeriesRevision
from .writer_checks import check_writable

if TYPE_CHECKING:
    hd = require_extra("highdicom", "seg", "DICOM SEG")

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
ARTIFICIAL_INTELLIGENCE = Code("DCM", "123110", "Artificial Intelligence")


def _coded(code: Code) -> hd.sr.CodedConcept:
    hd = require_extra("highdicom", "seg", "DICOM SEG")

    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def write_seg(
    ct: CTSeries,
    masks: Mapping[str, sitk.Image],
    path: str | Path,
    *,
    algorithm: str | None = f"ctv_core {__version__}",
    series_description: str = "CTV auto-delineation (unapproved)",
    revision: SeriesRevision | None = None,
) -> Path:
    """Write ``masks`` (name -> mask on ``ct.image``'s grid) as one DICOM SEG referencing ``ct``.

    ``revision`` continues the series of an earlier SEG of the same CT that this one replaces
    (:mod:`.revision`; the next instance number), instead of starting a new series.

    ``algorithm`` names the model (segments AUTOMATIC, with an algorithm identification);
    None when the origin is unknown (conversions), which writes the segments as MANUAL. Raises
    the same errors as ``write_rtstruct`` for masks off the grid and CTs that cannot be
    referenced. The file is written to a temporary name, then renamed.
    """
    hd = require_extra("highdicom", "seg", "DICOM SEG")

    check_writable(ct, masks)
    sources = [pydicom.dcmread(s.path, stop_before_pixels=True) for s in ct.reference.slices]
    algorithm_id = None
    if algorithm:
        name, version = (algorithm.split(" ", 1) + [__version__])[:2]
        algorithm_id = hd.AlgorithmIdentificationSequence(
            name=name[:64], version=version[:64], family=_coded(ARTIFICIAL_INTELLIGENCE),
        )
    kinds = hd.seg.SegmentAlgorithmTypeValues
    algorithm_type = kinds.AUTOMATIC if algorithm else kinds.MANUAL
    descriptions, planes = [], []
    for number, (roi, mask) in enumerate(masks.items(), start=1):
        structure = structure_for(roi, number - 1)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=roi[:64],
            segmented_property_category=_coded(structure.category),
            segmented_property_type=_coded(structure.property_type),
            algorithm_type=algorithm_type,
            algorithm_identification=algorithm_id,
            display_color=hd.color.CIELabColor.from_rgb(*structure.colour),
        ))
        planes.append(sitk.GetArrayViewFromImage(mask))
    pixels = np.empty(planes[0].shape + (len(planes),), dtype=np.uint8)  # [k, j, i, segment], k in CT slice order
    for n, plane in enumerate(planes):  # 0/1 written in place: no boolean copies of the CT grid to stack
        np.not_equal(plane, 0, out=pixels[..., n], casting="unsafe")
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=revision.series_uid if revision else generate_uid(),
        series_number=revision.series_number if revision else 902,
        sop_instance_uid=generate_uid(),
        instance_number=revision.instance_number if revision else 1,
        manufacturer="CTVDelineation",
        manufacturer_model_name="ctv_core",
        software_versions=f"ctv_core {__version__}",
        device_serial_number="0",
        series_description=series_description[:64],
        content_label="CTV_AUTO",
        content_description="Automatic delineation; review before clinical use"[:64],
    )
    with atomic_file(path) as tmp:
        seg.save_as(tmp)
    return Path(path)


def read_seg(
    path: str | Path, ct: CTSeries, roi: str | Sequence[str] | None = "CTV"
) -> dict[str, sitk.Image]:
    """Segments of a DICOM SEG as uint8 masks on ``ct.image``'s grid, by segment label.

    ``roi`` selects segments by label as ``read_rtstruct`` selects ROIs (name, case-insensitive
    name, regular expression, list, or None for all).
    """
    hd = require_extra("highdicom", "seg", "DICOM SEG")

    path = Path(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is not a usable SEG
        raise StructureSetError(f"'{path}' cannot be read as a DICOM Segmentation ({exc}).") from exc
    if str(seg.FrameOfReferenceUID) != ct.reference.frame_of_reference_uid:
        raise FrameOfReferenceMismatchError(
            f"'{path}' is in frame of reference {seg.FrameOfReferenceUID}, the CT in "
            f"{ct.reference.frame_of_reference_uid}: the segmentation belongs to another scan. Pair it with its own CT."
        )
    labels = {int(d.SegmentNumber): str(d.SegmentLabel) for d in seg.SegmentSequence}
    chosen = select_rois(list(labels.values()), roi)
    numbers = [n for n, label in labels.items() if label in chosen]
    uids = list(ct.reference.sop_instance_uids)
    referenced = {str(sop_uid) for _, _, sop_uid in seg.get_source_image_uids()}
    if not referenced & set(uids):
        raise StructureSetError(
            f"'{path}' does not reference any slice of this CT (series {ct.reference.series_instance_uid}). "
            "Read it against the CT it was made on."
        )
    present = [u for u in uids if u in referenced]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=present, segment_numbers=numbers, assert_missing_frames_are_empty=True,
    )
    grid = ct.grid
    out = {}
    for column, number in enumerate(numbers):
        volume = np.zeros(grid.shape, dtype=np.uint8)
        for row, uid in enumerate(present):
            volume[uids.index(uid)] = pixels[row, :, :, column] != 0
        out[labels[number]] = grid.image(volume)
    return {label: out[label] for label in chosen}
