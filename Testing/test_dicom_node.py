"""``ctv node`` against a real PACS (Orthanc on loopback): CT in by C-STORE, RTSTRUCT back, nothing lost.

Orthanc holds phantom CTs and sends them to the node (``POST /modalities/{node}/store``); the
node files them, delineates each complete series with the bundled model through the ``ctv
predict`` job, and C-STOREs the RTSTRUCT back. The node runs as the real command in its own
process, so it can be killed with SIGKILL and restarted.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import ctv_command, require_tool
from node_support import NODE_AE, nodes_stopped, pacs_and_node  # noqa: F401 - two fixtures
from orthanc import Orthanc, http_error

from ctv_core import load_ct_series, read_rtstruct
from ctv_core.phantom import ScanSettings, make_phantom

PHANTOM = ScanSettings(matrix=256, slice_thickness_mm=5.0)


@pytest.fixture(scope="module")
def patients(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("node_patients")
    return {name: make_phantom(root / name, seed=seed, settings=PHANTOM).ct_dir.parent
            for name, seed in (("a", 21), ("b", 22))}


def check_rtstruct(pacs: Orthanc, series: dict, patient: Path, tmp_path: Path) -> None:
    """The RTSTRUCT Orthanc holds references the patient's CT, and plastimatch reads a CTV on it."""
    instance = series["Instances"][0]
    path = tmp_path / f"{instance}.dcm"
    path.write_bytes(pacs.instance_file(instance))
    rs = pydicom.dcmread(path)
    ct = load_ct_series(patient / "ct")
    frame = rs.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == ct.reference.frame_of_reference_uid
    study = frame.RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == ct.reference.study_instance_uid == rs.StudyInstanceUID
    assert study.RTReferencedSeriesSequence[0].SeriesInstanceUID == ct.reference.series_instance_uid
    out = tmp_path / f"pm_{instance}"
    subprocess.run([require_tool("plastimatch"), "convert", "--input", str(path), "--referenced-ct",
                    str(patient / "ct"), "--output-prefix", str(out), "--prefix-format", "nii.gz", "--xor-contours"],
                   check=True, capture_output=True)
    theirs = sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(str(out / "CTV.nii.gz")), ct.image,
                                                  sitk.Transform(), sitk.sitkNearestNeighbor)) != 0
    ours = sitk.GetArrayFromImage(read_rtstruct(path, ct)["CTV"]) != 0
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(patient / "masks" / "CTV.nii.gz"))) != 0
    assert theirs.sum() > 0 and np.array_equal(theirs, ours)
    assert 2 * (ours & truth).sum() / (ours.sum() + truth.sum()) > 0.75


def test_a_ct_sent_by_the_pacs_comes_back_as_its_rtstruct(pacs_and_node, patients, tmp_path):
    pacs, node = pacs_and_node
    running = node().start()
    series = pacs.upload(patients["a"] / "ct")
    pacs.send(series, "ctvnode")
    found = running.rtstructs(pacs, 1)
    assert len(found) == 1, running.audit()
    check_rtstruct(pacs, found[0], patients["a"], tmp_path)
    lines = running.audit()
    assert any(" association ORTHANC@127.0.0.1 accepted" in line for line in lines)
    assert any(" job-done " in line for line in lines) and any(" sent rtstruct.dcm" in line for line in lines)
    status = subprocess.run([ctv_command(), "node", "status", "--data", str(running.data), "--json"],
                            capture_output=True, text=True, check=True)
    summary = json.loads(status.stdout)
    assert summary["summary"]["jobs"] == {"done": 1} and summary["cases"][0]["status"] == "done"


def test_killed_while_predicting_then_restarted_delivers_exactly_one_rtstruct(pacs_and_node, patients):
    pacs, node = pacs_and_node
    first = node().start()
    pacs.send(pacs.upload(patients["a"] / "ct"), "ctvnode")
    first.wait_audit(" job-start ")
    first.kill()  # SIGKILL mid-prediction; the prediction process dies with it
    assert pacs.series_of_modality("RTSTRUCT") == []
    second = node().start()
    second.rtstructs(pacs, 1)
    second.settled()  # whatever it would still send has gone: a duplicate would be in the PACS now
    found = pacs.series_of_modality("RTSTRUCT")
    assert len(found) == 1 and len(found[0]["Instances"]) == 1, second.audit()
    assert any("resumed: {'requeued': 1" in line for line in second.audit())


def test_a_pacs_that_is_down_gets_the_rtstruct_when_it_is_back(pacs_and_node, patients):
    pacs, node = pacs_and_node
    running = node("--retry-seconds", "1").start()
    pacs.send(pacs.upload(patients["b"] / "ct"), "ctvnode")
    pacs.stop()  # the node has the CT; the planning system goes down before the result is ready
    running.wait_audit(" send-failed ")
    db = sqlite3.connect(running.data / "index.sqlite")
    assert db.execute("SELECT status, attempts FROM outbox").fetchone()[0] == "pending"
    pacs.start()
    found = running.rtstructs(pacs, 1)
    assert len(found) == 1, running.audit()
    assert "sent rtstruct.dcm" in running.wait_audit(" sent ")  # recorded once the PACS answered
    assert db.execute("SELECT status FROM outbox").fetchone()[0] == "sent"


def test_peers_not_allowed_and_non_ct_series_are_refused_with_their_reason(pacs_and_node, patients, tmp_path):
    pacs, node = pacs_and_node
    running = node("--allow", "SOMEONE_ELSE@127.0.0.1").start()
    series = pacs.upload(patients["a"] / "ct")
    assert http_error(lambda: pacs.send(series, "ctvnode")) is not None
    assert "not in the allow list" in running.wait_audit("association-rejected")
    running.stop()
    # an MR series from an allowed peer: refused instance by instance (0x0122), no case, no RTSTRUCT
    mr = tmp_path / "mr"
    mr.mkdir()
    series_uid = pydicom.uid.generate_uid()
    for n, path in enumerate(sorted((patients["b"] / "ct").iterdir())[:5]):
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.Modality, ds.SeriesInstanceUID = "MR", series_uid
        ds.save_as(mr / f"{n}.dcm")
    allowed = node("--allow", f"{pacs.aet}@127.0.0.1").start()
    assert http_error(lambda: pacs.send(pacs.upload(mr), "ctvnode")) is not None
    assert "MR Image Storage is not CT Image Storage" in allowed.wait_audit(" refused ")
    status = allowed.status()  # refused before it was filed: no series to judge, ever
    assert status["summary"]["series"] == {} and status["cases"] == [] and pacs.series_of_modality("RTSTRUCT") == []


def test_two_cts_sent_at_once_both_come_back_each_on_its_own_ct(pacs_and_node, patients, tmp_path):
    pacs, node = pacs_and_node
    running = node().start()
    ids = {name: pacs.upload(patients[name] / "ct") for name in ("a", "b")}
    for series in ids.values():
        pacs.send(series, "ctvnode", synchronous=False)
    found = running.rtstructs(pacs, 2)
    assert len(found) == 2, running.audit()
    by_patient = {}
    for series in found:
        rs = pydicom.dcmread(__import__("io").BytesIO(pacs.instance_file(series["Instances"][0])))
        referenced = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0] \
            .RTReferencedSeriesSequence[0].SeriesInstanceUID
        for name in ("a", "b"):
            if load_ct_series(patients[name] / "ct").reference.series_instance_uid == referenced:
                by_patient[name] = series
    assert set(by_patient) == {"a", "b"}
    for name, series in by_patient.items():
        check_rtstruct(pacs, series, patients[name], tmp_path)
    status = running.settled()  # the node's own record agrees: two cases done, each RTSTRUCT sent once
    assert sorted(case["status"] for case in status["cases"]) == ["done", "done"]
    assert status["summary"]["outbox"] == {"sent": 2} and len(pacs.series_of_modality("RTSTRUCT")) == 2
