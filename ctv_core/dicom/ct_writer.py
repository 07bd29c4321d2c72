"""Writing a CT Image Storage series from an image in HU (the phantom's scanner).

One file per slice, classic single-frame CT Image Storage, explicit VR little endian, with the
modules the CT Image IOD requires (patient, study, series, frame of reference, equipment,
image plane, image pixel, CT image, SOP common). Geometry comes from the image: slice k of
the image becomes the file whose ImagePositionPatient is the LPS position of voxel (0, 0, k);
ImageOrientationPatient is the image's i and j axes. Stored values are HU + 1024 as 12-bit
unsigned integers (RescaleIntercept -1024, RescaleSlope 1), so HU are clipped to
[-1024, 3071] and rounded to integers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.uid import generate_uid

from .._version import __version__
from ..atomic_files import atomic_folder
from .ct_series import PatientStudy
from .files import CT_IMAGE_STORAGE
from .instances import dicom_now, new_instance, set_patient_study
from .values import format_ds, format_ds_list
from .writing import write_dataset
from ..geometry import Grid

HU_MIN, HU_MAX = -1024, 3071
_INTERCEPT = -1024


@dataclass(frozen=True)
class SeriesIdentity:
    """Who and what the written series belongs to (DICOM string forms).

    ``patient`` gives the patient and study attributes; an empty StudyInstanceUID, date or
    time in it is filled with a fresh UID and the time of writing.
    """

    patient: PatientStudy = PatientStudy(patient_name="PHANTOM^CTV", patient_id="CTV-PHANTOM", patient_sex="F",
                                         study_id="1", study_description="Synthetic pelvic CT")
    series_description: str = "Synthetic pelvic CT"
    patient_position: str = "HFS"
    body_part: str = "PELVIS"
    manufacturer: str = "CTVDelineation"
    model_name: str = "ctv_core phantom"
    contrast_agent: str | None = None


def write_ct_series(
    image: sitk.Image,
    out_dir: str | Path,
    identity: SeriesIdentity,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write ``image`` (HU, LPS geometry) as a CT series into ``out_dir``; return the file paths.

    Files are written into a temporary folder beside ``out_dir`` and moved in place only when
    every slice is written, so a failure leaves no partial series. ``out_dir`` must not exist
    or be empty. Fresh UIDs are generated on every call.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty")
    grid = Grid.of_image(image)
    hu = np.clip(np.rint(sitk.GetArrayViewFromImage(image)), HU_MIN, HU_MAX)
    stored = (hu - _INTERCEPT).astype(np.uint16)

    date, time = dicom_now()
    patient = replace(
        identity.patient,
        study_instance_uid=identity.patient.study_instance_uid or generate_uid(),
        study_date=identity.patient.study_date or date,
        study_time=identity.patient.study_time or time,
    )
    series_uid, for_uid = generate_uid(), generate_uid()
    d = grid.direction_matrix
    iop = format_ds_list(list(d[:, 0]) + list(d[:, 1]))
    pixel_spacing = format_ds_list([grid.spacing[1], grid.spacing[0]])  # (row spacing, column spacing)

    paths = []
    n = grid.size[2]
    with atomic_folder(out_dir) as staging:
        for k in range(n):
            ds = _slice_dataset(identity, patient, grid, k, stored[k], series_uid, for_uid, iop, pixel_spacing,
                                date, time)
            name = f"CT{k + 1:04d}.dcm"
            write_dataset(ds, staging / name)
            paths.append(out_dir / name)
            if progress is not None:
                progress(k + 1, n)
    return paths


def _slice_dataset(identity, patient, grid, k, pixels, series_uid, for_uid, iop, pixel_spacing, date, time):
    ds = new_instance(CT_IMAGE_STORAGE, "ISO_IR 192")
    set_patient_study(ds, patient)
    # General series
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = identity.series_description
    ds.PatientPosition = identity.patient_position
    ds.BodyPartExamined = identity.body_part
    # Frame of reference
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    # General equipment
    ds.Manufacturer = identity.manufacturer
    ds.ManufacturerModelName = identity.model_name
    ds.SoftwareVersions = f"ctv_core {__version__}"
    # General image, image plane
    ds.InstanceNumber = k + 1
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.DerivationDescription = "Synthetic image computed from an analytical pelvic phantom"
    ds.AcquisitionNumber = 1
    ds.ContentDate, ds.ContentTime = date, time
    ds.ImagePositionPatient = format_ds_list(grid.index_to_lps(np.array([0.0, 0.0, float(k)])))
    ds.ImageOrientationPatient = iop
    ds.PixelSpacing = pixel_spacing
    ds.SliceThickness = format_ds(grid.spacing[2])
    ds.SliceLocation = format_ds(float(grid.index_to_lps(np.array([0.0, 0.0, float(k)])) @ grid.direction_matrix[:, 2]))
    # Image pixel and CT image
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = str(_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.KVP = "120"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    if identity.contrast_agent:
        ds.ContrastBolusAgent = identity.contrast_agent
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds
