"""DICOM RT Structure Set: writing masks as planar contours on the CT's own slices (reading: :mod:`.rtstruct_reader`).

``write_rtstruct``: the structure set references the CT it was computed on, never a
copy: patient and study attributes copied from the CT (same StudyInstanceUID), the CT's
FrameOfReferenceUID, a ContourImageSequence listing every CT slice, and per contour the
SOPInstanceUID of the slice it lies on. Contours are CLOSED_PLANAR polygons traced along
voxel edges (see :mod:`ctv_core.structures.contours`), so rasterising them at voxel centres gives back
the mask voxel for voxel; islands are separate contours and holes are separate contours
nested inside their island, read by the even-odd (XOR) rule as Slicer, plastimatch
(``--xor-contours``) and the planning systems read nested contours. ROIs are labelled as
:mod:`.roi_generation` says (AUTOMATIC with the model named and identified, SEMIAUTOMATIC when a
clinician edited the model's contour, empty when the origin is unknown), typed (CTV / ORGAN / EXTERNAL, see
:mod:`ctv_core.structures.catalogue`) and coloured; the structure set is UNAPPROVED so that a clinician
must approve it in the planning system. The file is written under a temporary name and
renamed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from .._version import __version__
from ..atomic_files import atomic_file
from .contours import trace_slice
from ..dicom.ct_series import CTSeries
from ..dicom.instances import dicom_now, new_instance, set_patient_study
from ..dicom.values import format_ds
from ..dicom.writing import write_dataset
from ..errors import StructureSetError
from ..geometry import Grid
from .catalogue import INTERPRETED_TYPES, structure_for
from .revision import SeriesRevision
from .roi_generation import ARTIFICIAL_INTELLIGENCE, RoiGeneration
from .writer_checks import check_writable

logger = logging.getLogger(__name__)

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
CONTOUR_DATA = Tag(0x3006, 0x0050)
_ENCODING = convert_encodings("ISO_IR 192")
_COORDINATE_DECIMALS = 4  # 0.1 micrometre: far below any voxel, keeps files small


# --- writing ------------------------------------------------------------------------------------

def _new_item(character_set: str | list[str] = "iso8859") -> Dataset:
    """A dataset marked as already encoded the way it will be written (explicit VR little endian).

    pydicom otherwise decodes every raw element (our ContourData) back into numbers to re-encode
    it when saving, which costs seconds for a full set of structures. ``character_set`` is what
    pydicom compares with: the top-level dataset's own (UTF-8), and for sequence items pydicom's
    default for datasets without a SpecificCharacterSet; text in items is still written with the
    top-level character set.
    """
    item = Dataset()
    item.set_original_encoding(False, True, character_set)
    return item


def mask_to_contours(mask: np.ndarray, grid: Grid) -> list[tuple[int, np.ndarray]]:
    """Planar contours of a ``[k, j, i]`` mask on ``grid``: a list of (slice k, ``(n, 3)`` LPS points, mm)."""
    contours = []
    for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        for polygon in trace_slice(mask[k]):
            index = np.column_stack([polygon, np.full(len(polygon), float(k))])
            contours.append((int(k), grid.index_to_lps(index)))
    return contours


def write_rtstruct(
    ct: CTSeries,
    masks: Mapping[str, sitk.Image],
    path: str | Path,
    *,
    algorithm: str | None = f"ctv_core {__version__}",
    label: str = "CTV_AUTO",
    series_description: str = "CTV auto-delineation (unapproved)",
    interpreted_types: Mapping[str, str] | None = None,
    revision: SeriesRevision | None = None,
    generation: Mapping[str, RoiGeneration] | None = None,
) -> Path:
    """Write ``masks`` as one RT Structure Set referencing ``ct``.

    Parameters
    ----------
    ct
        The CT the masks were computed on (as loaded by ``load_ct_series``).
    masks
        ROI name -> mask image on ``ct.image``'s grid (non-zero = inside). Order is kept.
    path
        Output file; written to a temporary name beside it, then renamed.
    algorithm
        The model (name, version) that produced the masks: ROIGenerationAlgorithm AUTOMATIC with
        this ROIGenerationDescription. None when the origin is unknown (conversions):
        ROIGenerationAlgorithm is then left empty.
    label
        StructureSetLabel (16 characters at most).
    interpreted_types
        ROI name -> RTROIInterpretedType, overriding the catalogue (CTV, ORGAN, EXTERNAL, ...).
    revision
        When this structure set replaces an earlier one of the same CT (:mod:`.revision`): its
        series, next instance number and predecessor. None: a new series, instance 1.
    generation
        ROI name -> how it was made (:mod:`.roi_generation`), overriding ``algorithm`` for that ROI.

    Raises
    ------
    GridMismatchError
        A mask is not on the CT's grid.
    StructureSetError
        The CT cannot be referenced, or names/types are not usable.
    """
    check_writable(ct, masks)
    interpreted_types = {k.lower(): v for k, v in (interpreted_types or {}).items()}
    for name, kind in interpreted_types.items():
        if kind not in INTERPRETED_TYPES:
            raise StructureSetError(f"'{kind}' (for ROI '{name}') is not a DICOM RTROIInterpretedType; "
                                    f"use one of {', '.join(sorted(INTERPRETED_TYPES))}.")
    if len(label) > 16:
        raise StructureSetError(f"Structure set label '{label}' is longer than 16 characters.")

    ds = _structure_set_header(ct, label, series_description, revision)
    ref = ct.reference
    slice_refs = [(s.sop_class_uid, s.sop_instance_uid) for s in ref.slices]
    for number, (name, mask) in enumerate(masks.items(), start=1):
        structure = structure_for(name, number - 1)
        kind = interpreted_types.get(name.lower(), structure.interpreted_type)
        roi = _new_item()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = ref.frame_of_reference_uid
        roi.ROIName = name
        _set_generation(roi, (generation or {}).get(name) or RoiGeneration.of_model(algorithm))
        ds.StructureSetROISequence.append(roi)

        contour_item = _new_item()
        contour_item.ReferencedROINumber = number
        contour_item.ROIDisplayColor = list(structure.colour)
        array = sitk.GetArrayViewFromImage(mask) != 0
        contours = [_contour_dataset(n, points, slice_refs[k])
                    for n, (k, points) in enumerate(mask_to_contours(array, ct.grid), start=1)]
        if contours:
            contour_item.ContourSequence = DicomSequence(contours)
        else:
            # ContourSequence is Type 3: an empty ROI leaves it out (a present but empty sequence is an
            # error that planning systems may reject the whole file for).
            logger.warning("ROI '%s' is empty; it is written without contours", name)
        ds.ROIContourSequence.append(contour_item)

        observation = _new_item()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = kind
        observation.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(observation)
    with atomic_file(path) as tmp:
        write_dataset(ds, tmp)
    return Path(path)


def _set_generation(roi: Dataset, how: RoiGeneration) -> None:
    """ROIGenerationAlgorithm, its description and the ROI Derivation Algorithm Identification of an ROI item."""
    roi.ROIGenerationAlgorithm = how.algorithm
    if how.description:
        roi.ROIGenerationDescription = how.description[:64]
    if not how.model_name:
        return
    family = _new_item()
    family.CodingSchemeDesignator, family.CodeValue, family.CodeMeaning = ARTIFICIAL_INTELLIGENCE
    identification = _new_item()
    identification.AlgorithmFamilyCodeSequence = DicomSequence([family])
    identification.AlgorithmName = how.model_name[:64]
    identification.AlgorithmVersion = (how.model_version or "unknown")[:64]
    if how.parameters:
        identification.AlgorithmParameters = how.parameters
    roi.ROIDerivationAlgorithmIdentificationSequence = DicomSequence([identification])


def _contour_dataset(number: int, points: np.ndarray, slice_ref: tuple[str, str]) -> Dataset:
    item = _new_item()
    image = _new_item()
    image.ReferencedSOPClassUID, image.ReferencedSOPInstanceUID = slice_ref
    item.ContourImageSequence = DicomSequence([image])
    item.ContourGeometricType = "CLOSED_PLANAR"
    item.NumberOfContourPoints = len(points)
    item.ContourNumber = number
    raw = "\\".join(format_ds(v, _COORDINATE_DECIMALS) for v in points.ravel().tolist()).encode("ascii")
    if len(raw) % 2:
        raw += b" "
    # Kept as encoded bytes: pydicom would otherwise build and validate a number object per coordinate.
    item[CONTOUR_DATA] = RawDataElement(CONTOUR_DATA, "DS", len(raw), raw, 0, False, True)
    return item


def _structure_set_header(ct: CTSeries, label: str, series_description: str,
                          revision: SeriesRevision | None) -> Dataset:
    ref = ct.reference
    ps = ref.patient_study
    date, time = dicom_now()
    ds = new_instance(RT_STRUCTURE_SET_STORAGE, "ISO_IR 192", _new_item(_ENCODING))
    set_patient_study(ds, ps)  # the CT's own patient and study
    # RT series and equipment: ours.
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = revision.series_uid if revision else generate_uid()
    ds.SeriesNumber = revision.series_number if revision else 901
    ds.InstanceNumber = revision.instance_number if revision else 1
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = series_description[:64]
    ds.OperatorsName = ""
    ds.Manufacturer = "CTVDelineation"
    ds.ManufacturerModelName = "ctv_core"
    ds.SoftwareVersions = f"ctv_core {__version__}"
    ds.FrameOfReferenceUID = ref.frame_of_reference_uid
    ds.PositionReferenceIndicator = ref.position_reference_indicator
    # Structure set.
    ds.StructureSetLabel = label
    ds.StructureSetName = label
    ds.StructureSetDate, ds.StructureSetTime = date, time
    if revision:
        predecessor = _new_item()
        predecessor.ReferencedSOPClassUID, predecessor.ReferencedSOPInstanceUID = revision.predecessor
        ds.PredecessorStructureSetSequence = DicomSequence([predecessor])
    contour_images = DicomSequence()
    for s in ref.slices:
        image = _new_item()
        image.ReferencedSOPClassUID = s.sop_class_uid
        image.ReferencedSOPInstanceUID = s.sop_instance_uid
        contour_images.append(image)
    series = _new_item()
    series.SeriesInstanceUID = ref.series_instance_uid
    series.ContourImageSequence = contour_images
    study = _new_item()
    study.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT
    study.ReferencedSOPInstanceUID = ps.study_instance_uid
    study.RTReferencedSeriesSequence = DicomSequence([series])
    frame = _new_item()
    frame.FrameOfReferenceUID = ref.frame_of_reference_uid
    frame.RTReferencedStudySequence = DicomSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])
    ds.StructureSetROISequence = DicomSequence()
    ds.ROIContourSequence = DicomSequence()
    ds.RTROIObservationsSequence = DicomSequence()
    # Approval: a clinician approves it in the planning system.
    ds.ApprovalStatus = "UNAPPROVED"
    return ds
