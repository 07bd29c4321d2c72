"""The loaded CT: its image and what a writer needs to reference it.

``CTSeries`` is what ``load_ct_series`` returns and what every writer (RTSTRUCT, SEG) takes:
the image in HU on the DICOM geometry, and ``CTReference``, the identifiers and patient/study
attributes copied from the series so that a derived object points at this very CT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from ..geometry import Grid


@dataclass(frozen=True)
class SliceReference:
    """One DICOM instance of the series, in slice order.

    ``position`` is ImagePositionPatient (LPS mm, centre of the first transmitted pixel).
    """

    sop_instance_uid: str
    sop_class_uid: str
    position: tuple[float, float, float]
    path: Path


@dataclass(frozen=True)
class PatientStudy:
    """Patient and study module attributes, copied verbatim (DICOM string forms)."""

    patient_name: str = ""
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_instance_uid: str = ""
    study_date: str = ""
    study_time: str = ""
    study_id: str = ""
    accession_number: str = ""
    referring_physician_name: str = ""
    study_description: str = ""


@dataclass(frozen=True)
class CTReference:
    """What a derived object (RTSTRUCT, SEG) needs to reference the CT it was computed on.

    ``slices`` are the DICOM instances in slice order: slice ``k`` of ``CTSeries.image`` is
    ``slices[k]`` unless ``CTSeries.regularization`` says the voxels were resampled.
    Empty strings mean the attribute was absent or empty in the files.
    """

    series_instance_uid: str
    frame_of_reference_uid: str
    patient_study: PatientStudy
    slices: tuple[SliceReference, ...]
    patient_position: str = ""
    position_reference_indicator: str = ""
    manufacturer: str = ""
    modality: str = "CT"
    series_description: str = ""
    series_number: str = ""

    @property
    def study_instance_uid(self) -> str:
        return self.patient_study.study_instance_uid

    @property
    def sop_instance_uids(self) -> tuple[str, ...]:
        """SOPInstanceUIDs in slice order."""
        return tuple(s.sop_instance_uid for s in self.slices)

    @property
    def sop_class_uid(self) -> str:
        """SOP class of the slices (CT Image Storage)."""
        return self.slices[0].sop_class_uid if self.slices else ""

    def problems_for_referencing(self) -> list[str]:
        """Reasons a derived object could not reference this series (empty when it can)."""
        problems = []
        for name, value in (
            ("StudyInstanceUID", self.study_instance_uid),
            ("SeriesInstanceUID", self.series_instance_uid),
            ("FrameOfReferenceUID", self.frame_of_reference_uid),
        ):
            if not value:
                problems.append(f"the CT's {name} is empty")
        if any(not s.sop_instance_uid for s in self.slices):
            problems.append("some CT slices have no SOPInstanceUID")
        return problems


@dataclass(frozen=True)
class CTSeries:
    """A CT series loaded from DICOM.

    Attributes
    ----------
    image
        SimpleITK image in Hounsfield units on the DICOM geometry (LPS; direction from
        ImageOrientationPatient, k axis along the slice normal in increasing position; spacing
        along k from the slice positions). Pixel type int16 when every slice's
        RescaleSlope/Intercept are integers and the values fit, else float32.
    reference
        Identifiers and attributes for writers that reference this CT.
    folder
        The folder the series was loaded from.
    regularization
        None when voxel slice k is exactly DICOM instance k. Otherwise a sentence saying how
        the acquisition (gantry tilt, uneven spacing) was resampled onto the rectilinear grid;
        derived objects that must lie on the CT's own slices cannot be written then.
    warnings
        Things the user should know that did not stop loading (files skipped, identifiers
        inferred).
    """

    image: sitk.Image
    reference: CTReference
    folder: Path
    regularization: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def grid(self) -> Grid:
        return Grid.of_image(self.image)

    def describe(self) -> str:
        """A few lines on what was loaded, for logs and the command line."""
        size = self.image.GetSize()
        spacing = self.image.GetSpacing()
        ps = self.reference.patient_study
        lines = [
            f"CT series {self.reference.series_instance_uid or '(no SeriesInstanceUID)'}"
            f" '{self.reference.series_description}' of patient '{ps.patient_name}' ({ps.patient_id}),"
            f" study {ps.study_date or '?'}",
            f"  {size[0]} x {size[1]} x {size[2]} voxels, spacing {spacing[0]:.3f} x {spacing[1]:.3f}"
            f" x {spacing[2]:.3f} mm, position {self.reference.patient_position or '?'},"
            f" {self.reference.manufacturer or 'unknown manufacturer'}",
            f"  origin (LPS mm) {tuple(round(v, 2) for v in self.image.GetOrigin())},"
            f" direction {tuple(round(v, 4) for v in self.image.GetDirection())}",
        ]
        if self.regularization:
            lines.append(f"  resampled: {self.regularization}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)
