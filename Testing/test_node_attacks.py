"""``ctv node`` against a hostile peer (issue 26): each attack replayed by a real pynetdicom client (and raw bytes
on the socket) against the real node process, with the defended outcome asserted.

* path-like UIDs and a forged structure set: refused with their C-STORE status, nothing written anywhere,
  the case's RTSTRUCT untouched (what the attack replaced before, ``ctv node resend`` then delivered);
* what a hostile UID left on disk (an older node's folders, links, index rows): quarantined, the node starts;
* an oversized instance: refused as it arrives (0xA700), the association goes on; a PDU of 1 GB closes
  the connection at once;
* callers outside the allow list and past the association bounds: A-ASSOCIATE-RJ, not an abort;
* an association aborted in the middle of a series, then the rest of it: nothing delineated from half a
  series, one case and one RTSTRUCT once it is whole;
* the rest of a series arriving after an operator released (and the node delineated) its first part: the
  same case, a new version whose RTSTRUCT replaces the first in the same series.
"""

from __future__ import annotations

import copy
import io
import socket
import sqlite3
import struct
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from conftest import ctv_command
from node_support import Node, Peer, nodes_stopped, pacs_and_node, wait_for  # noqa: F401 - two fixtures
from orthanc import free_port
from pydicom.uid import generate_uid

from ctv_core import load_ct_series
from ctv_core.phantom import ScanSettings, make_phantom
from ctv_core.service.records import FAILED
from ctv_core.service.store import CaseStore

PHANTOM = ScanSettings(matrix=256, slice_thickness_mm=5.0)
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Where the first part of a series ends when its association is aborted.
FIRST_PART = 50


@pytest.fixture(scope="module")
def patient(tmp_path_factory) -> Path:
    return make_phantom(tmp_path_factory.mktemp("attack_patient") / "p", seed=23, settings=PHANTOM).ct_dir.parent


def _slices(patient: Path) -> list[Path]:
    """The CT's files in slice order (InstanceNumber)."""
    files = sorted((patient / "ct").iterdir())
    return sorted(files, key=lambda p: int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber))


def _file(ds: pydicom.Dataset, path: Path, *, request_class: str | None = None, request_uid: str | None = None,
          cut: int = 0) -> Path:
    """``ds`` as a file whose meta (which makes the C-STORE request) may differ from the data set, optionally
    with its last ``cut`` bytes missing (sent as it is, bytes and all)."""
    ds = copy.deepcopy(ds)
    ds.file_meta.MediaStorageSOPClassUID = request_class or ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = request_uid or ds.SOPInstanceUID
    ds.save_as(path)
    if cut:
        path.write_bytes(path.read_bytes()[:-cut])
    return path


def _files_outside(root: Path, data: Path) -> set[Path]:
    """Files under ``root`` but not under ``data`` (nor the test's own, under ``root/sent``)."""
    return {p for p in root.rglob("*") if p.is_file() and data not in p.parents and root / "sent" not in p.parents}


def test_path_like_uids_and_a_forged_structure_set_are_refused_and_nothing_is_written(patient, tmp_path):
    data = tmp_path / "deep" / "a" / "b" / "data"
    node = Node(data, free_port()).start()
    # a case whose RTSTRUCT could not be sent: what the forged structure set replaced before
    store = CaseStore(data)
    case_id = store.new_case("dicom", sender="SCANNER")
    job = store.queue_job(case_id, queue="node")
    store.claim_job("node")
    version = store.version_dir(case_id, job.version)
    version.mkdir(parents=True)
    genuine = (patient / "truth.dcm").read_bytes()
    (version / "rtstruct.dcm").write_bytes(genuine)
    store.finish_job(job, model="m 1", outbox=[("rtstruct.dcm", "TPS@127.0.0.1:1")])
    store.outbox.send_failed(store.outbox.items()[0], "down", retry_in_s=None)
    assert [i.status for i in store.outbox.items()] == [FAILED]
    before = _files_outside(tmp_path, data)

    ct = pydicom.dcmread(_slices(patient)[0])
    forged = pydicom.dcmread(patient / "truth.dcm")  # a structure set, to be passed off as a CT slice
    sent = tmp_path / "sent"
    sent.mkdir()
    peer = Peer(node.port)
    assoc = peer.associate()
    assert assoc.is_established
    statuses = {}
    for name, series in (("climbs out", "../../../../elsewhere/x"), ("absolute", str(tmp_path / "abs" / "x")),
                         ("a folder", "1.2.3/..."), ("into the case", f"../cases/{case_id}/versions/1")):
        ds = copy.deepcopy(ct)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        statuses[name] = peer.store(assoc, ds)
    forged.SeriesInstanceUID = f"../cases/{case_id}/versions/1"
    statuses["instance 'rtstruct'"] = peer.store(assoc, _file(forged, sent / "f1.dcm", request_class=CT_STORAGE,
                                                                 request_uid="rtstruct"))
    forged.SeriesInstanceUID = generate_uid()
    statuses["RTSTRUCT sent as CT"] = peer.store(assoc, _file(forged, sent / "f2.dcm", request_class=CT_STORAGE))
    statuses["request and data set disagree"] = peer.store(assoc, _file(ct, sent / "f3.dcm",
                                                                        request_uid=generate_uid()))
    statuses["RT Structure Set Storage"] = peer.store(assoc, pydicom.dcmread(patient / "truth.dcm"))
    truncated = copy.deepcopy(ct)
    truncated.SOPInstanceUID = generate_uid()
    statuses["truncated"] = peer.store(assoc, _file(truncated, sent / "f4.dcm", cut=10_000))
    assoc.release()
    assert statuses == {"climbs out": 0xC000, "absolute": 0xC000, "a folder": 0xC000, "into the case": 0xC000,
                        "instance 'rtstruct'": 0x0117, "RTSTRUCT sent as CT": 0xA900,
                        "request and data set disagree": 0xA900, "RT Structure Set Storage": 0x0122,
                        "truncated": 0xC000}, node.audit()
    refused = [line for line in node.audit() if " refused " in line]
    assert len(refused) == len(statuses)
    assert any("'../../../../elsewhere/x' is not a DICOM UID" in line for line in refused)
    assert any("truncated: the pixel data declare" in line for line in refused)
    assert (version / "rtstruct.dcm").read_bytes() == genuine
    assert _files_outside(tmp_path, data) == before  # nothing written outside the data folder
    assert not (tmp_path / "abs").exists() and not (tmp_path / "deep" / "elsewhere").exists()
    assert list((data / "incoming").rglob("*.dcm")) == []  # and nothing filed inside it
    assert sqlite3.connect(data / "index.sqlite").execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 0
    node.stop()
    assert node.start().process.poll() is None  # restarts as before


def test_what_an_older_node_left_from_hostile_uids_is_quarantined_and_the_node_starts(tmp_path):
    data = tmp_path / "data"
    store = CaseStore(data)
    incoming = data / "incoming"
    (incoming / "1.2.3" / "...").mkdir(parents=True)  # series '1.2.3/...': a folder where a file belongs
    (incoming / "1.2.3" / "..." / "1.2.3.4.dcm").write_bytes(b"DICM")
    (incoming / "stray.txt").write_text("not the node's")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("someone else's")
    (incoming / "elsewhere").symlink_to(outside)
    db = sqlite3.connect(data / "index.sqlite")
    db.execute("INSERT INTO instances VALUES ('1.2.9', '1.2.8', ?, '../elsewhere/x/1.2.9.dcm', 0)", (CT_STORAGE,))
    db.commit()
    db.close()
    del store

    node = Node(data, free_port()).start()  # starts: before, it stopped at "a folder stands where a file was expected"
    line = node.wait_audit(" quarantine ")
    assert "moved to" in line and "1 index entr" in line
    (moved,) = (data / "quarantine").iterdir()
    assert (moved / "1.2.3" / "..." / "1.2.3.4.dcm").read_bytes() == b"DICM"
    assert (moved / "stray.txt").is_file() and (moved / "elsewhere").is_symlink()
    assert (outside / "keep.txt").read_text() == "someone else's"  # the link was moved, never followed
    assert sorted(p.name for p in incoming.iterdir()) == [".receiving"]
    assert node.status()["quarantine"] == [moved.name]
    assert sqlite3.connect(data / "index.sqlite").execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 0


def test_an_oversized_instance_is_refused_as_it_arrives_and_a_huge_pdu_closes_the_connection(patient, tmp_path):
    node = Node(tmp_path / "data", free_port(), "--max-instance-mb", "1").start()
    ct = pydicom.dcmread(_slices(patient)[0])
    big = copy.deepcopy(ct)
    big.SOPInstanceUID, big.Rows, big.Columns = generate_uid(), 2048, 2048
    big.PixelData = bytes(2048 * 2048 * 2)  # 8 MB
    peer = Peer(node.port)
    assoc = peer.associate()
    assert peer.store(assoc, big) == 0xA700
    assert peer.store(assoc, ct) == 0x0000  # the association goes on
    assert "larger than the node's limit of 1 MB" in node.wait_audit(" refused ")
    assert list((tmp_path / "data" / "incoming" / ".receiving").iterdir()) == []
    # a P-DATA-TF PDU that says it is 1 GB long: the node closes the connection rather than wait to read it
    connection = assoc.dul.socket.socket
    connection.sendall(struct.pack(">BBL", 0x04, 0, 1 << 30) + bytes(1000))
    wait_for(lambda: assoc.is_aborted, 10, "the node closing the connection")
    again = peer.associate()
    assert again.is_established and again.send_c_echo().Status == 0  # the node serves on
    again.release()


def test_callers_refused_by_the_allow_list_or_the_bounds_get_an_associate_rj(patient, tmp_path):
    node = Node(tmp_path / "data", free_port(), "--allow", "SCANNER@127.0.0.1", "--max-associations", "3",
                "--max-associations-per-peer", "2").start()
    stranger = Peer(node.port).associate()
    assert stranger.is_rejected and not stranger.is_aborted
    assert "ATTACKER@127.0.0.1: not in the allow list" in node.wait_audit("association-rejected")
    scanner = Peer(node.port, "SCANNER")
    held = [scanner.associate(), scanner.associate()]
    assert all(a.is_established for a in held)
    third = scanner.associate()
    assert third.is_rejected and not third.is_aborted
    assert third.acceptor.primitive.result == 0x02 and third.acceptor.primitive.diagnostic == 0x02  # transient, limit
    other_address = scanner.ae.associate("127.0.0.1", node.port, ae_title="CTVNODE", bind_address=("127.0.0.2", 0))
    assert other_address.is_rejected  # the allow list names 127.0.0.1 only
    held[0].release()
    time.sleep(0.5)
    replacement = scanner.associate()
    assert replacement.is_established
    for assoc in (held[1], replacement):
        assoc.release()
    rejected = [line for line in node.audit() if "association-rejected" in line]
    assert any("(--max-associations-per-peer)" in line for line in rejected)


def test_the_total_association_bound_counts_every_peer(tmp_path):
    node = Node(tmp_path / "data", free_port(), "--max-associations", "2", "--max-associations-per-peer", "2").start()
    peer = Peer(node.port)
    first = peer.associate()
    second = peer.ae.associate("127.0.0.1", node.port, ae_title="CTVNODE", bind_address=("127.0.0.2", 0))
    assert first.is_established and second.is_established
    third = peer.ae.associate("127.0.0.1", node.port, ae_title="CTVNODE", bind_address=("127.0.0.3", 0))
    assert third.is_rejected and not third.is_aborted
    assert "(--max-associations)" in node.wait_audit("association-rejected")
    first.release()
    second.release()


def _rtstructs(pacs) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(io.BytesIO(pacs.instance_file(i)))
            for series in pacs.series_of_modality("RTSTRUCT") for i in series["Instances"]]


def _referenced_slices(rs: pydicom.Dataset) -> set[str]:
    series = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    return {item.ReferencedSOPInstanceUID for item in series.ContourImageSequence}


def test_half_a_series_from_an_aborted_association_is_not_delineated_and_the_rest_makes_it_whole(
        pacs_and_node, patient):
    pacs, node = pacs_and_node
    running = node().start()
    slices = _slices(patient)
    ct = load_ct_series(patient / "ct")
    peer = Peer(running.port)
    assert peer.send_series(slices, abort_after=FIRST_PART) == [0] * FIRST_PART
    line = running.wait_audit(" series-incomplete ")
    assert "ended without release" in line and "ctv node release" in line
    (series,) = running.status()["series"]
    assert series["state"] == "incomplete" and series["instances"] == FIRST_PART
    time.sleep(2)  # several series timeouts: still nothing
    assert running.status()["cases"] == [] and pacs.series_of_modality("RTSTRUCT") == []

    assert peer.send_series(slices[FIRST_PART:]) == [0] * (len(slices) - FIRST_PART)
    running.rtstructs(pacs, 1)
    running.settled()  # whatever it would still send has gone: a duplicate would be in the PACS now
    (rs,) = _rtstructs(pacs)
    assert _referenced_slices(rs) == set(ct.reference.sop_instance_uids)  # the whole CT
    status = running.status()
    assert len(status["cases"]) == 1 and status["summary"]["jobs"] == {"done": 1}


def test_the_rest_of_a_released_series_replaces_its_rtstruct_in_the_same_series(pacs_and_node, patient):
    pacs, node = pacs_and_node
    running = node().start()
    slices = _slices(patient)
    ct = load_ct_series(patient / "ct")
    peer = Peer(running.port)
    peer.send_series(slices, abort_after=FIRST_PART)
    running.wait_audit(" series-incomplete ")
    released = subprocess.run([ctv_command(), "node", "release", ct.reference.series_instance_uid, "--data",
                               str(running.data)], capture_output=True, text=True)
    assert released.returncode == 0 and "released" in released.stdout, released.stderr
    assert "released as it is by" in running.wait_audit(" series-released ")
    running.rtstructs(pacs, 1)
    (first,) = _rtstructs(pacs)
    assert len(_referenced_slices(first)) == FIRST_PART

    peer.send_series(slices[FIRST_PART:])
    running.wait_audit(" series-updated ")
    running.wait_working(lambda: len(_rtstructs(pacs)) == 2, "the replacing RTSTRUCT in the PACS")
    running.settled()  # a third would be in the PACS now
    (series,) = pacs.series_of_modality("RTSTRUCT")  # one structure-set series for the CT
    assert len(series["Instances"]) == 2
    latest = max(_rtstructs(pacs), key=lambda rs: int(rs.InstanceNumber))
    assert int(latest.InstanceNumber) == 2 and latest.SeriesInstanceUID == first.SeriesInstanceUID
    assert latest.PredecessorStructureSetSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert _referenced_slices(latest) == set(ct.reference.sop_instance_uids)
    (case,) = running.status()["cases"]
    store = CaseStore(running.data)
    assert [v["number"] for v in store.case(case["id"])["versions"]] == [1, 2]
    assert [(i.version, i.status) for i in store.outbox.items(("sent",))] == [(1, "sent"), (2, "sent")]


def test_a_connection_that_never_asks_for_an_association_holds_no_place(tmp_path):
    node = Node(tmp_path / "data", free_port(), "--max-associations", "1").start()
    silent = socket.create_connection(("127.0.0.1", node.port))  # never sends an A-ASSOCIATE-RQ
    try:
        assoc = Peer(node.port).associate()
        assert assoc.is_established  # a bare connection is not an association
        assoc.release()
    finally:
        silent.close()
