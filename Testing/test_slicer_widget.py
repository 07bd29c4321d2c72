"""The module's panel through its whole life, as Slicer 5.8, 5.10 and 5.12 run it: the real .ui file,
the real widget code, a real MRML scene, and an application held to each release's API
(``slicer_app``: a name Slicer lacks raises AttributeError, a call it would refuse TypeError)."""

from __future__ import annotations

import sys
import time

import pytest
import vtk
import slicer_qt
from slicer_support import load_dicom_volume, module_in_slicer
from test_slicer_prediction import DONE, FakeProcess, _box

RELEASES = ("5.8", "5.10", "5.12")
#: Every control the user acts on: each must be wired exactly once.
CONTROLS = {"inputVolumeSelector", "outputSegmentationSelector", "modelPathLineEdit", "bundledModelButton",
            "deviceComboBox", "engineComboBox", "passesSpinBox", "flipsCheckBox", "postprocessingCheckBox", "applyButton",
            "show3DButton", "editButton", "previousSliceButton", "nextSliceButton", "playButton", "exportButton",
            "showUncertaintyCheckBox", "leastCertainButton",
            "installDependenciesButton"}


def _wiring(widget) -> dict[str, int]:
    return {name: len(getattr(widget.ui, name).connections) for name in vars(widget.ui)
            if getattr(widget.ui, name).connections}


def _panel(module):
    panel = slicer_qt.Widget("qSlicerScriptedLoadableModuleWidget", "CTVDelineation")
    return panel, module.CTVDelineationWidget(panel)


def _drive(widget, limit=20.0):
    deadline = time.monotonic() + limit
    while widget.pollTimer.isActive():
        assert time.monotonic() < deadline, "the run did not end"
        widget.pollTimer.fire()
        time.sleep(0.01)


@pytest.fixture
def ct_series(pelvis_phantom):
    return pelvis_phantom.ct_dir


@pytest.mark.parametrize("release", RELEASES)
def test_the_panels_whole_life(release, mrml_scene, ct_series, tmp_path):
    with module_in_slicer(release, mrml_scene, tmp_path) as (module, app):
        panel, widget = _panel(module)
        widget.setup()
        assert app.dialogs == []
        assert set(_wiring(widget)) == CONTROLS and set(_wiring(widget).values()) == {1}
        assert not widget.ui.applyButton.enabled  # no CT in the scene
        volume = load_dicom_volume(mrml_scene, ct_series)
        widget.ui.inputVolumeSelector.setCurrentNode(volume)
        assert widget._parameterNode.inputVolume.GetID() == volume.GetID()
        assert widget.ui.applyButton.enabled and widget.ui.applyButton.text == "Apply"
        # the CPU runs OpenVINO: PyTorch is a dependency only for a GPU or the PyTorch engine
        assert not widget.dependencies.logic.withTorch
        assert "torch" not in {r.name for r in widget.dependencies.logic.requirements}
        widget.ui.deviceComboBox.setCurrentText("cuda")
        assert "torch" in {r.name for r in widget.dependencies.logic.requirements}  # installed here: nothing to do
        widget.ui.deviceComboBox.setCurrentText("cpu")
        assert not widget.dependencies.logic.withTorch
        widget.ui.engineComboBox.setCurrentText("torch")
        assert widget._parameterNode.engine == "torch" and widget.dependencies.logic.withTorch
        widget.ui.engineComboBox.setCurrentText("auto")
        widget.ui.passesSpinBox.value = 3
        assert (widget._parameterNode.device, widget._parameterNode.refinementPasses) == ("cpu", 3)
        for _ in range(3):  # the module shown and hidden again: nothing piles up
            panel.isEntered = True
            widget.enter()
            panel.isEntered = False
            widget.exit()
        assert set(_wiring(widget).values()) == {1}
        assert widget._parameterNode._guiObserverCount == 1
        panel.isEntered = True
        mrml_scene.Clear(0)  # File > Close scene while the module is shown
        assert set(_wiring(widget).values()) == {1}
        assert not widget.ui.applyButton.enabled
        volume = load_dicom_volume(mrml_scene, ct_series)
        widget.ui.inputVolumeSelector.setCurrentNode(volume)
        assert widget.ui.applyButton.enabled
        widget.cleanup()
        assert _wiring(widget).get("deviceComboBox") is None  # the parameter node is unbound
        assert not widget.pollTimer.isActive() and widget.probe is None


@pytest.mark.parametrize("release", RELEASES)
def test_apply_finishes_exports_edits_shows_and_plays_across_a_deleted_segment(release, mrml_scene, ct_series,
                                                                               tmp_path):
    with module_in_slicer(release, mrml_scene, tmp_path) as (module, app):
        volume = load_dicom_volume(mrml_scene, ct_series)
        panel, widget = _panel(module)
        widget.setup()
        widget.logic.runnerFactory = lambda: FakeProcess(DONE, write_mask=_box)
        widget.ui.applyButton.click()
        assert widget.ui.applyButton.text == "Cancel"
        _drive(widget)
        assert app.dialogs == []
        assert widget.ui.progressBar.value == 100 and widget.ui.applyButton.text == "Apply"
        segmentation = widget._parameterNode.outputSegmentation
        assert segmentation is not None and widget.ui.outputSegmentationSelector.currentNode() is segmentation
        assert "No GPU" in widget.ui.warningsLabel.text
        widget.ui.show3DButton.click()
        assert app.layout.focalPointResets == 1 and segmentation.GetSegmentation().ContainsRepresentation(
            "Closed surface")
        widget.ui.editButton.click()
        assert app.selected_module == "SegmentEditor"
        assert app.segment_editor.segmentationNode is segmentation
        assert app.segment_editor.sourceVolumeNode is volume
        import numpy as np
        import slicer
        from slicer_app import DicomDatabase

        bladder = np.zeros(slicer.util.arrayFromVolume(volume).shape, np.uint8)  # drawn before the export
        bladder[20:24, 120:140, 110:130] = 1
        segmentation.GetSegmentation().AddEmptySegment("bladder", "bladder")
        slicer.util.updateSegmentBinaryLabelmapFromArray(bladder, segmentation, "bladder", volume)

        slicer.dicomDatabase = DicomDatabase(ct_series)
        slicer_qt.QFileDialog.answers[:] = [str(tmp_path / "rtstruct.dcm")]
        widget.ui.exportButton.click()
        assert [kind for kind, _ in app.dialogs] == ["info"] and (tmp_path / "rtstruct.dcm").is_file()
        import pydicom

        written = pydicom.dcmread(tmp_path / "rtstruct.dcm")
        assert [roi.ROIName for roi in written.StructureSetROISequence] == ["CTV", "bladder"]
        ctv, drawn = written.StructureSetROISequence  # the CTV as predicted names its model; the bladder, drawn, not
        assert ctv.ROIGenerationAlgorithm == "AUTOMATIC" and drawn.ROIGenerationAlgorithm == ""
        assert ctv.ROIDerivationAlgorithmIdentificationSequence[0].AlgorithmName == "fake"
        from ctv_core.evaluation.edits import read_edit_record

        record = read_edit_record(tmp_path / "rtstruct.ai-edits.json")  # what was changed: nothing
        assert record["door"] == "slicer-export" and record["figures"]["unchanged"] is True
        assert "rtstruct.ai-edits.json" in app.dialogs[0][1]
        widget.ui.playButton.click()
        widget.reviewTimer.fire()
        assert "/" in widget.ui.reviewLabel.text or "slice" in widget.ui.reviewLabel.text.lower()
        segmentation.GetSegmentation().RemoveSegment(widget._result.segmentId)
        widget.reviewTimer.fire()  # stops with a sentence, no exception
        assert not widget.ui.playButton.checked and not widget.reviewTimer.isActive()
        assert "no longer" in widget.ui.reviewLabel.text
        widget.cleanup()


@pytest.mark.parametrize("release", RELEASES)
def test_a_failing_and_a_cancelled_prediction(release, mrml_scene, ct_series, tmp_path):
    with module_in_slicer(release, mrml_scene, tmp_path) as (module, app):
        load_dicom_volume(mrml_scene, ct_series)
        panel, widget = _panel(module)
        widget.setup()
        nodes = mrml_scene.GetNumberOfNodes()
        widget.logic.runnerFactory = lambda: FakeProcess(DONE[:2], exit_code=3)
        widget.ui.applyButton.click()
        _drive(widget)
        assert [kind for kind, _ in app.dialogs] == ["error"] and widget.ui.statusLabel.text == "Failed."
        widget.logic.runnerFactory = lambda: FakeProcess(DONE[:2], hangs=True)
        widget.ui.applyButton.click()
        widget.pollTimer.fire()
        widget.ui.applyButton.click()  # Cancel
        _drive(widget)
        assert len(app.dialogs) == 1 and widget.ui.applyButton.text == "Apply"
        assert mrml_scene.GetNumberOfNodes() == nodes
        widget.cleanup()


def test_the_terminology_loads_at_startup_no_red_view_stops_playback_and_reload_reloads_logic(mrml_scene, tmp_path):
    with module_in_slicer("5.8", mrml_scene, tmp_path) as (module, app):
        from slicer_app import ModuleParent

        module.CTVDelineation(ModuleParent(app.module_file))
        import slicer

        names = vtk.vtkStringArray()
        app.terminologies.GetLoadedTerminologyNames(names)
        assert names.GetNumberOfValues() == 0  # not before the application has started
        slicer.app.completeStartup()
        names = vtk.vtkStringArray()
        app.terminologies.GetLoadedTerminologyNames(names)
        assert "CTVDelineation - Radiotherapy targets" in {names.GetValue(i) for i in range(names.GetNumberOfValues())}
        panel, widget = _panel(module)
        widget.setup()
        app.layout.logics.clear()
        widget.onStepSlice(1)
        assert "No Red slice view" in widget.ui.reviewLabel.text
        reloaded = ("CTVDelineationLib", "ctv_core.scene")
        saved = {n: sys.modules[n] for n in sys.modules if n.startswith(reloaded)}
        assert "ctv_core.scene.conversion" in saved and "CTVDelineationLib.CTVDelineationLogic" in saved
        try:
            widget.onReload()
            assert app.reloaded == ["CTVDelineation"]
            assert not [n for n in sys.modules if n.startswith(reloaded)]
            assert "ctv_core.errors" in sys.modules  # the rest of ctv_core stays: its error types keep their identity
        finally:
            sys.modules.update(saved)
        widget.cleanup()


def test_a_name_slicer_lacks_is_refused(mrml_scene, tmp_path):
    with module_in_slicer("5.8", mrml_scene, tmp_path) as (module, app):
        import slicer

        with pytest.raises(AttributeError):
            module.CTVDelineationWidget.getParameterNode  # noqa: B018 - only Logic has it
        with pytest.raises(AttributeError):
            slicer.packaging  # noqa: B018 - 5.12 on
        with pytest.raises(TypeError):
            slicer.util.pip_install("x", blocking=False)  # 5.8: pip_install(requirements) only
        with pytest.raises(AttributeError):
            slicer_qt.Widget("QPushButton", "b").currentPath  # noqa: B018
        with pytest.raises(ValueError):
            slicer_qt.Widget("QPushButton", "b").connect("currentPathChanged(QString)", print)


@pytest.mark.parametrize("release", RELEASES)
def test_install_dependencies_asks_runs_in_a_process_and_says_once_how_it_went(release, mrml_scene, tmp_path,
                                                                                slicer_lib):
    from packaging.requirements import Requirement
    from test_slicer_dependencies import fake_python

    with module_in_slicer(release, mrml_scene, tmp_path) as (module, app):
        panel, widget = _panel(module)
        widget.setup()
        installed = {"numpy": "1.26.4"}
        python, log = fake_python(tmp_path)
        widget.dependencies.logic = slicer_lib.DependencyLogic(
            [Requirement("safetensors>=0.4")], versionOf=installed.get, distributions=lambda: dict(installed),
            python=python)
        widget.dependencies.show()
        assert widget.ui.installDependenciesButton.enabled and not widget.ui.dependenciesCollapsibleButton.collapsed
        app.confirm_answers.append(False)
        widget.ui.installDependenciesButton.click()  # declined: nothing runs
        assert not log.exists() and widget.dependencies.installation is None
        app.confirm_answers.append(True)
        widget.ui.installDependenciesButton.click()
        assert widget.ui.installDependenciesButton.text == "Cancel installation"
        installed["safetensors"] = "0.4.5"  # what the real pip will have installed when the process ends
        deadline = time.monotonic() + 30
        while widget.dependencies.timer.isActive():
            assert time.monotonic() < deadline
            widget.dependencies.timer.fire()
            time.sleep(0.02)
        assert [kind for kind, _ in app.dialogs] == ["confirm", "confirm", "info"]
        assert "safetensors>=0.4" in app.dialogs[1][1] and app.dialogs[2][1] == "Dependencies installed."
        assert not widget.ui.installDependenciesButton.enabled and app.pip_calls == []
        widget.cleanup()
