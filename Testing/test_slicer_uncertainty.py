"""The prediction's uncertainty in the Slicer module, on real MRML (slicer-core): the map on the CT's own voxels
(feet-first, oblique, slices stored in either order), the overlay and its switch, the jump to the least certain
slices, and a missing or malformed map or report becoming a sentence, not a traceback."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import SimpleITK as sitk
import slicer_qt
from conftest import axial_grid, write_linear_series
from slicer_support import load_dicom_volume, module_in_slicer
from test_slicer_prediction import DONE, FakeProcess, _box, _drive, _logic

from ctv_core import load_ct_series
from ctv_core.inference.worker import uncertainty_file

CASES = {"feet first": dict(position="FFS"), "oblique": dict(oblique_deg=20.0),
         "oblique, slices stored descending": dict(oblique_deg=-15.0, descending=True)}


def _figures(slices: int, least=(7, 2, 9)) -> dict:
    scores = [0.0] * slices
    for rank, k in enumerate(least):
        scores[k] = 10.0 - rank
    return {"signal": "margin", "slice_scores": scores, "slice_score_unit": "mm",
            "least_certain_slices": list(least), "seconds": 0.02}


def _map_of(image: sitk.Image, hot: int | None = None) -> sitk.Image:
    """A uint8 percent map on ``image``'s grid: 3 * k + 1 in slice k (every slice told apart), or 80 in slice
    ``hot`` only."""
    size = image.GetSize()
    array = np.zeros(size[::-1], np.uint8)
    if hot is None:
        array[:] = (3 * np.arange(size[2]) + 1).astype(np.uint8)[:, None, None]
    else:
        array[hot] = 80
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def _ct(mrml_scene, tmp_path, case: str):
    options = dict(CASES[case])
    descending = options.pop("descending", False)
    folder = write_linear_series(tmp_path / "ct", axial_grid(**options), options.get("position", "HFS"))
    return load_dicom_volume(mrml_scene, folder, descending=descending), load_ct_series(folder).image


def _matrix(node):
    import vtk

    from ctv_core.scene.patient_frame import matrixToArray

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrixToArray(matrix)


def _red(scene):
    import slicer

    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLApplicationLogic(scene._keep[0])
    logic.SetMRMLScene(scene)
    logic.AddSliceNode("Red").SetOrientation("Axial")
    return logic


@pytest.mark.parametrize("case", CASES)
def test_the_map_lies_on_the_cts_own_voxels(ctv_scene, mrml_scene, tmp_path, case):
    import slicer

    from ctv_core.scene.uncertainty import showUncertainty, uncertaintyNodeName

    volume, image = _ct(mrml_scene, tmp_path, case)
    node = showUncertainty(volume, _map_of(image))
    assert node.GetName() == uncertaintyNodeName(volume.GetName()) == "CT CTV uncertainty"
    np.testing.assert_array_equal(_matrix(node), _matrix(volume))
    assert node.GetImageData().GetDimensions() == volume.GetImageData().GetDimensions()
    # every voxel holds the map's value of the ctv_core slice at that RAS point: 3 * k + 1, k along the map's
    # (ascending) slice order, whichever order the node stores its slices in
    shown = slicer.util.arrayFromVolume(node)
    ct_k = np.arange(shown.shape[0])
    expected_k = ct_k[::-1] if CASES[case].get("descending") else ct_k
    np.testing.assert_array_equal(shown[:, 5, 7], 3 * expected_k + 1)
    assert showUncertainty(volume, _map_of(image)) is node  # a second run reuses the node


def test_a_map_of_another_image_is_refused(ctv_scene, mrml_scene, tmp_path):
    from ctv_core.errors import GridMismatchError
    from ctv_core.scene.uncertainty import showUncertainty

    volume, image = _ct(mrml_scene, tmp_path, "oblique")
    shifted = _map_of(image)
    shifted.SetOrigin(tuple(o + 0.4 for o in image.GetOrigin()))
    with pytest.raises(GridMismatchError, match="not on the voxels of the CT 'CT'.*Predict the CTV on this CT"):
        showUncertainty(volume, shifted)
    wrong = sitk.Cast(_map_of(image), sitk.sitkUInt16) * 2 + 200
    with pytest.raises(GridMismatchError, match="not percents 0-100"):
        showUncertainty(volume, wrong)
    assert mrml_scene.GetFirstNodeByName("CT CTV uncertainty") is None


def test_the_overlay_is_iron_thresholded_half_opaque_and_switches(ctv_scene, mrml_scene, tmp_path):
    from ctv_core.scene.uncertainty import (COLOR_NODE_ID, DISPLAY_THRESHOLD_PERCENT, isUncertaintyVisible,
                                            setUncertaintyVisible, showUncertainty)

    volume, image = _ct(mrml_scene, tmp_path, "feet first")
    red = _red(mrml_scene)
    composite = red.GetSliceCompositeNode()
    composite.SetBackgroundVolumeID(volume.GetID())
    node = showUncertainty(volume, _map_of(image))
    display = node.GetDisplayNode()
    assert display.GetColorNodeID() == COLOR_NODE_ID == mrml_scene.GetNodeByID(COLOR_NODE_ID).GetID()
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == DISPLAY_THRESHOLD_PERCENT == 5
    assert (display.GetWindow(), display.GetLevel()) == (100.0, 50.0) and not display.GetAutoWindowLevel()
    assert composite.GetForegroundVolumeID() == node.GetID() and composite.GetForegroundOpacity() == 0.5
    assert composite.GetBackgroundVolumeID() == volume.GetID()  # the CT stays underneath
    setUncertaintyVisible(mrml_scene, node, False)
    assert composite.GetForegroundVolumeID() is None and not isUncertaintyVisible(mrml_scene, node)
    other = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "a dose the user shows")
    composite.SetForegroundVolumeID(other.GetID())
    setUncertaintyVisible(mrml_scene, node, False)  # hiding the map leaves the user's own layer alone
    assert composite.GetForegroundVolumeID() == other.GetID()
    setUncertaintyVisible(mrml_scene, node, True)
    assert isUncertaintyVisible(mrml_scene, node)


@pytest.mark.parametrize("case", CASES)
def test_the_jump_shows_the_named_ct_slice_in_the_red_view(ctv_scene, mrml_scene, tmp_path, case):
    import slicer

    from ctv_core.geometry import Grid
    from ctv_core.scene.uncertainty import LeastCertainTour, showUncertainty, sliceOffset

    volume, image = _ct(mrml_scene, tmp_path, case)
    red = _red(mrml_scene)
    slice_node = red.GetSliceNode()
    tour = LeastCertainTour([9, 2])
    for expected in (9, 2, 9):  # least certain first, then round again
        k = tour.next()
        assert k == expected
        node = showUncertainty(volume, _map_of(image, hot=k), visible=False)
        red.SetSliceOffset(sliceOffset(Grid.of_image(image), k, slice_node.GetSliceToRAS()))
        # independently of sliceOffset: the centre of the node's hot slice (in its own storage order) lies in the
        # Red view's plane
        hot = int(np.flatnonzero(slicer.util.arrayFromVolume(node).any(axis=(1, 2)))[0])
        size = np.array(volume.GetImageData().GetDimensions(), dtype=float)
        centre = _matrix(node) @ np.array([(size[0] - 1) / 2, (size[1] - 1) / 2, hot, 1.0])
        plane = np.array([[slice_node.GetSliceToRAS().GetElement(r, c) for c in range(4)] for r in range(4)])
        normal = plane[:3, 2] / np.linalg.norm(plane[:3, 2])
        assert abs((centre[:3] - plane[:3, 3]) @ normal) < 1e-3
    assert LeastCertainTour([]).next() is None


@pytest.mark.parametrize("report, message", [
    ({}, "no uncertainty figures"),
    ({"uncertainty": [1, 2]}, "is a list, not an object"),
    ({"uncertainty": {**_figures(12), "signal": "entropy"}}, "signal 'entropy'"),
    ({"uncertainty": {**_figures(12), "slice_score_unit": "percent"}}, "unit 'percent'"),
    ({"uncertainty": {**_figures(12), "slice_scores": [1.0] * 11}}, "list of 12 non-negative numbers"),
    ({"uncertainty": {**_figures(12), "slice_scores": [float("nan")] * 12}}, "list of 12 non-negative"),
    ({"uncertainty": {**_figures(12), "least_certain_slices": [3, 12]}}, "outside 0-11"),
    ({"uncertainty": {**_figures(12), "least_certain_slices": [3, 3]}}, "one slice twice"),
    ({"uncertainty": {**_figures(12), "least_certain_slices": [True]}}, "not a list of CT slice indices"),
    ({"uncertainty": {**_figures(12), "seconds": "fast"}}, "'seconds' is 'fast'"),
])
def test_malformed_figures_are_refused_with_a_sentence(report, message):
    from ctv_core.scene.uncertainty_report import UncertaintyReportError, readUncertaintyFigures

    with pytest.raises(UncertaintyReportError, match=message) as caught:
        readUncertaintyFigures(report, 12)
    assert "predict the CTV again" in str(caught.value)


def test_good_figures_are_read():
    from ctv_core.scene.uncertainty_report import readUncertaintyFigures

    figures = readUncertaintyFigures({"uncertainty": _figures(12)}, 12)
    assert figures.leastCertainSlices == (7, 2, 9) and figures.sliceScores[7] == 10.0 and figures.unit == "mm"


class UncertainProcess(FakeProcess):
    """The scripted worker also writing the uncertainty map beside the mask (``write_map``) and its figures in the
    result (``figures``: a function of the slice count, or None for none)."""

    def __init__(self, *args, write_map=None, figures=_figures, **kwargs):
        super().__init__(*args, **kwargs)
        self.write_map, self.figures = write_map, figures

    def send(self, line):
        super().send(line)
        if line == "go" and self.write_map is not None:
            sitk.WriteImage(self.write_map(self.image_ready_at_go), str(uncertainty_file(self.request)))

    def result(self):
        result = super().result()
        if self.figures is not None and self.image_ready_at_go is not None:
            result["uncertainty"] = self.figures(self.image_ready_at_go.GetSize()[2])
        return result


@pytest.fixture
def phantom_volume(mrml_scene, pelvis_phantom):
    return load_dicom_volume(mrml_scene, pelvis_phantom.ct_dir)


def test_a_run_shows_its_map_and_asks_the_worker_for_it(ctv_scene, slicer_lib, mrml_scene, phantom_volume, tmp_path):
    process = UncertainProcess(DONE, write_mask=_box, write_map=lambda image: _map_of(image, hot=7))
    logic, seen = _logic(slicer_lib, mrml_scene, process, tmp_path)
    red = _red(mrml_scene)
    logic.start(phantom_volume)
    _drive(logic)
    assert process.request["uncertainty"] is True and seen["failed"] == []
    result = logic.lastResult
    assert result.uncertainty is not None and result.uncertaintyNote == ""
    assert result.uncertainty.node.GetName() == "CT CTV uncertainty"
    assert red.GetSliceCompositeNode().GetForegroundVolumeID() == result.uncertainty.node.GetID()
    offset, text = logic.nextLeastCertainOffset(red.GetSliceNode().GetSliceToRAS())
    assert text == "Least certain slice 1 of 3 (CT slice 8)"
    logic.setUncertaintyVisible(False)
    assert red.GetSliceCompositeNode().GetForegroundVolumeID() is None


@pytest.mark.parametrize("write_map, figures, note", [
    (None, _figures, "No uncertainty map came with this prediction"),
    (lambda image: _map_of(image), None, "no uncertainty figures"),
    (lambda image: _map_of(image), lambda n: {**_figures(n), "least_certain_slices": [n]}, "outside 0-"),
])
def test_a_missing_or_malformed_map_costs_the_overlay_not_the_ctv(ctv_scene, slicer_lib, mrml_scene, phantom_volume,
                                                                  tmp_path, write_map, figures, note):
    process = UncertainProcess(DONE, write_mask=_box, write_map=write_map, figures=figures)
    logic, seen = _logic(slicer_lib, mrml_scene, process, tmp_path)
    logic.start(phantom_volume)
    _drive(logic)
    assert seen["failed"] == [] and len(seen["finished"]) == 1
    result = logic.lastResult
    assert result.uncertainty is None and note in result.uncertaintyNote and result.uncertaintyNote in result.notes()
    assert logic.nextLeastCertainOffset(None) is None
    logic.setUncertaintyVisible(True)  # nothing to show: no error


@pytest.mark.parametrize("release", ("5.8", "5.12"))
def test_the_panel_switches_the_overlay_and_visits_the_least_certain_slices(release, mrml_scene, pelvis_phantom,
                                                                           tmp_path):
    from test_slicer_widget import _panel
    from test_slicer_widget import _drive as drive_widget

    with module_in_slicer(release, mrml_scene, tmp_path) as (module, app):
        volume = load_dicom_volume(mrml_scene, pelvis_phantom.ct_dir)
        panel, widget = _panel(module)
        widget.setup()
        assert not widget.ui.showUncertaintyCheckBox.enabled and not widget.ui.leastCertainButton.enabled
        widget.logic.runnerFactory = lambda: UncertainProcess(DONE, write_mask=_box,
                                                                  write_map=lambda image: _map_of(image, hot=7))
        widget.ui.applyButton.click()
        drive_widget(widget)
        assert app.dialogs == [] and "uncertainty" not in widget.ui.warningsLabel.text, repr(widget.ui.warningsLabel.text)
        assert widget.ui.showUncertaintyCheckBox.enabled and widget.ui.showUncertaintyCheckBox.checked
        node = widget._result.uncertainty.node
        red = app.layout.logics["Red"]
        assert red.GetSliceCompositeNode().GetForegroundVolumeID() == node.GetID()
        widget.ui.showUncertaintyCheckBox.checked = False
        assert red.GetSliceCompositeNode().GetForegroundVolumeID() is None
        widget.ui.showUncertaintyCheckBox.checked = True
        assert red.GetSliceCompositeNode().GetForegroundVolumeID() == node.GetID()
        offsets = []
        for _ in range(4):
            widget.ui.leastCertainButton.click()
            offsets.append(round(red.GetSliceOffset(), 3))
        ct = load_ct_series(pelvis_phantom.ct_dir).image
        spacing, origin_z = ct.GetSpacing()[2], ct.GetOrigin()[2]  # HFS axial: slice k at z = origin + k * spacing
        assert offsets == [round(origin_z + k * spacing, 3) for k in (7, 2, 9, 7)]
        assert widget.ui.reviewLabel.text == "Least certain slice 1 of 3 (CT slice 8)"
        widget.cleanup()


def test_the_real_process_shows_the_map_ctv_core_computes(ctv_scene, slicer_lib, mrml_scene, phantom_volume,
                                                         pelvis_phantom, tmp_path):
    import slicer

    from ctv_core import CTVPredictor

    logic = slicer_lib.CTVDelineationLogic(mrml_scene, temporaryDirectory=str(tmp_path))
    red = _red(mrml_scene)
    logic.run(phantom_volume, device="cpu")
    result = logic.lastResult
    assert result.uncertaintyNote == "" and result.uncertainty is not None
    direct = CTVPredictor(None, device="cpu").run(load_ct_series(pelvis_phantom.ct_dir).image).uncertainty
    shown = slicer.util.arrayFromVolume(result.uncertainty.node)
    expected = sitk.GetArrayFromImage(direct.map)
    assert expected.max() > 50 and np.array_equal(shown, expected)  # the phantom is loaded ascending, as ctv_core
    assert result.uncertainty.figures.leastCertainSlices == tuple(direct.least_certain_slices)
    assert red.GetSliceCompositeNode().GetForegroundVolumeID() == result.uncertainty.node.GetID()
    offset, _ = logic.nextLeastCertainOffset(red.GetSliceNode().GetSliceToRAS())
    k = direct.least_certain_slices[0]
    assert offset == pytest.approx(phantom_volume.GetOrigin()[2] + k * phantom_volume.GetSpacing()[2])
    assert not list(tmp_path.iterdir())  # the job's folder, map included, is gone
