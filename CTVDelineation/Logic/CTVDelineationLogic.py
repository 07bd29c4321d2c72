"""``CTVDelineationLogic``: a CT volume node in, a CTV segment on its voxels out, and an RTSTRUCT on its
DICOM series; usable without the widget (scripts, tests).

The MRML conversions, the RTSTRUCT export and the terminology are ctv_core's
(:mod:`ctv_core.scene`, shared with the review station); this logic adds what needs the
application: Slicer's DICOM database, the prediction process, the signals. A prediction runs in
ctv_core's worker process (:mod:`.PredictionJob`): ``start`` returns at once, ``poll`` (the
widget calls it from a timer) reports progress and, at the end, imports the mask and emits
``finished``; ``run`` is the same path, waiting. The scene is changed only when a
run has succeeded: a failed or cancelled run leaves it as it was. The logic reports through
plain-Python signals and never touches a widget:

* ``progress(percent: int, message: str)``
* ``finished(result: PredictionResult)``
* ``failed(message: str)`` - a sentence for the user (what went wrong, what to do)
* ``cancelled(message: str)``
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import SimpleITK as sitk
import slicer

from ctv_core.errors import CTVError, PredictionCancelled
from ctv_core.geometry import Grid
from ctv_core.scene.conversion import (importMask, requireCT, requireSegmentationOnCT, requireUntransformed,
                                      volumeToImage)
from ctv_core.scene.edit_record import tagPrediction
from ctv_core.scene.patient_frame import gridOfVolume
from ctv_core.scene.rtstruct_export import DicomFileSource, ExportResult, exportRTStruct, seriesInstanceUID
from ctv_core.scene.terminology import CTVTerminology
from ctv_core.scene.uncertainty import LeastCertainTour, setUncertaintyVisible, showUncertainty, sliceOffset
from ctv_core.scene.uncertainty_report import UncertaintyFigures, readUncertaintyFigures

from .DicomDatabase import SlicerDicomDatabase
from .Errors import BusyError, PredictionProcessError, userMessage
from .PredictionJob import DeviceProbe, Outcome, PredictionJob, PredictionOptions
from .PredictionProcess import ProcessRunner, SubprocessRunner, pythonExecutable
from .Signal import Signal

logger = logging.getLogger(__name__)


@dataclass
class Uncertainty:
    """A run's uncertainty in the scene: the volume node over the CT, the report's figures, the map's grid
    (LPS, the grid the figures' slice indices count on) and the tour of the least certain slices."""

    node: Any
    figures: UncertaintyFigures
    grid: Grid
    tour: LeastCertainTour


@dataclass(frozen=True)
class PredictionResult:
    """A finished run: where the CTV went and what the user should know about it."""

    segmentationNode: Any
    segmentId: str
    volumeCC: float
    device: str
    model: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    uncertainty: Uncertainty | None = None
    uncertaintyNote: str = ""

    @property
    def usedGpu(self) -> bool:
        return self.device.startswith("cuda")

    def notes(self) -> list[str]:
        """What the user must see beside the contour: the prediction's warnings, and a CPU run."""
        notes = list(self.warnings)
        if self.uncertaintyNote:
            notes.append(self.uncertaintyNote)
        if not self.usedGpu:
            notes.append(f"No GPU was used: the CTV was computed on the CPU ({self.seconds.get('total', 0):.0f} s).")
        return notes


def deviceStatus(answer: dict[str, Any]) -> str:
    """One line for the widget from a device probe's answer (see :meth:`CTVDelineationLogic.startProbe`)."""
    if answer.get("event") != "probe":
        return f"\u26a0 {answer.get('message', 'The prediction process cannot start.')}"
    if answer.get("cuda"):
        return f"GPU: {', '.join(answer.get('gpus', []))} (torch {answer.get('torch')})"
    if answer.get("openvino"):
        return (f"CPU (OpenVINO {answer['openvino']}). For an NVIDIA GPU, install PyTorch with CUDA through the "
                "PyTorch extension and choose the device cuda.")
    return (f"\u26a0 No GPU usable by torch {answer.get('torch')}: the CTV will be computed on the CPU with PyTorch "
            "(slower). Install OpenVINO (the module offers it) for faster CPU prediction, or a CUDA build of torch "
            "through the PyTorch extension to use an NVIDIA GPU.")


class CTVDelineationLogic:
    """The module's logic on a MRML scene (see the module docstring).

    Parameters
    ----------
    scene
        The MRML scene (``slicer.mrmlScene`` in the application).
    runnerFactory
        Makes the process runner of each run (a fake in tests).
    dicomFiles
        Where ``export_rtstruct`` finds the CT's DICOM files (Slicer's DICOM database by default,
        :class:`.DicomDatabase.SlicerDicomDatabase`).
    terminologyLogic
        Slicer's terminologies logic, when there is one.
    temporaryDirectory
        Where runs keep their files (Slicer's temporary folder in the application).
    python
        The interpreter that runs the worker (default: ``PythonSlicer`` in Slicer).
    """

    def __init__(self, scene=None, runnerFactory: Callable[[], ProcessRunner] = SubprocessRunner,
                 dicomFiles: DicomFileSource | None = None, terminologyLogic=None,
                 temporaryDirectory: str | None = None, python: str | None = None):
        self.scene = scene if scene is not None else slicer.mrmlScene
        self.runnerFactory = runnerFactory
        self.dicomFiles = dicomFiles if dicomFiles is not None else SlicerDicomDatabase()
        self.terminology = CTVTerminology(terminologyLogic)
        self.temporaryDirectory = temporaryDirectory
        self.python = python
        self.progress = Signal("progress")
        self.finished = Signal("finished")
        self.failed = Signal("failed")
        self.cancelled = Signal("cancelled")
        self._job: PredictionJob | None = None
        self._target: dict[str, Any] = {}
        self.lastOutcome: Outcome | None = None
        self.lastResult: PredictionResult | None = None

    # --- the Python contract (DESIGN.md) ---------------------------------------------------------

    def volume_to_image(self, volume_node) -> sitk.Image:
        """The CT as a SimpleITK image in HU, LPS geometry (equal to ``ctv_core.load_ct_series(...).image``)."""
        return volumeToImage(volume_node)

    def import_mask(self, volume_node, mask_image: sitk.Image, segmentation_node=None, name: str = "CTV"):
        """Put a mask (LPS, on the CT's voxels) into segment ``name`` of a (new) segmentation node; return the node."""
        node, _ = importMask(volume_node, mask_image, segmentation_node, name, terminology=self.terminology)
        return node

    def run(self, volume_node, segmentation_node=None, model: str | None = None, device: str = "auto",
            options: PredictionOptions | None = None, pollInterval: float = 0.05):
        """Predict the CTV and wait for it; return the segmentation node.

        Raises the run's error (a ``CTVError`` whose message says what to do), or
        ``PredictionCancelled`` when :meth:`cancel` was called meanwhile (from a slot).
        """
        options = options or PredictionOptions(model=model, device=device)
        self.start(volume_node, segmentation_node, options)
        while self.poll():
            time.sleep(pollInterval)
        outcome = self.lastOutcome
        if outcome.state == "cancelled":
            raise PredictionCancelled(outcome.message)
        if outcome.state != "done":
            raise PredictionProcessError(outcome.message)
        return self.lastResult.segmentationNode

    def export_rtstruct(self, segmentation_node, volume_node, path: str | Path,
                        ct_folder: str | Path | None = None) -> ExportResult:
        """Write the segmentation, as it is now, as an RTSTRUCT referencing the CT's own DICOM series."""
        return exportRTStruct(segmentation_node, volume_node, path, ct_folder, files=self.dicomFiles,
                              terminology=self.terminology, python=self.python or pythonExecutable())

    # --- the non-blocking run ---------------------------------------------------------------------

    @property
    def isRunning(self) -> bool:
        return self._job is not None

    def start(self, volumeNode, segmentationNode=None, options: PredictionOptions | None = None) -> None:
        """Check the inputs, launch the prediction and return at once; then call :meth:`poll` regularly."""
        if self._job is not None:
            raise BusyError("A prediction is already running; cancel it or wait for it to finish.")
        requireCT(volumeNode)
        image = volumeToImage(volumeNode)
        if segmentationNode is not None:
            requireUntransformed(segmentationNode, "segmentation")
            requireSegmentationOnCT(segmentationNode, gridOfVolume(volumeNode), volumeNode.GetName())
        self.lastOutcome, self.lastResult = None, None
        self._target = {"volume": volumeNode.GetID(), "segmentation": segmentationNode.GetID() if segmentationNode
                        else None, "series": seriesInstanceUID(volumeNode), "started": time.perf_counter()}
        job = PredictionJob(self.runnerFactory(), options or PredictionOptions(), self.temporaryDirectory,
                            self.python)
        self.progress.emit(2, "Starting the prediction process")
        try:
            job.start(image)
        except (OSError, RuntimeError) as exc:  # no interpreter, or the CT could not be written
            job.close()
            raise PredictionProcessError(
                f"The prediction process cannot be started ({exc}). Check that the temporary folder "
                f"{job.folder.parent} has free space and that Slicer's Python has the dependencies (Dependencies "
                "section).") from exc
        self._job = job
        self.progress.emit(5, "Loading the model (the engine and the network) in the prediction process")

    def cancel(self) -> None:
        """Stop the running prediction; the scene stays as it was. ``cancelled`` follows from :meth:`poll`."""
        if self._job is not None:
            self._job.cancel()
            self.progress.emit(0, "Cancelling...")

    def poll(self) -> bool:
        """Report progress; at the end import the CTV and emit the outcome. True while a run goes on."""
        job = self._job
        if job is None:
            return False
        for update in job.poll():
            if not job.cancelRequested:  # after Cancel the status line keeps saying so
                self.progress.emit(update.percent, update.message)
        if job.outcome is None:
            return True
        self._job = None
        try:
            self._finish(job.outcome)
        finally:
            job.close()
        return False

    def _finish(self, outcome: Outcome) -> None:
        self.lastOutcome = outcome
        if outcome.state == "cancelled":
            self.cancelled.emit(outcome.message)
            return
        if outcome.state != "done":
            self.failed.emit(outcome.message)
            return
        self.progress.emit(98, "Adding the CTV to the scene")
        try:
            result = self._importResult(outcome)
        except Exception as exc:  # noqa: BLE001 - the user gets a message, the log the traceback of a bug
            if not isinstance(exc, CTVError):
                logger.exception("Importing the CTV failed")
            self.lastOutcome = Outcome("failed", userMessage(exc))
            self.failed.emit(userMessage(exc))
            return
        self.lastResult = result
        self.progress.emit(100, f"CTV {result.volumeCC:.0f} cc in {result.seconds['total']:.1f} s on {result.device}")
        self.finished.emit(result)

    def _importResult(self, outcome: Outcome) -> PredictionResult:
        volumeNode = self.scene.GetNodeByID(self._target["volume"])
        if volumeNode is None:
            raise PredictionProcessError("The CT was removed from the scene during the prediction; nothing was added.")
        segmentationNode = self.scene.GetNodeByID(self._target["segmentation"]) if self._target["segmentation"] \
            else None
        result = outcome.result
        model = result.get("model", {})
        tags = {"ModelName": model.get("name", ""), "ModelVersion": model.get("version", ""),
                "ModelId": model.get("model_id", ""), "ModelSHA256": model.get("sha256", ""),
                "SeriesInstanceUID": self._target["series"], "Device": result.get("device", ""),
                "Software": f"ctv_core {result.get('ctv_core_version', '')}"}
        node, segmentId = importMask(volumeNode, outcome.mask, segmentationNode, "CTV", terminology=self.terminology,
                                     tags=tags)
        tagPrediction(node, segmentId, volumeNode)  # the AI mask travels with the segment (scene.edit_record)
        uncertainty, uncertaintyNote = self._showUncertainty(volumeNode, outcome)
        seconds = dict(result.get("seconds", {}))
        seconds["total"] = time.perf_counter() - self._target["started"]
        return PredictionResult(segmentationNode=node, segmentId=segmentId, volumeCC=float(result.get("volume_cc", 0)),
                                device=str(result.get("device", "")), model=model,
                                warnings=list(result.get("warnings", [])), seconds=seconds,
                                options=dict(result.get("options", {})), uncertainty=uncertainty,
                                uncertaintyNote=uncertaintyNote)

    @staticmethod
    def _showUncertainty(volumeNode, outcome: Outcome) -> tuple[Uncertainty | None, str]:
        """The run's uncertainty map over the CT, or None and a sentence saying why not (the CTV is imported
        either way: a missing or malformed map costs the overlay, not the contour)."""
        if outcome.uncertainty is None:
            return None, ("No uncertainty map came with this prediction (the prediction process did not write one); "
                          "the CTV is complete, but its uncertainty cannot be shown.")
        try:
            grid = Grid.of_image(outcome.uncertainty)
            figures = readUncertaintyFigures(outcome.result, grid.size[2])
            node = showUncertainty(volumeNode, outcome.uncertainty)
        except CTVError as exc:
            return None, str(exc)
        return Uncertainty(node, figures, grid, LeastCertainTour(figures.leastCertainSlices)), ""

    def setUncertaintyVisible(self, visible: bool) -> None:
        """Show or hide the last run's uncertainty over the CT in every slice view (nothing without one)."""
        uncertainty = self.lastResult.uncertainty if self.lastResult is not None else None
        if uncertainty is not None and self.scene.GetNodeByID(uncertainty.node.GetID()) is not None:
            setUncertaintyVisible(self.scene, uncertainty.node, visible)

    def nextLeastCertainOffset(self, sliceToRas) -> tuple[float, str] | None:
        """The view offset (mm along the normal of the view whose SliceToRAS vtkMatrix4x4 is ``sliceToRas``)
        of the next least certain CT slice, and a line for the status label; None without figures."""
        uncertainty = self.lastResult.uncertainty if self.lastResult is not None else None
        if uncertainty is None or (k := uncertainty.tour.next()) is None:
            return None
        return sliceOffset(uncertainty.grid, k, sliceToRas), uncertainty.tour.position()

    def startProbe(self) -> DeviceProbe:
        """Ask the worker's Python what it offers (torch, CUDA, GPUs) without waiting; poll the probe."""
        return DeviceProbe(self.runnerFactory(), self.temporaryDirectory, self.python)

    def probeDevices(self, timeout: float = 120.0, pollInterval: float = 0.05) -> dict[str, Any]:
        """:meth:`startProbe`, waiting for the answer (at most ``timeout`` seconds)."""
        probe = self.startProbe()
        deadline = time.monotonic() + timeout
        try:
            while (answer := probe.poll()) is None and time.monotonic() < deadline:
                time.sleep(pollInterval)
        finally:
            probe.close()
        return answer or {"event": "error", "message": "The prediction process did not answer within "
                                                        f"{timeout:.0f} s; check the dependencies."}
