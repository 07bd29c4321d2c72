"""CTV Delineation: one click from the planning CT to an editable CTV segment, and out as RTSTRUCT.

This file is the module's shell (metadata, parameter node, widget, self-test); the work is in
``Logic/`` (loaded under the package name ``CTVDelineationLib``, see :func:`loadLogicPackage`)
over ctv_core, which ships with the module (its ``ctv_core.scene`` holds the MRML conversions,
the RTSTRUCT export and the terminology, shared with the review station).
"""

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from CTVDelineationDependencies import DependenciesPanel  # noqa: E402 - the module folder is on sys.path
from CTVDelineationUncertainty import UncertaintyPanel, redSliceLogic  # noqa: E402 - the module folder is on sys.path

# Slicer looks the self-test up as ``CTVDelineationTest`` in this module (Reload & Test).
from CTVDelineationSelfTest import CTVDelineationTest  # noqa: E402,F401 - the module folder is on sys.path

MODULE_DIR = Path(__file__).resolve().parent
#: The name the ``Logic/`` folder is imported under: Slicer shares one ``sys.path`` among all
#: module folders, so a bare ``Logic`` could be another extension's.
LOGIC_PACKAGE = "CTVDelineationLib"
#: What Developer Reload imports anew: the module's logic and the part of ctv_core it is developed with.
RELOADED_PACKAGES = (LOGIC_PACKAGE, "ctv_core.scene")


def _loadPackage(name: str, folder: Path):
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    try:
        spec.loader.exec_module(package)
    except BaseException:
        del sys.modules[name]
        raise
    return package


def loadCtvCore() -> None:
    """Import the ctv_core shipped with the module, unless one is imported already: the copy installed with the
    extension (next to this file) or, in a source checkout added with "Add module path", the repository's."""
    if "ctv_core" not in sys.modules:
        for folder in (MODULE_DIR / "ctv_core", MODULE_DIR.parent / "ctv_core"):
            if (folder / "__init__.py").is_file():
                _loadPackage("ctv_core", folder)
                break


def loadLogicPackage():
    """The ``Logic/`` package as ``CTVDelineationLib``, with the ctv_core shipped beside the module."""
    if LOGIC_PACKAGE in sys.modules:
        return sys.modules[LOGIC_PACKAGE]
    loadCtvCore()
    return _loadPackage(LOGIC_PACKAGE, MODULE_DIR / "Logic")


def registerTerminology() -> None:
    """Load ctv_core's terminology file (the CTV's coded type) into Slicer's terminologies logic."""
    loadCtvCore()
    from ctv_core.scene.terminology import TERMINOLOGY_FILE

    slicer.modules.terminologies.logic().LoadTerminologyFromFile(str(TERMINOLOGY_FILE))


class CTVDelineation(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CTV Delineation"
        self.parent.categories = ["Radiotherapy"]
        self.parent.dependencies = ["Segmentations", "Terminologies"]
        self.parent.contributors = ["CTVDelineation developers"]
        self.parent.helpText = (
            "Automatic delineation of the clinical target volume (CTV) for cervical cancer radiotherapy on the "
            "planning CT. Choose the CT (loaded from DICOM), press Apply (press again to cancel), review the CTV "
            "slice by slice (Alt+Page Up / Alt+Page Down, Alt+P to play), correct it in the Segment Editor and "
            "export an RTSTRUCT that references the CT's own DICOM series.<br><b>Not for clinical use without local "
            "validation</b>: the bundled model is a demonstration trained on synthetic phantoms; validate a model "
            "trained on your own patients before any clinical use, and review every contour.")
        self.parent.acknowledgementText = (
            "The method follows a 2019 thesis on CTV auto-delineation for cervical cancer radiotherapy: a 3D U-Net "
            "with residual blocks, squeeze-and-excitation, ELU and batch normalisation, a recurrent refinement pass, "
            "BCE + Dice loss (3-fold cross-validated Dice 0.763 on 340 CTs), and a noisy-label training scheme with a "
            "Quality Awareness Module and an Overfitting Control Module. Built on 3D Slicer, PyTorch, SimpleITK and "
            "pydicom.")
        # A restored scene's CTV resolves its terminology before the module is opened: the module's
        # terminology file is loaded once the application has started (its modules' logics exist then).
        slicer.app.connect("startupCompleted()", registerTerminology)


@parameterNodeWrapper
class CTVDelineationParameterNode:
    """The module's settings, kept in the scene (saved with it).

    refinementPasses 0 means the model's own count.
    """

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    outputSegmentation: slicer.vtkMRMLSegmentationNode
    modelFolder: str = ""
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    engine: Annotated[str, Choice(["auto", "openvino", "torch"])] = "auto"
    refinementPasses: Annotated[int, WithinRange(0, 8)] = 0
    testTimeFlips: bool = False
    postprocessing: bool = True


class ParameterNodeLogic(ScriptedLoadableModuleLogic):
    """The module's parameter node: Slicer's singleton ``vtkMRMLScriptedModuleNode`` tagged with the
    module's name (``getParameterNode``). The module's work is in ``Logic/`` (``CTVDelineationLib``)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.moduleName = "CTVDelineation"


class CTVDelineationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: wires the .ui to the logic's calls and signals, nothing more."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.parameterLogic = ParameterNodeLogic()
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._result = None
        self._player = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        lib = loadLogicPackage()
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CTVDelineation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = lib.CTVDelineationLogic(slicer.mrmlScene, terminologyLogic=slicer.modules.terminologies.logic(),
                                             temporaryDirectory=slicer.app.temporaryPath)
        self.dependencies = DependenciesPanel(self.ui, lib.DependencyLogic())
        self.uncertainty = UncertaintyPanel(self.ui, self.logic)
        self.logic.progress.connect(self.onProgress)
        self.logic.finished.connect(self.onFinished)
        self.logic.failed.connect(self.onFailed)
        self.logic.cancelled.connect(self.onCancelled)
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(100)
        self.pollTimer.connect("timeout()", self.onPoll)
        self.reviewTimer = qt.QTimer()
        self.reviewTimer.setInterval(lib.AUTOPLAY_INTERVAL_MS)
        self.reviewTimer.connect("timeout()", lambda: self.onStepSlice(1))
        self.probe = None

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.bundledModelButton.connect("clicked(bool)",
                                           lambda checked: self.ui.modelPathLineEdit.setCurrentPath(""))
        self.ui.show3DButton.connect("toggled(bool)", self.onShow3D)
        self.ui.editButton.connect("clicked(bool)", self.onEditInSegmentEditor)
        self.ui.exportButton.connect("clicked(bool)", self.onExportRTStruct)
        self.ui.previousSliceButton.connect("clicked(bool)", lambda checked: self.onStepSlice(-1))
        self.ui.nextSliceButton.connect("clicked(bool)", lambda checked: self.onStepSlice(1))
        self.ui.playButton.connect("toggled(bool)", self.onPlayToggled)
        self.initializeParameterNode()
        self.onModelPathChanged(self._parameterNode.modelFolder if self._parameterNode else "")
        self.dependencies.show()

    def onReload(self):
        """Developer Reload: the ``Logic/`` package (CTVDelineationLib and its modules) and ``ctv_core.scene``
        (the MRML side of ctv_core) are imported anew too."""
        for name in [n for n in sys.modules if any(n == p or n.startswith(p + ".") for p in RELOADED_PACKAGES)]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self):
        if self.logic is not None and self.logic.isRunning:
            self.logic.cancel()
        if self.probe is not None:
            self.probe.close()
            self.probe = None
        self.dependencies.cleanup()
        self.pollTimer.stop()
        self.reviewTimer.stop()
        self.setParameterNode(None)
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        if self.probe is None and not self.ui.deviceStatusLabel.text:
            self.probe = self.logic.startProbe()
            self.pollTimer.start()

    def exit(self):
        # The controls stay bound to the parameter node while the module is hidden: a binding is made
        # once per parameter node (Slicer 5.8's connectGui returns no tag to undo it with).
        self.ui.playButton.checked = False

    def onSceneStartClose(self, caller, event):
        if self.logic.isRunning:
            self.logic.cancel()
        self.ui.playButton.checked = False
        self._result = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        node = self.parameterLogic.getParameterNode()
        if self._parameterNode is None or self._parameterNode.parameterNode is not node:
            self.setParameterNode(CTVDelineationParameterNode(node))
        if not self._parameterNode.inputVolume:
            volume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if volume:
                self._parameterNode.inputVolume = volume

    def _parameterWidgets(self):
        """The .ui's controls bound to a parameter (their SlicerParameterName property) by name."""
        widgets = (getattr(self.ui, name) for name in vars(self.ui))
        return {w.property("SlicerParameterName"): w for w in widgets if w.property("SlicerParameterName")}

    def setParameterNode(self, parameterNode):
        """Bind the controls to ``parameterNode`` (a ``CTVDelineationParameterNode`` or None), unbinding the
        previous one. ``connectParametersToGui`` returns its tag on every supported release (``connectGui``
        returns None on 5.8), so the binding can always be undone."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode.parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(self._parameterWidgets())
            self.addObserver(self._parameterNode.parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.ui.modelPathLineEdit.currentPath = self._parameterNode.modelFolder
        self._checkCanApply()

    def _syncDependencies(self) -> None:
        p, panel = self._parameterNode, getattr(self, "dependencies", None)
        if panel is not None:
            panel.wantTorch(bool(p and (p.device == "cuda" or p.engine == "torch")), loadLogicPackage().DependencyLogic)

    def _checkCanApply(self, caller=None, event=None):
        self._syncDependencies()
        running = self.logic is not None and self.logic.isRunning
        hasInput = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.enabled = running or hasInput
        self.ui.applyButton.text = "Cancel" if running else "Apply"
        done = self._result is not None and not running
        for button in (self.ui.show3DButton, self.ui.editButton, self.ui.exportButton, self.ui.previousSliceButton,
                       self.ui.nextSliceButton, self.ui.playButton):
            button.enabled = done
        self.uncertainty.update(self._result if done else None)

    # --- errors: shown as a message, never a traceback -------------------------------------------

    def _showError(self, error: Exception) -> None:
        if not isinstance(error, loadLogicPackage().CTVError):
            logging.exception("CTV Delineation: unexpected error")
        slicer.util.errorDisplay(loadLogicPackage().userMessage(error), windowTitle="CTV Delineation")

    # --- prediction -------------------------------------------------------------------------------

    def onApplyButton(self, checked=False):
        if self.logic.isRunning:
            self.logic.cancel()
            return
        lib = loadLogicPackage()
        p = self._parameterNode
        options = lib.PredictionOptions(model=p.modelFolder or None, device=p.device, engine=p.engine,
                                        passes=p.refinementPasses or None, testTimeFlips=p.testTimeFlips,
                                        postprocessing=p.postprocessing)
        self.ui.playButton.checked = False
        self.ui.warningsLabel.text = ""
        try:
            self.logic.start(p.inputVolume, p.outputSegmentation, options)
        except Exception as error:  # noqa: BLE001 - shown to the user by _showError
            self._showError(error)
            return
        self.pollTimer.start()
        self._checkCanApply()

    def onPoll(self):
        if self.probe is not None and (answer := self.probe.poll()) is not None:
            self.probe.close()
            self.probe = None
            self.showDevices(answer)
        if not self.logic.poll() and self.probe is None:
            self.pollTimer.stop()

    def onProgress(self, percent, message):
        self.ui.progressBar.value = percent
        self.ui.statusLabel.text = message

    def onFinished(self, result):
        self._result = result
        self._parameterNode.outputSegmentation = result.segmentationNode
        self.ui.warningsLabel.text = "\n".join(f"\u26a0 {note}" for note in result.notes())
        self._player = None
        self._checkCanApply()

    def onFailed(self, message):
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "Failed."
        self._checkCanApply()
        slicer.util.errorDisplay(message, windowTitle="CTV Delineation")

    def onCancelled(self, message):
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = message
        self._checkCanApply()

    # --- model and device -------------------------------------------------------------------------

    def onModelPathChanged(self, path):
        lib = loadLogicPackage()
        if self._parameterNode:
            self._parameterNode.modelFolder = path or ""
        try:
            self.ui.modelInfoLabel.text = lib.describeModel(path or None).text()
        except Exception as error:  # noqa: BLE001 - shown in the model box
            self.ui.modelInfoLabel.text = f"\u26a0 {error}"

    def showDevices(self, answer):
        self.ui.deviceStatusLabel.text = loadLogicPackage().deviceStatus(answer)

    # --- review and export -------------------------------------------------------------------------

    def onShow3D(self, show):
        segmentation = self._parameterNode.outputSegmentation
        if segmentation is None:
            return
        if show:
            segmentation.CreateClosedSurfaceRepresentation()
            slicer.app.layoutManager().threeDWidget(0).threeDView().resetFocalPoint()
        else:
            segmentation.RemoveClosedSurfaceRepresentation()

    def onEditInSegmentEditor(self, checked=False):
        segmentation, volume = self._parameterNode.outputSegmentation, self._parameterNode.inputVolume
        self.ui.playButton.checked = False
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.util.getModuleWidget("SegmentEditor").editor
        editor.setSegmentationNode(segmentation)
        (editor.setSourceVolumeNode if hasattr(editor, "setSourceVolumeNode") else editor.setMasterVolumeNode)(volume)

    def onExportRTStruct(self, checked=False):
        lib = loadLogicPackage()
        segmentation, volume = self._parameterNode.outputSegmentation, self._parameterNode.inputVolume
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "Export RTSTRUCT", "rtstruct.dcm",
                                              "DICOM (*.dcm)")
        if not path:
            return
        ctFolder = None
        if not lib.instanceUIDs(volume):
            ctFolder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(),
                                                           "Folder of the CT's DICOM files (the CT was not loaded "
                                                           "through the DICOM module)")
            if not ctFolder:
                return
        try:
            with slicer.util.WaitCursor():
                written = self.logic.export_rtstruct(segmentation, volume, path, ct_folder=ctFolder)
        except Exception as error:  # noqa: BLE001 - shown to the user by _showError
            self._showError(error)
            return
        slicer.util.infoDisplay(written.summary(), windowTitle="CTV Delineation")

    def _stopReview(self, message: str) -> None:
        self.ui.playButton.checked = False
        self._player = None
        self.ui.reviewLabel.text = message

    def onStepSlice(self, direction):
        """One step through the CTV's slices in the Red view; playback stops, with a sentence, when the
        segment is gone or there is no Red view (never an error on every timer tick)."""
        lib = loadLogicPackage()
        sliceLogic = redSliceLogic()
        if sliceLogic is None:
            self._stopReview("No Red slice view in this layout: choose a layout with one to step through the CTV.")
            return
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode else None
        if (self._result is None or segmentation is None
                or segmentation.GetSegmentation().GetSegment(self._result.segmentId) is None):
            self._stopReview("The CTV segment is no longer in the scene.")
            return
        if self._player is None:
            self._player = lib.ReviewPlayer.forSegment(
                segmentation, self._result.segmentId, self._parameterNode.inputVolume,
                sliceLogic.GetSliceNode().GetSliceToRAS(), sliceLogic.GetSliceOffset())
        offset = self._player.step(direction)
        if offset is None:
            self._stopReview("The CTV is empty.")
            return
        sliceLogic.SetSliceOffset(offset)
        self.ui.reviewLabel.text = self._player.position()

    def onPlayToggled(self, playing):
        if playing:
            self._player = None  # the segment may have been edited since: recompute its slices
            self.reviewTimer.start()
        else:
            self.reviewTimer.stop()
