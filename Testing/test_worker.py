"""ctv_core's prediction process for the Slicer module: the request, the JSON-line conversation, the files."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import axial_grid
from test_prediction import BONE, qa_package

from ctv_core.errors import ModelPackageError, PredictionCancelled
from ctv_core.inference import process_protocol, worker
from ctv_core.inference.process_protocol import Commands
from ctv_core.model.package import load_model_package


def _request(tmp_path, **fields):
    request = {"protocol": 1, "task": "predict", "image": str(tmp_path / "ct.nrrd"), "mask": str(tmp_path / "ctv.nrrd"),
               "result": str(tmp_path / "result.json"), "model": None, "device": "cpu", **fields}
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    return path


def _run(request_path, commands: str, keep_open: bool = True):
    """Run the worker in this process; ``commands`` arrive on its stdin (a pipe left open if asked)."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, commands.encode())
    if not keep_open:
        os.close(write_fd)
    stdin, stdout = os.fdopen(read_fd), io.StringIO()
    try:
        code = worker.main([str(request_path)], stdin=stdin, stdout=stdout)
    finally:
        if keep_open:
            os.close(write_fd)
    return code, [json.loads(line) for line in stdout.getvalue().splitlines()]


@pytest.fixture(scope="module")
def qa_model(tmp_path_factory):
    return qa_package(tmp_path_factory.mktemp("qa") / "pkg", (1.5, 1.2, 3.0)).path


def _bone_ct(path, slices: int = 36):
    # 36 slices of 3 mm: just over the 100 mm a CT must cover; the model grid is this grid, so the
    # mask must match voxel for voxel
    grid = axial_grid("HFS", size=(40, 32, slices))
    x, y, z = grid.axis_coordinates()
    hu = np.where((x - grid.origin[0]) ** 2 + (y - grid.origin[1] - 20) ** 2 < 300, 1200, 40).astype(np.int16)
    image = grid.image(hu)
    sitk.WriteImage(image, str(path))
    return image


def test_prediction_writes_mask_and_result_and_talks_json_lines(tmp_path, qa_model):
    image = _bone_ct(tmp_path / "ct.nrrd")
    code, events = _run(_request(tmp_path, model=str(qa_model)), "go\n")
    assert code == process_protocol.EXIT_DONE
    kinds = [e["event"] for e in events]
    assert kinds[0] == "ready" and kinds[-1] == "done" and "progress" in kinds
    assert events[0]["model"]["sha256"] == load_model_package(qa_model).sha256
    mask = sitk.ReadImage(str(tmp_path / "ctv.nrrd"))
    hu = sitk.GetArrayFromImage(image)
    assert np.array_equal(sitk.GetArrayFromImage(mask) != 0, (hu >= BONE[0]) & (hu <= BONE[1]))
    assert np.allclose(mask.GetDirection(), image.GetDirection()) and np.allclose(mask.GetOrigin(), image.GetOrigin())
    result = json.loads((tmp_path / "result.json").read_text())
    assert result == events[-1]["report"]
    assert result["volume_cc"] > 0 and result["device"] == "cpu" and result["options"]["postprocessing"] is True
    # the uncertainty map beside the mask, on the same grid, named in the result and the done event
    assert result["uncertainty"]["map"] == str(tmp_path / "uncertainty.nrrd") == events[-1]["files"]["uncertainty"]
    assert result["uncertainty"]["signal"] == "margin" and len(result["uncertainty"]["slice_scores"]) == 36
    uncertainty = sitk.ReadImage(str(tmp_path / "uncertainty.nrrd"))
    assert uncertainty.GetPixelID() == sitk.sitkUInt8 and uncertainty.GetSize() == image.GetSize()
    assert np.allclose(uncertainty.GetOrigin(), image.GetOrigin())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_request_without_uncertainty_writes_no_map(tmp_path, qa_model):
    _bone_ct(tmp_path / "ct.nrrd")
    code, events = _run(_request(tmp_path, model=str(qa_model), uncertainty=False), "go\n")
    assert code == process_protocol.EXIT_DONE and events[-1]["report"]["uncertainty"] is None
    assert set(events[-1]["files"]) == {"mask", "result"} and not (tmp_path / "uncertainty.nrrd").exists()


def test_a_ct_too_short_for_a_pelvis_is_refused_before_predicting(tmp_path, qa_model):
    _bone_ct(tmp_path / "ct.nrrd", slices=10)
    code, events = _run(_request(tmp_path, model=str(qa_model)), "go\n")
    assert code == process_protocol.EXIT_USER_ERROR and events[-1]["event"] == "error"
    assert "10 slice(s) covering 30 mm" in events[-1]["message"] and not (tmp_path / "ctv.nrrd").exists()


@pytest.mark.parametrize("commands,keep_open", [("cancel\n", True), ("", False)])
def test_cancel_or_a_vanished_caller_stops_before_writing(tmp_path, qa_model, commands, keep_open):
    _bone_ct(tmp_path / "ct.nrrd")
    code, events = _run(_request(tmp_path, model=str(qa_model)), commands, keep_open)
    assert code == process_protocol.EXIT_CANCELLED and events[-1]["event"] == "cancelled"
    assert not (tmp_path / "ctv.nrrd").exists() and not (tmp_path / "result.json").exists()


@pytest.mark.parametrize("fields,message", [
    ({"protocol": 2}, "protocol-1 request"),
    ({"mask": ""}, "lacks the file name 'mask'"),
    ({"passes": 0}, "from 1 to 8"),
    ({"passes": True}, "from 1 to 8"),
    ({"test_time_flips": "yes"}, "'test_time_flips' must be true, false or null"),
    ({"uncertainty": "no"}, "'uncertainty' must be true, false or null"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"model": "/nonexistent/pkg"}, "not a usable model package"),
])
def test_bad_requests_are_answered_with_a_message(tmp_path, qa_model, fields, message):
    _bone_ct(tmp_path / "ct.nrrd")
    code, events = _run(_request(tmp_path, **{"model": str(qa_model), **fields}), "go\n")
    assert code == process_protocol.EXIT_USER_ERROR and events[-1]["event"] == "error"
    assert message in events[-1]["message"] and "Traceback" not in events[-1]["message"]


def test_unreadable_image_and_request_file(tmp_path, qa_model):
    (tmp_path / "ct.nrrd").write_text("not an image")
    code, events = _run(_request(tmp_path, model=str(qa_model)), "go\n")
    assert code == process_protocol.EXIT_USER_ERROR and "cannot be read" in events[-1]["message"]
    (tmp_path / "broken.json").write_text("{")
    code, events = _run(tmp_path / "broken.json", "")
    assert code == process_protocol.EXIT_USER_ERROR and "cannot be read" in events[-1]["message"]
    code, events = _run(tmp_path / "missing.json", "")
    assert code == process_protocol.EXIT_USER_ERROR


def test_an_unexpected_failure_is_reported_and_logged(tmp_path, qa_model, monkeypatch, capsys):
    _bone_ct(tmp_path / "ct.nrrd")
    from ctv_core.inference import predictor

    def broken(self, *args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(predictor.CTVPredictor, "run", broken)
    code, events = _run(_request(tmp_path, model=str(qa_model)), "go\n")
    assert code == process_protocol.EXIT_UNEXPECTED and events[-1]["kind"] == "internal"
    assert "simulated bug" in events[-1]["message"] and "Traceback" not in events[-1]["message"]
    assert "Traceback" in capsys.readouterr().err  # for the log
    assert not (tmp_path / "ctv.nrrd").exists()


def test_probe_reports_torch_and_devices(tmp_path):
    path = tmp_path / "probe.json"
    path.write_text(json.dumps({"protocol": 1, "task": "probe"}))
    code, events = _run(path, "")
    import torch

    assert code == 0 and events == [{**events[0], "event": "probe", "torch": torch.__version__,
                                     "cuda": torch.cuda.is_available()}]


def test_options_change_a_copy_of_the_package(qa_model):
    bundled = load_model_package(None)
    changed = worker.with_options(bundled, passes=1, test_time_flips=True, postprocessing=False)
    assert changed.network_config.passes == 1 and bundled.network_config.passes == 2
    assert changed.settings.inference.test_time_flips and not bundled.settings.inference.test_time_flips
    assert changed.settings.postprocessing.keep_largest == 0 and not changed.settings.postprocessing.fill_holes
    assert worker.with_options(bundled, None, None, True) == bundled
    with pytest.raises(ModelPackageError, match="has no refinement passes"):
        worker.with_options(load_model_package(qa_model), passes=2, test_time_flips=None, postprocessing=True)


def test_the_command_channel_reads_go_and_cancel():
    read_fd, write_fd = os.pipe()
    commands = Commands(os.fdopen(read_fd))
    os.write(write_fd, b"noise\ngo\n")
    assert commands.go.wait(5) and not commands.cancel.is_set()
    os.write(write_fd, b"cancel\n")
    assert commands.cancel.wait(5)
    os.close(write_fd)


def test_a_closed_command_channel_cancels_a_prediction_not_started():
    read_fd, write_fd = os.pipe()
    commands = Commands(os.fdopen(read_fd))
    assert not commands.go.wait(0.05) and not commands.cancel.is_set()  # nothing said yet: it waits
    os.close(write_fd)  # the caller is gone
    assert commands.cancel.wait(5) and commands.go.is_set()
    with pytest.raises(PredictionCancelled, match="before it started"):
        commands.wait_for_go()
