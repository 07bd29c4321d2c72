"""Building new DICOM instances: file meta, SOP common, and the patient and study modules.

Shared by every writer (the phantom's CT series, RTSTRUCT) so that each instance is
stamped the same way: explicit VR little endian, fresh SOPInstanceUID, creation date and
time, and patient/study attributes copied verbatim from a ``PatientStudy``.
"""

from __future__ import annotations

import datetime as dt

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .ct_series import PatientStudy


def dicom_now() -> tuple[str, str]:
    """Today's DICOM date (YYYYMMDD) and the time (HHMMSS), local time."""
    now = dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def new_instance(sop_class_uid: str, character_set: str, dataset: Dataset | None = None) -> Dataset:
    """``dataset`` (or a new one) with file meta and SOP common set and a fresh SOPInstanceUID."""
    ds = dataset if dataset is not None else Dataset()
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.SpecificCharacterSet = character_set
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = dicom_now()
    return ds


def set_patient_study(ds: Dataset, ps: PatientStudy) -> None:
    """Write the Patient and General Study modules (type 2 attributes even when empty)."""
    ds.PatientName = ps.patient_name
    ds.PatientID = ps.patient_id
    if ps.issuer_of_patient_id:
        ds.IssuerOfPatientID = ps.issuer_of_patient_id
    ds.PatientBirthDate = ps.patient_birth_date
    ds.PatientSex = ps.patient_sex
    ds.StudyInstanceUID = ps.study_instance_uid
    ds.StudyDate, ds.StudyTime = ps.study_date, ps.study_time
    ds.ReferringPhysicianName = ps.referring_physician_name
    ds.StudyID = ps.study_id
    ds.AccessionNumber = ps.accession_number
    if ps.study_description:
        ds.StudyDescription = ps.study_description
