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


class SceneInputError(CTVError):
    """A MRML node given to ctv_core.scene cannot be used as it is (missing, empty, transformed, not a CT)."""


class InstallationError(CTVError):
    """A file of ctv_core or of the extension itself is missing or damaged; reinstalling fixes it."""


class PredictionCancelled(CTVError):
    """The user cancelled a running prediction."""


class PredictionProtocolError(CTVError):
    """A prediction process sent what the prediction-process protocol does not allow (another version's)."""


class MissingDependencyError(CTVError):
    """An optional dependency (an extra of ctv_core) is not installed; the message names the extra."""


def require_extra(module: str, extra: str, purpose: str, note: str = "it needs pydicom 3"):
    """Import ``module`` of the ``extra`` (``pip install 'ctv_core[extra]'``), or raise MissingDependencyError
    whose message ends with ``note`` in parentheses."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"{purpose} needs {module}, which is not installed: pip install "
                                     f"'ctv_core[{extra}]' ({note}).") from None


class DeviceError(CTVError, ValueError):
    """The compute device asked for is not available or not known."""


class EvaluationError(CTVError):
    """Masks or evaluation inputs that cannot be compared as given."""


class EditRecordError(EvaluationError):
    """An approved contour that cannot be compared with the AI contour it started from (another CT, another grid,
    no AI provenance), or edit records that cannot be read or summarised."""


class TrainingError(CTVError):
    """Training or export cannot run as asked (bad configuration, data or run folder)."""


class DatasetError(CTVError):
    """A training dataset that cannot be built or read as asked."""


class InsufficientCoverageError(PreprocessingError):
    """The CT does not cover enough of the patient to be a pelvic planning CT (too few slices or millimetres)."""


class OutputFolderError(CTVError):
    """The output folder cannot take this run's outputs (not a folder, not writable, not ours, in use, full)."""


class StoreError(CTVError):
    """The data folder cannot be used as a case store (not writable, another version's index, damaged)."""


class PeerError(CTVError):
    """A DICOM destination or allowed peer that cannot be parsed."""


class UploadError(CTVError):
    """An upload the review station cannot take (not a zip or DICOM files, a path leaving its folder, too many
    files)."""


class UploadTooLargeError(UploadError):
    """An upload larger than the review station's limits (bytes sent, or bytes once unpacked)."""


class UploadTooCostlyError(UploadTooLargeError):
    """An upload whose examination takes more CPU time than the review station's budget for one upload."""


def describe_os_error(exc: OSError, doing: str) -> str:
    """One sentence for an operating-system error met while ``doing`` something, with what to do about it.

    ``doing`` completes "while ..." (e.g. "writing the outputs into 'OUT'").
    """
    import errno

    cause: BaseException | None = exc
    while cause is not None and getattr(cause, "errno", None) is None:  # libraries re-raise without the errno
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError):
        exc = cause
    filename = getattr(exc, "filename", None)
    where = f" ('{filename}')" if filename and str(filename) not in doing else ""
    fixes = {
        errno.ENOSPC: "the disk is full: free some space or choose a folder on another disk",
        errno.EDQUOT: "the disk quota is exhausted: free some space or choose a folder on another disk",
        errno.EACCES: "permission denied: choose a folder you may write to, or ask for write access",
        errno.EPERM: "the operation is not permitted: choose a folder you may write to",
        errno.EROFS: "the file system is read-only: choose a writable folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
        errno.EISDIR: "a folder stands where a file was expected: give the file's path",
        errno.EEXIST: "a file already stands there: choose another path",
        errno.ENOENT: "a file or folder does not exist: check the path",
        errno.EXDEV: "the path crosses file systems: choose a folder on one disk",
        errno.ENAMETOOLONG: "the path is too long: choose a shorter one",
    }
    fix = fixes.get(exc.errno, f"{exc.strerror or type(exc).__name__}: check the path and the disk")
    return f"The system refused an operation while {doing}{where}: {fix}."
