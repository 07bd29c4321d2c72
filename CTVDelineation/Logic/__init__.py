"""The CTVDelineation module's logic: MRML work and the call into ctv_core; no Qt widgets.

Slicer puts every module folder on one shared ``sys.path``, so this folder is never imported
as a bare ``Logic``: ``CTVDelineation.py`` loads it under the package name ``CTVDelineationLib``
(``loadLogicPackage``), and so do the tests. One file per concern, in Slicer's CamelCase:

* :mod:`.CTVDelineationLogic` - ``CTVDelineationLogic(scene)``: run / start / poll / cancel,
  ``volume_to_image``, ``import_mask``, ``export_rtstruct``; signals progress, finished,
  failed, cancelled
* :mod:`.PatientFrame` - the one RAS <-> LPS conversion; :mod:`.Lattice` - exact voxel
  correspondence between grids
* :mod:`.SceneConversion` - volume node to image, mask to segment, segment to mask
* :mod:`.PredictionProcess` - the process-runner seam and ctv_core's worker command;
  :mod:`.PredictionJob` - one run of the worker, and the device probe
* :mod:`.RTStructExport` - RTSTRUCT on the CT's own DICOM series; :mod:`.EditRecord` - what was changed in a
  predicted segment, measured and recorded at export
* :mod:`.Terminology` - the CTV's coded type; :mod:`.ModelInfo` - a model package's manifest
  for the user; :mod:`.Review` - stepping through the CTV's slices; :mod:`.Dependencies` -
  checking and installing Python packages with consent
* :mod:`.Signal` - plain-Python signals; :mod:`.Errors` - the module's own error types

Frames: MRML speaks RAS, ctv_core LPS; only :mod:`.PatientFrame` converts.
"""

from ctv_core.errors import CTVError

from .CTVDelineationLogic import CTVDelineationLogic, PredictionResult, deviceStatus
from .Dependencies import DependencyLogic, InstallJob
from .Errors import BusyError, InstallationError, PredictionProcessError, SceneInputError, userMessage
from .ModelInfo import ModelDescription, describeModel
from .PredictionJob import PredictionOptions
from .PredictionProcess import ProcessRunner, SubprocessRunner
from .RTStructExport import ExportResult
from .Review import AUTOPLAY_INTERVAL_MS, ReviewPlayer, segmentSliceOffsets, sliceOffsets
from .Signal import Signal

__all__ = [
    "AUTOPLAY_INTERVAL_MS", "BusyError", "CTVDelineationLogic", "CTVError", "DependencyLogic", "ExportResult",
    "InstallationError", "ModelDescription", "PredictionOptions", "PredictionProcessError", "PredictionResult",
    "ProcessRunner", "ReviewPlayer", "SceneInputError", "Signal", "InstallJob", "SubprocessRunner",
    "describeModel", "deviceStatus", "segmentSliceOffsets", "sliceOffsets", "userMessage",
]
