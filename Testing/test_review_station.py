"""The review station's HTTP API against the real ``ctv review`` process: who may connect, every way an upload
fails (with a message and a 4xx, nothing kept), the series choice, a restart in the middle of a prediction
(every case kept, the prediction finished once), a DICOM node's case in the list and its approval."""

from __future__ import annotations

import argparse
import http.client
import shutil
import stat
import subprocess

import pydicom
import pytest
import SimpleITK as sitk
from conftest import ctv_command, require_tool
from review_support import TOKEN, Station, zip_folder
from test_rtstruct import _plastimatch_masks, dice

from ctv_core import load_ct_series
from ctv_core.phantom import ScanSettings, make_phantom
from ctv_core.service.approvals import approved_records
from ctv_core.service.records import DONE, HELD, PENDING
from ctv_core.service.store import CaseStore

pytestmark = pytest.mark.xdist_group("review-api")
PHANTOM = ScanSettings(matrix=256, slice_thickness_mm=5.0)
NODE_DESTINATION = "TPS@127.0.0.1:11104"


@pytest.fixture(scope="module")
def patients(tmp_path_factory):
    root = tmp_path_factory.mktemp("review_patients")
    return {name: make_phantom(root / name, seed=seed, settings=PHANTOM).ct_dir
            for name, seed in (("a", 31), ("b", 32))}


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    data = tmp_path_factory.mktemp("review_api") / "data"
    station = Station(data, "--max-upload-mb", "40", "--max-unpacked-mb", "60").start()
    yield station
    station.stop()


def test_every_request_needs_the_token_and_this_computers_own_address(station):
    for path in ("/", "/index.html", "/api/cases", "/ws"):
        status, answer, _ = station.call("GET", path, token=None)
        assert status == 401, (path, status)
    status, answer, _ = station.call("GET", "/api/cases", token="x" * len(TOKEN))
    assert status == 401 and "access token" in answer["message"] and answer["status"] == 401
    assert station.call("GET", "/api/cases")[0] == 200
    status, page, headers = station.call("GET", f"/index.html?token={TOKEN}", token=None)
    assert status == 200 and b"<html" in page.lower() and "HttpOnly" in headers["Set-Cookie"]
    cookie = headers["Set-Cookie"].split(";")[0]
    assert station.call("GET", "/api/cases", token=None, headers={"Cookie": cookie})[0] == 200
    status, answer, _ = station.call("GET", "/api/cases", headers={"Host": f"rebound.example:{station.port}"})
    assert status == 403 and "own address" in answer["message"]  # a DNS name rebound to 127.0.0.1


def test_a_short_token_is_refused_and_a_non_loopback_address_gets_one_generated(tmp_path):
    from ctv_core.cli.review import _token
    from ctv_core.errors import CTVError
    from ctv_core.service.review.config import StationConfig

    done = subprocess.run([ctv_command(), "review", "--token", "short", "--data", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "at least 16" in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(CTVError, match="without an access token"):
        StationConfig(host="0.0.0.0")
    args = argparse.Namespace(host="0.0.0.0", token=None, token_file=None)
    token, generated = _token(args)
    assert generated and len(token) >= 16 and StationConfig(host="0.0.0.0", token=token).url.endswith(token)
    assert _token(argparse.Namespace(host="127.0.0.1", token=None, token_file=None)) == (None, False)
    (tmp_path / "token").write_text(token + "\n")
    assert _token(argparse.Namespace(host="10.0.0.1", token=None, token_file=tmp_path / "token")) == (token, False)


def test_uploads_that_cannot_be_used_are_refused_with_their_reason(station, patients, tmp_path):
    ct = patients["a"]
    good = zip_folder(ct)
    cases = station.call("GET", "/api/cases")[1]["cases"]

    def refused(body, status, words, **headers):
        code, answer, _ = station.call("POST", "/api/cases", body, headers={"Content-Type": "application/zip",
                                                                                 **headers})
        assert code == status and answer["status"] == status, (code, answer)
        assert all(word in answer["message"] for word in words), answer["message"]
        assert "Traceback" not in answer["message"] and str(station.data) not in answer["message"]

    refused(good[: len(good) // 3], 400, ["not a readable zip"])
    refused(zip_folder(ct, ("../../evil.dcm", b"x")), 400, ["leaves the upload's folder"])
    assert not list(station.data.parent.rglob("evil.dcm"))
    refused(bytes(41 << 20), 413, ["larger than", "40 MB"])
    refused(zip_folder(ct, ("ct/zeros.bin", bytes(70 << 20))), 413, ["unpacks to more than 60 MB"])
    refused(b"", 400, ["empty"])
    refused(b"hello, not DICOM", 422, ["No DICOM files found in the upload"])
    mr = tmp_path / "mr"
    mr.mkdir()
    for path in sorted(ct.iterdir())[:4]:
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.save_as(mr / path.name)
    refused(zip_folder(mr), 422, ["no CT image series", "[MR]"])
    gap = tmp_path / "gap"
    shutil.copytree(ct, gap)
    sorted(gap.iterdir())[len(list(gap.iterdir())) // 2].unlink()
    refused(zip_folder(gap), 422, ["missing"])

    connection = http.client.HTTPConnection("127.0.0.1", station.port, timeout=60)  # no Content-Length: counted
    connection.request("POST", "/api/cases", body=iter([bytes(1 << 20)] * 45), encode_chunked=True,
                       headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/zip"})
    answer = connection.getresponse()
    assert answer.status == 413
    connection.close()

    assert station.call("GET", "/api/cases")[1]["cases"] == cases  # no case for any of them
    assert not any((station.data / "uploads").iterdir())  # and nothing kept
    for path, words in (("/api/cases/20990101-000000-abcdef", ["No case"]), ("/api/cases/..%2F..%2Fetc", ["No case"]),
                        ("/api/nothing", ["No such API call"])):
        status, answer, _ = station.call("GET", path)
        assert status == 404 and all(w in answer["message"] for w in words), (path, answer)
    status, answer, _ = station.call("POST", "/api/uploads/0123456789abcdef/cases", {"series": "1.2"})
    assert status == 404 and "upload the CT again" in answer["message"]


def test_uploads_queue_a_running_prediction_cancels_and_a_failed_one_says_why(station, patients, tmp_path):
    short = tmp_path / "short"
    short.mkdir()
    for path in sorted(patients["a"].iterdir())[:12]:  # 60 mm of CT: too short for a pelvis
        shutil.copy(path, short / path.name)
    status, first = station.upload(zip_folder(patients["a"]))
    assert status == 201, first
    status, second = station.upload(zip_folder(short))
    assert status == 201, second
    station.wait_case(first["id"], statuses=("running",), timeout_s=120)
    assert station.call("GET", f"/api/cases/{second['id']}")[1]["status"] == "queued"  # one worker: it waits
    status, answer, _ = station.call("POST", f"/api/cases/{first['id']}/cancel")
    assert status == 200 and answer["cancelled"], answer
    cancelled = station.wait_case(first["id"], statuses=("failed",), timeout_s=120)
    assert "Cancelled" in cancelled["message"] and cancelled["versions"] == []
    failed = station.wait_case(second["id"], statuses=("failed",), timeout_s=180)
    assert "covering 60 mm" in failed["message"] and "at least 3 slices and 100 mm" in failed["message"], failed
    assert failed["versions"] == [] and "Traceback" not in failed["message"]
    for case in (first, second):  # no half result left behind
        assert not any(p.is_file() for p in (station.data / "cases" / case["id"] / "versions").rglob("*"))
    status, answer, _ = station.call("POST", f"/api/cases/{first['id']}/cancel")
    assert status == 409 and "no queued or running" in answer["message"]


def test_a_series_chosen_among_two_survives_a_restart_mid_prediction_and_a_node_case_is_approved(
        station, patients, tmp_path):
    both = tmp_path / "both"
    for name in ("a", "b"):
        shutil.copytree(patients[name], both / name)
    status, choice, _ = station.call("POST", "/api/cases", zip_folder(both),
                                     headers={"Content-Type": "application/zip"})
    assert status == 409 and len(choice["series"]) == 2 and "choose" in choice["message"], choice
    b = load_ct_series(patients["b"])
    assert {s["uid"] for s in choice["series"]} == {b.reference.series_instance_uid,
                                                     load_ct_series(patients["a"]).reference.series_instance_uid}
    status, created, _ = station.call("POST", choice["choose"], {"series": b.reference.series_instance_uid})
    assert status == 201, created
    case_id = created["id"]
    predicting = station.wait_stage(case_id, ("preprocessing", "network"), timeout_s=300)
    assert predicting["series_uid"] == b.reference.series_instance_uid

    assert station.stop() == 0  # SIGTERM while the process predicts: the job goes back to the queue, nothing kept
    store = CaseStore(station.data)
    (job,) = store.case(case_id)["jobs"]
    assert job["status"] == "queued" and store.case(case_id)["status"] == "queued"
    assert not store.version_dir(case_id, 1).exists()
    node_case, node_job = _node_case(store, patients["b"])  # a CT the DICOM node received meanwhile

    station.start()
    listed = {c["id"]: c for c in station.call("GET", "/api/cases")[1]["cases"]}
    assert {case_id, node_case} <= set(listed) and listed[node_case]["source"] == "dicom"
    case = station.wait_case(case_id)
    assert case["status"] == "done", case
    assert [v["number"] for v in case["versions"]] == [1]
    assert [j["attempts"] for j in CaseStore(station.data).case(case_id)["jobs"]] == [1]  # stopped, not failed
    assert station.call("GET", f"/api/cases/{node_case}")[1]["status"] == "queued"  # the node's job, not ours

    private = [station.data, *(station.data / "cases" / case_id).rglob("*")]  # the station user's only
    assert [p for p in private if stat.S_IMODE(p.stat().st_mode) & 0o077] == []
    rtstruct = _download(station, case_id, "latest", "rtstruct.dcm", tmp_path)
    nifti = _download(station, case_id, "1", "ctv.nii.gz", tmp_path)
    ds = pydicom.dcmread(rtstruct)
    series = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == b.reference.series_instance_uid  # the chosen series, not the other
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == set(b.reference.sop_instance_uids)
    theirs = _plastimatch_masks(require_tool("plastimatch"), rtstruct, patients["b"], tmp_path / "pm")
    ours = sitk.Resample(sitk.ReadImage(str(nifti)), theirs["CTV"], sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    assert dice(sitk.GetArrayFromImage(ours) != 0, sitk.GetArrayFromImage(theirs["CTV"]) != 0) >= 0.97
    assert _download(station, case_id, "1", "qa.png", tmp_path).read_bytes()[:4] == b"\x89PNG"
    assert pydicom.dcmread(_download(station, case_id, "1", "seg.dcm", tmp_path)).Modality == "SEG"
    status, answer, _ = station.call("GET", f"/api/cases/{case_id}/versions/7/rtstruct.dcm")
    assert status == 404 and "versions are 1" in answer["message"]
    status, answer, _ = station.call("GET", f"/api/cases/{case_id}/versions/1/secret.txt")
    assert status == 404 and "has no 'secret.txt'" in answer["message"]

    # the node's prediction ends, held for review; approving it in the station sends it where the node would
    _finish_node_job(CaseStore(station.data), node_job, station.data / "cases" / case_id / "versions" / "1")
    node = station.call("GET", f"/api/cases/{node_case}")[1]
    assert node["status"] == DONE and [v["number"] for v in node["versions"]] == [1]
    status, answer, _ = station.call("POST", f"/api/cases/{node_case}/approve", {"version": "latest"})
    assert status == 400 and "your name" in answer["message"]  # an approval is always someone's
    status, approved, _ = station.call("POST", f"/api/cases/{node_case}/approve", {"version": "latest", "by": "dr b"})
    assert status == 200 and approved["released"] == [{"file": "rtstruct.dcm", "destination": NODE_DESTINATION}]
    (item,) = CaseStore(station.data).outbox.items()
    assert (item.status, item.version, item.destination) == (PENDING, 1, NODE_DESTINATION)
    assert CaseStore(station.data).case(node_case)["approved_version"] == 1
    (record,) = approved_records(CaseStore(station.data))  # approved as predicted: recorded unchanged
    assert record["context"]["case"] == node_case and record["context"]["case_source"] == "dicom"
    assert record["figures"]["unchanged"] is True and record["figures"]["dice"] == 1.0
    assert record["ai"]["model_name"] == "ctv-demo-phantom" and record["approved_by"] == "dr b"
    assert (station.data / "cases" / node_case / "versions" / "1" / "rtstruct.ai-edits.json").is_file()


def _node_case(store: CaseStore, ct_dir):
    for path in sorted(ct_dir.iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        store.inbox.add_instance(ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.SOPClassUID,
                                 path.read_bytes(), "SCANNER", "127.0.0.1")
    (series,) = store.inbox.due_series(0.0, 0.0)
    return store.inbox.open_series_case(series, model="", device="cpu", formats=("rtstruct",))


def _finish_node_job(store: CaseStore, job, prediction) -> None:
    claimed = store.claim_job("node")
    assert claimed.id == job.id
    for n, path in enumerate(store.inbox.series_files(store.case(claimed.case_id)["series_uid"])):
        shutil.copy(path, store.ct_dir(claimed.case_id) / f"{n:05d}.dcm")  # as the node links them before predicting
    shutil.copytree(prediction, store.version_dir(claimed.case_id, claimed.version))
    store.finish_job(claimed, model="ctv-demo-phantom 0.2.0", outbox=[("rtstruct.dcm", NODE_DESTINATION)], hold=True)
    assert [i.status for i in store.outbox.items()] == [HELD]


def _download(station: Station, case_id: str, version: str, name: str, tmp_path):
    status, data, headers = station.call("GET", f"/api/cases/{case_id}/versions/{version}/{name}")
    assert status == 200 and f"{case_id}-v" in headers["Content-Disposition"], (status, data)
    path = tmp_path / f"{version}-{name}"
    path.write_bytes(data)
    return path
