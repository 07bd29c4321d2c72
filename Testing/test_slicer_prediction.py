"""Apply in the Slicer module: the real prediction process with the bundled model, and every way a run
can go wrong, played by a fake process (SlicerNNUnet's seam) on a real MRML scene."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from slicer_support import load_dicom_volume, require_slicer

from ctv_core import CTVPredictor, PredictionCancelled, load_ct_series
from ctv_core.model.package import load_model_package


class FakeProcess:
    """A ``ProcessRunner`` that plays a scripted worker: ``lines`` once the caller says go (``{mask}`` in a
    line is replaced by the request's mask path; ``write_mask`` writes a mask and result as the worker would)."""

    def __init__(self, lines=(), exit_code=0, write_mask=None, start_error=None, hangs=False, ignores_terminate=False):
        self.lines, self.exit_code, self.write_mask = list(lines), exit_code, write_mask
        self.start_error, self.hangs, self.ignores_terminate = start_error, hangs, ignores_terminate
        self.sent, self.command, self.request = [], None, None
        self.terminated = self.killed = False
        self.image_ready_at_go = None

    def start(self, command):
        if self.start_error:
            raise self.start_error
        self.command = command
        self.request = json.loads(Path(command[-1]).read_text())

    def send(self, line):
        self.sent.append(line)
        if line == "go":
            self.image_ready_at_go = sitk.ReadImage(self.request["image"])
            if self.write_mask is not None:
                sitk.WriteImage(self.write_mask(self.image_ready_at_go), self.request["mask"])
                Path(self.request["result"]).write_text(json.dumps(self.result()))

    def result(self):
        return {"protocol": 1, "ctv_core_version": "test", "mask": self.request["mask"], "volume_cc": 12.5,
                "warnings": ["The CTV (12 cc) is much smaller than those the model was trained on"],
                "device": "cpu", "seconds": {"network": 0.1}, "options": {"passes": 2},
                "model": {"name": "fake", "version": "1", "sha256": "ab" * 32, "model_id": "fake 1", "path": "/m"}}

    def readLines(self):
        if "go" not in self.sent and "cancel" not in self.sent:
            return []
        if "cancel" in self.sent and getattr(self, "later", None):  # progress still printed after the cancel
            self.lines, self.later = self.lines + self.later, None
        lines, self.lines = self.lines, []
        return [line.replace("{result}", json.dumps(self.result())) for line in lines]

    def exitCode(self):
        if self.killed or (self.terminated and not self.ignores_terminate):
            return -9 if self.killed else -15
        if self.hangs or self.lines or ("go" not in self.sent and "cancel" not in self.sent):
            return None
        return self.exit_code

    def terminate(self):
        self.terminated = True

    def kill(self):
        self.killed = True

    def errorOutput(self):
        return "simulated stderr"


DONE = ['{"event": "ready", "device": "cpu", "model": {}}',
        '{"event": "progress", "stage": "preprocessing", "fraction": 0.0}',
        "a library printing something that is not protocol",
        '{"event": "progress", "stage": "network", "fraction": 0.5}',
        '{"event": "progress", "stage": "network", "fraction": 1.0}',
        '{"event": "done", "report": {result}}']


def _box(image):
    array = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    array[10:20, 100:140, 90:150] = 1
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(image)
    return mask


@pytest.fixture
def ct_volume(mrml_scene, pelvis_phantom):
    return load_dicom_volume(mrml_scene, pelvis_phantom.ct_dir)


def _logic(slicer_lib, scene, process, tmp_path):
    logic = slicer_lib.CTVDelineationLogic(scene, runnerFactory=lambda: process, temporaryDirectory=str(tmp_path))
    seen = {"progress": [], "finished": [], "failed": [], "cancelled": []}
    for name in seen:
        getattr(logic, name).connect(lambda *args, name=name: seen[name].append(args))
    return logic, seen


def _drive(logic, limit=10.0):
    deadline = time.monotonic() + limit
    while logic.poll():
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.01)


def _nodes(scene):
    return sorted(scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes()))


def test_a_run_reports_progress_and_adds_the_ctv_with_its_provenance(ctv_scene, slicer_lib, mrml_scene, ct_volume,
                                                                      tmp_path):
    process = FakeProcess(DONE, write_mask=_box)
    logic, seen = _logic(slicer_lib, mrml_scene, process, tmp_path)
    logic.start(ct_volume, options=slicer_lib.PredictionOptions(device="cpu", passes=1, testTimeFlips=True,
                                                                postprocessing=False))
    assert logic.isRunning and process.request["passes"] == 1 and process.request["test_time_flips"] is True
    assert process.request["postprocessing"] is False and process.request["model"] is None
    _drive(logic)
    percents = [p for p, _ in seen["progress"]]
    assert percents == sorted(percents) and percents[-1] == 100 and len(percents) >= 7
    assert not seen["failed"] and len(seen["finished"]) == 1
    result = seen["finished"][0][0]
    assert result.warnings == process.result()["warnings"] and not result.usedGpu
    # the image handed over was the CT, complete before "go"
    image = process.image_ready_at_go
    assert np.array_equal(sitk.GetArrayFromImage(image),
                          sitk.GetArrayFromImage(ctv_scene.conversion.volumeToImage(ct_volume)))
    segment = result.segmentationNode.GetSegmentation().GetSegment(result.segmentId)
    tag = ctv_scene.conversion.segmentTag
    assert (tag(segment, "ModelName"), tag(segment, "ModelVersion"), tag(segment, "ModelSHA256")) == ("fake", "1",
                                                                                                      "ab" * 32)
    assert tag(segment, "SeriesInstanceUID") and logic.terminology.isCTV(segment)
    assert not list(tmp_path.iterdir())  # the job's folder is gone


@pytest.mark.parametrize("lines,exit_code,write,message", [
    (['{"event": "error", "kind": "DeviceError", "message": "CUDA is not available; use --device cpu"}'], 2, None,
     "CUDA is not available"),
    (['{"event": "ready"}'], -9, None, "ran out of memory"),
    (["Segmentation fault (core dumped)"], 139, None, "crashed"),
    (['{"event": "done", "report": {}}'], 0, None, "result cannot be read"),
    (DONE, 1, _box, "exit status 1"),
    (['{"event": "ready"}', '{"event": "finished", "result": {}}'], 0, None, "sent an unknown message"),
    (['{"event": "progress", "stage": "network", "fraction": 0.5'], 0, None, "sent a malformed message"),
    (['{"event": "ready"}'], 42, None, "exit status 42, which a ctv prediction process never gives"),
])
def test_failures_reach_the_user_as_a_message_and_leave_the_scene_unchanged(
        slicer_lib, mrml_scene, ct_volume, tmp_path, lines, exit_code, write, message):
    logic, seen = _logic(slicer_lib, mrml_scene, FakeProcess(lines, exit_code, write), tmp_path)
    before = _nodes(mrml_scene)
    logic.start(ct_volume)
    _drive(logic)
    assert len(seen["failed"]) == 1 and message in seen["failed"][0][0] and not seen["finished"]
    assert "Traceback" not in seen["failed"][0][0]
    assert _nodes(mrml_scene) == before and not logic.isRunning and not list(tmp_path.iterdir())


def test_blocking_run_raises_the_message(slicer_lib, mrml_scene, ct_volume, tmp_path):
    logic, _ = _logic(slicer_lib, mrml_scene, FakeProcess(['{"event": "error", "message": "No body found."}'], 2),
                      tmp_path)
    with pytest.raises(slicer_lib.PredictionProcessError, match="No body found"):
        logic.run(ct_volume)


@pytest.mark.parametrize("ignores_terminate", [False, True])
def test_cancel_asks_then_terminates_then_kills_and_changes_nothing(slicer_lib, mrml_scene, ct_volume, tmp_path,
                                                                    ignores_terminate):
    process = FakeProcess(DONE[:2], write_mask=_box, hangs=True, ignores_terminate=ignores_terminate)
    process.later = DONE[3:5]
    logic, seen = _logic(slicer_lib, mrml_scene, process, tmp_path)
    before = _nodes(mrml_scene)
    logic.start(ct_volume)
    logic._job.gracePeriod = 0.05
    logic.poll()
    logic.cancel()
    assert process.sent[-1] == "cancel"
    _drive(logic)
    assert seen["progress"][-1] == (0, "Cancelling...")  # later progress of the process is not shown
    assert process.terminated and process.killed == ignores_terminate
    assert seen["cancelled"] and not seen["finished"] and not seen["failed"]
    assert _nodes(mrml_scene) == before and not list(tmp_path.iterdir())


def test_inputs_are_checked_before_any_process_starts(ctv_scene, slicer_lib, mrml_scene, ct_volume, tmp_path,
                                                      series_elsewhere):
    process = FakeProcess(DONE, write_mask=_box)
    logic, _ = _logic(slicer_lib, mrml_scene, process, tmp_path)
    other = load_dicom_volume(mrml_scene, series_elsewhere, "Other CT")
    other_segmentation = logic.import_mask(other, ctv_scene.conversion.volumeToImage(other) > 100)
    with pytest.raises(Exception, match="made on another image than the CT"):
        logic.start(ct_volume, other_segmentation)
    assert process.command is None
    logic.start(ct_volume)
    with pytest.raises(slicer_lib.BusyError):
        logic.start(ct_volume)
    mrml_scene.RemoveNode(ct_volume)
    _drive(logic)
    assert "removed from the scene" in logic.lastOutcome.message
    failing = FakeProcess(start_error=FileNotFoundError(2, "No such file", "PythonSlicer"))
    logic, _ = _logic(slicer_lib, mrml_scene, failing, tmp_path)
    with pytest.raises(slicer_lib.PredictionProcessError, match="cannot be started"):
        logic.start(other)
    assert not logic.isRunning and not list(tmp_path.iterdir())


@pytest.fixture
def series_elsewhere(tmp_path_factory):
    from conftest import axial_grid, write_linear_series

    return write_linear_series(tmp_path_factory.mktemp("other") / "ct", axial_grid("HFP"), "HFP")


# --- the real prediction process ---------------------------------------------------------------

def test_apply_through_the_real_process_gives_the_predictors_mask(ctv_scene, slicer_lib, mrml_scene, ct_volume,
                                                                  pelvis_phantom, tmp_path):
    slicer = require_slicer()
    logic = slicer_lib.CTVDelineationLogic(mrml_scene, temporaryDirectory=str(tmp_path))
    node = logic.run(ct_volume, device="cpu")
    result = logic.lastResult
    ct = load_ct_series(pelvis_phantom.ct_dir)
    direct = CTVPredictor(None, device="cpu").run(ct.image)
    expected = sitk.GetArrayFromImage(direct.mask) != 0
    got = slicer.util.arrayFromSegmentBinaryLabelmap(node, result.segmentId, ct_volume) != 0
    assert expected.sum() > 1000 and np.array_equal(got, expected)
    assert result.warnings == direct.warnings and result.notes()[:len(direct.warnings)] == direct.warnings
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(pelvis_phantom.masks["CTV"]))) != 0
    assert 2 * (got & truth).sum() / (got.sum() + truth.sum()) > 0.75
    assert result.model["sha256"] == load_model_package(None).sha256
    segment = node.GetSegmentation().GetSegment(result.segmentId)
    assert ctv_scene.conversion.segmentTag(segment, "SeriesInstanceUID") == ct.reference.series_instance_uid
    assert result.volumeCC == pytest.approx(expected.sum() * np.prod(ct.image.GetSpacing()) / 1000, rel=1e-3)
    assert not list(tmp_path.iterdir())


def test_cancelling_the_real_process_leaves_the_scene_unchanged(slicer_lib, mrml_scene, ct_volume, tmp_path):
    logic = slicer_lib.CTVDelineationLogic(mrml_scene, temporaryDirectory=str(tmp_path))
    before = _nodes(mrml_scene)
    logic.progress.connect(lambda percent, message: logic.cancel() if percent >= 15 else None)  # once the model is in
    with pytest.raises(PredictionCancelled):
        logic.run(ct_volume, device="cpu")
    assert _nodes(mrml_scene) == before and not list(tmp_path.iterdir())


def test_the_device_probe_answers(slicer_lib, mrml_scene):
    answer = slicer_lib.CTVDelineationLogic(mrml_scene).probeDevices()
    import torch

    assert answer["event"] == "probe" and answer["torch"] == torch.__version__
    assert answer["cuda"] == torch.cuda.is_available()


def test_a_ct_that_cannot_be_written_or_a_bug_on_import_become_messages(slicer_lib, mrml_scene, ct_volume, tmp_path,
                                                                        monkeypatch):
    process = FakeProcess(DONE, write_mask=_box)
    logic, seen = _logic(slicer_lib, mrml_scene, process, tmp_path)

    def disk_full(*args, **kwargs):
        raise RuntimeError("No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(slicer_lib.PredictionJob.sitk, "WriteImage", disk_full)
        with pytest.raises(slicer_lib.PredictionProcessError, match="No space left on device.*free space"):
            logic.start(ct_volume)
    assert process.sent == ["cancel"] and not logic.isRunning and not list(tmp_path.iterdir())

    def bug(*args, **kwargs):
        raise ValueError("simulated bug")

    before = _nodes(mrml_scene)
    logic, seen = _logic(slicer_lib, mrml_scene, FakeProcess(DONE, write_mask=_box), tmp_path)
    monkeypatch.setattr(sys.modules[slicer_lib.CTVDelineationLogic.__module__], "importMask", bug)
    logic.start(ct_volume)
    _drive(logic)
    assert seen["failed"][0][0].startswith("Unexpected error (ValueError: simulated bug)")
    assert _nodes(mrml_scene) == before and not list(tmp_path.iterdir())
