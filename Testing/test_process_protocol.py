"""The prediction-process protocol (ctv_core.inference.process_protocol): the one reader against real prediction
processes (the Slicer module's worker through its runner, ``ctv predict --progress json`` through the services'
job workers), its refusals, the exit-status table and the cancel line that works on every system."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

from ctv_core.errors import PredictionCancelled, PredictionProtocolError
from ctv_core.inference import process_protocol as protocol
from ctv_core.service.audit import AuditLog
from ctv_core.service.jobs import JobWorkers, Program
from ctv_core.service.records import FAILED
from ctv_core.service.store import CaseStore

WAIT_S = 300.0


def _wait_for(condition, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s")
        time.sleep(0.02)


# --- the reader, the writer and the exit statuses ----------------------------------------------------

@pytest.mark.parametrize("line,message", [
    ('{"event": "finished", "report": {}}', "event 'finished' is not among ready, progress"),
    ('{"stage": "network"}', "no event is not among"),
    ('{"event": "progress", "stage": "network"', "malformed message"),
    ('{"event": "progress", "stage": "network"}', "no field 'fraction'"),
    ('{"event": "progress", "stage": "network", "fraction": "half"}', "malformed field 'fraction'"),
    ('{"event": "progress", "stage": "network", "fraction": 1.5}', "outside 0-1"),
    ('{"event": "done", "result": {}}', "no field 'report'"),
    ('{"event": "error", "kind": "DeviceError"}', "no field 'message'"),
])
def test_an_unknown_or_malformed_event_is_refused_with_a_clear_message(line, message):
    with pytest.raises(PredictionProtocolError, match=message) as refused:
        protocol.EventReader().read(line)
    assert "Traceback" not in str(refused.value)


def test_the_reader_keeps_what_is_not_protocol_for_the_log_and_refuses_events_after_the_final_one():
    reader = protocol.EventReader()
    assert reader.read("Segmentation fault (core dumped)") is None and list(reader.other) == [
        "Segmentation fault (core dumped)"]
    assert reader.read("   ") is None
    assert reader.read('{"event": "progress", "stage": "network", "fraction": 0.5}')["stage"] == "network"
    assert reader.final is None
    done = reader.read('{"event": "done", "report": {"ctv": {"volume_cc": 1.0}}}')
    assert reader.final == done and [e["event"] for e in reader.events] == ["progress", "done"]
    with pytest.raises(PredictionProtocolError, match="after its final 'done'"):
        reader.read('{"event": "progress", "stage": "writing", "fraction": 0.0}')


def test_the_writer_refuses_what_the_reader_would_refuse(tmp_path):
    with (tmp_path / "out").open("w") as stream:
        protocol.write_event({"event": "progress", "stage": "network", "fraction": 0.25}, stream)
        with pytest.raises(PredictionProtocolError):
            protocol.write_event({"event": "progress", "stage": "network"}, stream)
    assert (tmp_path / "out").read_text() == '{"event": "progress", "stage": "network", "fraction": 0.25}\n'


@pytest.mark.parametrize("final,code,state,message", [
    ({"event": "done", "report": {"a": 1}}, 0, "done", ""),
    ({"event": "done", "report": {"a": 1}}, 1, "failed", "an unexpected failure, exit status 1"),
    (None, 0, "failed", "stopped without a result (done, exit status 0)"),
    ({"event": "error", "kind": "DeviceError", "message": "CUDA is not available."}, 2, "failed",
     "CUDA is not available."),
    ({"event": "cancelled", "message": "Prediction cancelled; nothing was written."}, 3, "cancelled",
     "Prediction cancelled; nothing was written."),
    (None, -9, "failed", "killed, most often because the computer ran out of memory, exit status -9"),
    (None, 139, "failed", "crashed (segmentation fault), exit status 139"),
    (None, 42, "failed", "exit status 42, which a ctv prediction process never gives"),
])
def test_one_ending_for_every_final_event_and_exit_status(final, code, state, message):
    ending = protocol.conclude(final, code, "Traceback (most recent call last):\n  boom\nValueError: x",
                               details="the service's log")
    assert ending.state == state and message in ending.message
    assert (ending.report == {"a": 1}) == (state == "done")
    assert "Traceback" not in ending.message and "ValueError" not in ending.message


def test_an_exit_2_without_an_event_gives_the_commands_own_message():
    stderr = "usage: ctv predict ...\nctv predict: error: argument --device: invalid choice: 'tpu'\n"
    assert protocol.conclude(None, 2, stderr).message == "argument --device: invalid choice: 'tpu'"


def test_every_exit_status_the_protocol_names_has_a_meaning():
    for code in (protocol.EXIT_DONE, protocol.EXIT_UNEXPECTED, protocol.EXIT_USER_ERROR, protocol.EXIT_CANCELLED,
                 protocol.EXIT_INTERRUPTED):
        assert "never gives" not in protocol.exit_meaning(code)


def _commands(text: str, close: bool, eof_cancels: bool):
    read_fd, write_fd = os.pipe()
    os.write(write_fd, text.encode())
    if close:
        os.close(write_fd)
    return protocol.Commands(os.fdopen(read_fd), eof_cancels=eof_cancels), (None if close else write_fd)


def test_go_carries_a_prestarted_commands_arguments_and_a_closed_stdin_after_go_is_no_cancel_for_ctv():
    commands, _ = _commands(protocol.command_line(protocol.GO, ["predict", "a b", "--progress=json"]) + "\n",
                            close=True, eof_cancels=False)
    assert commands.wait_for_go() == ["predict", "a b", "--progress=json"]
    time.sleep(0.2)  # the reader has seen the end of the stream by now
    assert not commands.cancel.is_set()
    commands, _ = _commands("", close=True, eof_cancels=False)  # gone before go: nothing to run
    with pytest.raises(PredictionCancelled, match="before it started"):
        commands.wait_for_go()


def test_a_cancel_line_sets_cancel_after_go():
    commands, write_fd = _commands("go\n", close=False, eof_cancels=True)
    assert commands.wait_for_go() is None and not commands.cancel.is_set()
    os.write(write_fd, b"cancel\n")
    assert commands.cancel.wait(5)
    os.close(write_fd)
    with pytest.raises(ValueError):
        protocol.command_line(protocol.CANCEL, ["x"])


# --- real prediction processes -------------------------------------------------------------------------

class CountingRunner:
    """The Slicer module's real runner, counting how often the job had to terminate or kill the process."""

    def __init__(self, slicer_lib):
        self.runner = slicer_lib.SubprocessRunner()
        self.terminated = self.killed = 0

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def terminate(self):
        self.terminated += 1
        self.runner.terminate()

    def kill(self):
        self.killed += 1
        self.runner.kill()


def _poll_until_ended(job, on_event=None) -> list:
    seen = []
    deadline = time.monotonic() + WAIT_S
    while job.outcome is None:
        assert time.monotonic() < deadline, "the prediction process did not end"
        updates = job.poll()
        seen.extend(updates)
        if on_event is not None:
            on_event(job)
        time.sleep(0.02)
    return seen


@pytest.fixture(scope="module")
def phantom_image(pelvis_phantom):
    from ctv_core import load_ct_series

    return load_ct_series(pelvis_phantom.ct_dir).image


def test_the_slicer_runner_reads_progress_and_done_from_the_real_worker(slicer_lib, phantom_image, tmp_path):
    runner = CountingRunner(slicer_lib)
    job = slicer_lib.PredictionJob.PredictionJob(runner, slicer_lib.PredictionOptions(device="cpu"),
                                                 temporaryDirectory=str(tmp_path))
    try:
        job.start(phantom_image)
        updates = _poll_until_ended(job)
        kinds = [e["event"] for e in job.events]
        assert kinds[0] == "ready" and kinds[-1] == "done" and set(kinds[1:-1]) == {"progress"}
        stages = [e["stage"] for e in job.events if e["event"] == "progress"]
        assert "network" in stages and stages.index("preprocessing") < stages.index("network")
        assert job.outcome.state == "done" and runner.exitCode() == protocol.EXIT_DONE
        assert job.outcome.result == job.events[-1]["report"]
        assert job.outcome.mask.GetSize() == phantom_image.GetSize()
        assert [u.percent for u in updates] == sorted(u.percent for u in updates)
    finally:
        job.close()


def test_cancel_mid_network_stops_the_real_worker_by_itself(slicer_lib, phantom_image, tmp_path):
    runner = CountingRunner(slicer_lib)
    job = slicer_lib.PredictionJob.PredictionJob(runner, slicer_lib.PredictionOptions(device="cpu"),
                                                 temporaryDirectory=str(tmp_path), gracePeriod=WAIT_S)

    def cancel_in_the_network(job):
        if not job.cancelRequested and any(e["event"] == "progress" and e["stage"] == "network" and e["fraction"] < 1
                                           for e in job.events):
            job.cancel()

    try:
        job.start(phantom_image)
        _poll_until_ended(job, cancel_in_the_network)
        assert job.cancelRequested and job.outcome.state == "cancelled"
        # the worker heard the line and stopped itself: its own event and status, no signal needed
        assert job.events[-1]["event"] == "cancelled" and runner.exitCode() == protocol.EXIT_CANCELLED
        assert runner.terminated == runner.killed == 0
        assert not (job.folder / "ctv.nrrd").exists() and not (job.folder / "result.json").exists()
    finally:
        job.close()


#: ``ctv`` whose network waits, window by window, until the run's stdin reader has read ``cancel``: the cancel lands
#: mid-network by construction, whatever the machine's speed (OpenVINO finishes the phantom's one window in well
#: under a second, so a cancel sent when the stage is reported could arrive after the run had ended).
GATED_CTV = """
import sys
import ctv_core.inference.sliding_window as window
from ctv_core.inference import process_protocol
from ctv_core.cli.main import main
real = window._probability
def gated(volume, logits_of):
    process_protocol.stdin_commands().cancel.wait(300)
    return real(volume, logits_of)
window._probability = gated
sys.exit(main(sys.argv[1:]))
"""


def test_the_job_workers_cancel_a_real_ctv_predict_mid_network_with_the_same_line(pelvis_phantom, tmp_path,
                                                                                 monkeypatch):
    import ctv_core.service.jobs

    # no SIGTERM after the grace period: the run must stop on the cancel line alone (the line is read between
    # stages and windows)
    monkeypatch.setattr(ctv_core.service.jobs, "CANCEL_GRACE_S", WAIT_S)
    store = CaseStore(tmp_path / "data")
    audit = tmp_path / "audit.log"
    workers = JobWorkers(store, "protocol", lambda job, report: store.finish_job(job, model="x"), AuditLog(audit),
                         poll_s=0.05, program=Program(ctv=(sys.executable, "-c", GATED_CTV), prestarted=None))
    ct = tmp_path / "data" / "upload"
    shutil.copytree(pelvis_phantom.ct_dir, ct)
    case_id, job = store.open_case("upload", ct, queue="protocol", device="cpu")
    workers.start()
    try:
        _wait_for(lambda: (store.open_jobs().get(case_id) or {}).get("stage") == "network",
                  "the job reporting the network stage")
        assert store.request_cancel(case_id)
        _wait_for(lambda: store.job(job.id).status == FAILED, "the cancelled job ending")
    finally:
        workers.stop()
    assert store.job(job.id).message == "Cancelled by the user; nothing was written."
    assert not store.version_dir(case_id, job.version).exists()
    cancelled = [line for line in audit.read_text().splitlines() if "job-cancelled" in line]
    assert len(cancelled) == 1 and f"(exit status {protocol.EXIT_CANCELLED})" in cancelled[0], cancelled


@pytest.mark.parametrize("script,message", [
    # a breach of the protocol: the worker stops the process at once (it would sleep for ten minutes)
    ('print(\'{"event": "finished"}\', flush=True); import time; time.sleep(600)', "sent an unknown message"),
    ('import sys; print(\'{"event": "progress", "stage": "network", "fraction": 0.5}\'); sys.exit(42)',
     "exit status 42, which a ctv prediction process never gives"),
])
def test_the_job_workers_refuse_what_the_protocol_does_not_know(tmp_path, script, message):
    store = CaseStore(tmp_path / "data")
    workers = JobWorkers(store, "protocol", lambda job, report: store.finish_job(job, model="x"),
                         AuditLog(tmp_path / "audit.log"), poll_s=0.05,
                         program=Program(ctv=(sys.executable, "-c", script), prestarted=None))
    ct = tmp_path / "data" / "upload"
    ct.mkdir()
    (ct / "1.dcm").write_bytes(b"not read by this test")
    case_id, job = store.open_case("upload", ct, queue="protocol")
    started = time.monotonic()
    workers.start()
    try:
        _wait_for(lambda: store.job(job.id).status == FAILED, "the job failing", timeout=120)
    finally:
        workers.stop()
    assert message in store.job(job.id).message and time.monotonic() - started < 120
    assert not store.version_dir(case_id, job.version).exists()


def test_ctv_predict_progress_json_speaks_the_protocol(pelvis_phantom, tmp_path):
    command = protocol.process_command(sys.executable, "ctv_core.cli.main", [
        "predict", str(pelvis_phantom.ct_dir), str(tmp_path / "out"), "--device=cpu", "--progress=json", "-q"])
    done = subprocess.run(command, capture_output=True, text=True, timeout=WAIT_S, stdin=subprocess.DEVNULL)
    reader = protocol.EventReader()
    for line in done.stdout.splitlines():
        reader.read(line)
    assert done.returncode == 0 and reader.final["event"] == "done", done.stderr[-2000:]
    assert {e["stage"] for e in reader.events if e["event"] == "progress"} >= {"preprocessing", "network"}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert reader.final["report"] == report and Path(reader.final["files"]["rtstruct"]).is_file()
    assert protocol.conclude(reader.final, done.returncode).report == report

    refused = subprocess.run([*command[:4], "predict", str(tmp_path / "nothing"), str(tmp_path / "out2"),
                              "--progress=json"], capture_output=True, text=True, timeout=WAIT_S)
    reader = protocol.EventReader()
    for line in refused.stdout.splitlines():
        reader.read(line)
    assert refused.returncode == protocol.EXIT_USER_ERROR and reader.final["event"] == "error"
    assert refused.stderr.strip().endswith(reader.final["message"])  # the same paragraph on stderr as ever
    assert protocol.conclude(reader.final, refused.returncode).message == reader.final["message"]


# --- one strict reading of a model manifest --------------------------------------------------------------

def _bundled_copy(tmp_path, **changes) -> Path:
    from ctv_core.model.manifest import BUNDLED

    package = tmp_path / "pkg"
    shutil.copytree(BUNDLED, package)
    manifest = json.loads((package / "manifest.json").read_text())
    for key, value in changes.items():
        if value is None:
            manifest.pop(key)
        else:
            manifest[key] = value
    (package / "manifest.json").write_text(json.dumps(manifest))
    return package


@pytest.mark.parametrize("changes,message", [
    ({"notes": "tuned by hand"}, "manifest.json has unknown field(s) notes"),
    ({"format_version": None}, "manifest.json lacks format_version"),
    ({"name": 7}, "field 'name' must be a JSON string"),
    ({"architecture": "vnet"}, "unknown architecture 'vnet'"),
])
def test_a_manifest_the_module_once_read_loosely_is_refused_with_the_strict_message(slicer_lib, tmp_path, changes,
                                                                                    message):
    from ctv_core import ModelPackageError
    from ctv_core.model.package import load_model_package

    package = _bundled_copy(tmp_path, **changes)
    with pytest.raises(ModelPackageError) as described:
        slicer_lib.describeModel(package)
    with pytest.raises(ModelPackageError) as loaded:
        load_model_package(package)
    assert message in str(described.value) and str(described.value) == str(loaded.value)
    assert str(described.value).startswith(f"'{package}' is not a usable model package:")
    assert "\n" not in str(described.value)


def test_the_module_and_the_loader_describe_the_bundled_model_alike(slicer_lib):
    from ctv_core.model.manifest import ARCHITECTURE_NAMES
    from ctv_core.model.package import ARCHITECTURES, load_model_package

    assert tuple(ARCHITECTURES) == ARCHITECTURE_NAMES  # the manifest's reading knows what the loader builds

    described, loaded = slicer_lib.describeModel(None), load_model_package(None)
    assert (described.name, described.version, described.weights_sha256) == (loaded.name, loaded.version,
                                                                             loaded.weights_sha256)
    assert described.passes == loaded.network_config.passes
    assert described.test_time_flips == loaded.settings.inference.test_time_flips
