"""ctv_core's exception types.

Every error a user can cause is one of these. The message says what was wrong and what to do;
the command line prints it without a traceback and exits non-zero, and the Slicer module shows
it in a dialog.
"""

from __future__ import annotations


class CTVError(Exception):
    """Base of every error ctv_core raises on purpose."""


class DicomInputError(CTVError):
    """The DICOM input cannot be used as it is (wrong folder, wrong modality, broken series)."""


class NoDicomFoundError(DicomInputError):
    """The folder holds no readable DICOM file."""


class NotCTError(DicomInputError):
    """The folder holds DICOM, but no CT image series (MR, PET, only localizers, …)."""


class MultipleSeriesError(DicomInputError):
    """Several CT series were found and none was chosen."""


class SeriesNotFoundError(DicomInputError):
    """The series asked for is not in the folder."""


class UnsupportedDicomError(DicomInputError):
    """A DICOM variant this version cannot load (enhanced multi-frame CT, colour images, …)."""


class InconsistentSeriesError(DicomInputError):
    """Slices of one series disagree (orientation, size, pixel spacing, frame of reference)."""


class MissingSlicesError(DicomInputError):
    """The series has gaps where slices should be."""


class DuplicateSliceError(DicomInputError):
    """Two different slices claim the same position in the series."""


class CorruptDicomError(DicomInputError):
    """A file of the series cannot be decoded and the series is not consistent without it."""


class PhantomError(CTVError):
    """Phantom parameters that cannot be honoured."""


class GridMismatchError(CTVError):
    """A mask is not on the grid of the CT it is written against."""


class StructureSetError(CTVError):
    """An RTSTRUCT (or SEG) that cannot be read or written as asked."""


class FrameOfReferenceMismatchError(StructureSetError):
    """The structure set was drawn in another frame of reference than the CT's."""


class ROINotFoundError(StructureSetError):
    """No ROI of the structure set matches the name or pattern asked for."""


class PreprocessingError(CTVError):
    """The CT cannot be turned into a network input (no body found, too small)."""


class ModelPackageError(CTVError):
    """A model package is missing, corrupt, or does not match its manifest."""


class PredictionCancelled(CTVError):
    """The user cancelled a running prediction."""


class DeviceError(CTVError, ValueError):
    """The compute device asked for is not available or not known."""


class EvaluationError(CTVError):
    """Masks or evaluation inputs that cannot be compared as given."""


class TrainingError(CTVError):
    """Training or export cannot run as asked (bad configuration, data or run folder)."""


class DatasetError(CTVError):
    """A training dataset that cannot be built or read as asked."""
