"""The CTVDelineation module's logic: what needs the Slicer application, over ctv_core; no Qt widgets.

Slicer puts every module folder on one shared ``sys.path``, so this folder is never imported
as a bare ``Logic``: ``CTVDelineation.py`` loads it under the package name ``CTVDelineationLib``
(``loadLogicPackage``), and so do the tests. The MRML conversions (the one RAS <-> LPS
conversion, exact voxel correspondence, volume node to image, mask to segment), the RTSTRUCT
export from a segmentation, the CTV's terminology, the CTV slice stepping and the model
description are ctv_core's (:mod:`ctv_core.scene`), shared with the review station; ctv_core
never imports this package. One file per concern, in Slicer's CamelCase:

* :mod:`.CTVDelineationLogic` - ``CTVDelineationLogic(scene)``: run / start / poll / cancel,
  ``volume_to_image``, ``import_mask``, ``export_rtstruct``; signals progress, finished,
  failed, cancelled
* :mod:`.DicomDatabase` - the CT's files in Slicer's DICOM database (for the RTSTRUCT export)
* :mod:`.PredictionProcess` - the process-runner seam and ctv_core's worker command;
  :mod:`.PredictionJob` - one run of the worker, and the device probe
* :mod:`.Dependencies` - checking and installing Python packages with consent
* :mod:`.Signal` - plain-Python signals; :mod:`.Errors` - the module's own error types

Frames: MRML speaks RAS, ctv_core LPS; only :mod:`ctv_core.scene.patient_frame` converts.
"""

from ctv_core.errors import CTVError, InstallationError, SceneInputError
from ctv_core.scene.model_description import ModelDescription, describeModel
from ctv_core.scene.review_steps import AUTOPLAY_INTERVAL_MS, ReviewPlayer, segmentSliceOffsets, sliceOffsets
from ctv_core.scene.rtstruct_export import ExportResult, instanceUIDs

from .CTVDelineationLogic import CTVDelineationLogic, PredictionResult, deviceStatus
from .Dependencies import DependencyLogic, InstallJob
from .Errors import BusyError, PredictionProcessError, userMessage
from .PredictionJob import PredictionOptions
from .PredictionProcess import ProcessRunner, SubprocessRunner
from .Signal import Signal

__all__ = [
    "AUTOPLAY_INTERVAL_MS", "BusyError", "CTVDelineationLogic", "CTVError", "DependencyLogic", "ExportResult",
    "InstallationError", "ModelDescription", "PredictionOptions", "PredictionProcessError", "PredictionResult",
    "ProcessRunner", "ReviewPlayer", "SceneInputError", "Signal", "InstallJob", "SubprocessRunner",
    "describeModel", "deviceStatus", "instanceUIDs", "segmentSliceOffsets", "sliceOffsets", "userMessage",
]
