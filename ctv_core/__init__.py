"""ctv_core: CTV auto-delineation for cervical cancer radiotherapy, without Slicer.

The public API (kept stable for the Slicer module, the command line and outside scripts)::

    ct = ctv_core.load_ct_series(folder, series_uid=None)          # -> CTSeries (HU image in LPS + references)
    ctv_core.write_rtstruct(ct, {"CTV": mask}, path)                 # masks on ct.image's grid
    ctv_core.read_rtstruct(path, ct, roi="CTV")                      # -> {name: mask}
    ctv_core.write_seg / read_seg                                    # DICOM SEG
    ctv_core.convert_structures(ct_dir, input, output, roi=None)     # between formats
    ctv_core.CTVPredictor(model=None, device="auto").predict(ct.image)  # -> uint8 mask on the CT's grid
    ctv_core.load_model_package(path=None)                           # None: the bundled demo model

and the error types (every one a :class:`CTVError`). The stages live in subpackages, each
importing only the ones before it: ``dicom`` → ``structures`` → ``model`` → ``inference`` →
``dataset`` / ``evaluation`` → ``training``; ``scene`` (MRML beside ctv_core, for the Slicer
module and the review station) → ``service``; ``phantom`` (test patients) and ``cli`` (the ``ctv``
command) on top. ctv_core never imports the Slicer module. Importing ``ctv_core`` imports none of them: each name above is loaded on first
use, so ``import ctv_core`` costs no torch, SimpleITK, pydicom, highdicom, h5py or matplotlib.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    CorruptDicomError, CTVError, DatasetError, DeviceError, DicomInputError, DuplicateSliceError, EditRecordError,
    EvaluationError,
    FrameOfReferenceMismatchError, GridMismatchError, InconsistentSeriesError, InstallationError,
    InsufficientCoverageError, MissingDependencyError, MissingSlicesError, OutputFolderError, PeerError, StoreError,
    ModelPackageError, MultipleSeriesError, NoDicomFoundError, NotCTError, PhantomError, PredictionCancelled,
    PredictionProtocolError, PreprocessingError, ROINotFoundError, SceneInputError, SeriesNotFoundError,
    StructureSetError, TrainingError, UnsupportedDicomError, UploadError, UploadTooCostlyError, UploadTooLargeError,
)

if TYPE_CHECKING:
    from .dicom.ct_series import CTReference, CTSeries, PatientStudy, SliceReference
    from .dicom.series import load_ct_series
    from .inference.predictor import CTVPredictor
    from .model.package import ModelPackage, load_model_package
    from .structures.convert import convert_structures
    from .structures.rtstruct import write_rtstruct
    from .structures.rtstruct_reader import read_rtstruct
    from .structures.seg import read_seg, write_seg

logging.getLogger(__name__).addHandler(logging.NullHandler())

#: Public name -> the module that defines it (imported on first use).
_LAZY = {
    "CTReference": ".dicom.ct_series",
    "CTSeries": ".dicom.ct_series",
    "PatientStudy": ".dicom.ct_series",
    "SliceReference": ".dicom.ct_series",
    "load_ct_series": ".dicom.series",
    "write_rtstruct": ".structures.rtstruct",
    "read_rtstruct": ".structures.rtstruct_reader",
    "write_seg": ".structures.seg",
    "read_seg": ".structures.seg",
    "convert_structures": ".structures.convert",
    "CTVPredictor": ".inference.predictor",
    "ModelPackage": ".model.package",
    "load_model_package": ".model.package",
}

__all__ = [
    "CTReference", "CTSeries", "CTVPredictor", "ModelPackage", "PatientStudy", "SliceReference", "__version__",
    "convert_structures", "load_ct_series", "load_model_package", "read_rtstruct", "read_seg", "write_rtstruct",
    "write_seg",
    # errors
    "CTVError", "CorruptDicomError", "DatasetError", "DeviceError", "DicomInputError", "DuplicateSliceError",
    "EditRecordError", "EvaluationError", "FrameOfReferenceMismatchError", "GridMismatchError", "InconsistentSeriesError",
    "InstallationError", "InsufficientCoverageError", "MissingDependencyError", "MissingSlicesError",
    "ModelPackageError", "MultipleSeriesError", "NoDicomFoundError", "NotCTError", "OutputFolderError", "PeerError",
    "PhantomError", "PredictionCancelled", "PredictionProtocolError", "PreprocessingError", "ROINotFoundError",
    "SceneInputError", "SeriesNotFoundError", "StoreError",
    "StructureSetError", "TrainingError", "UnsupportedDicomError", "UploadError", "UploadTooCostlyError", "UploadTooLargeError",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ctv_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
