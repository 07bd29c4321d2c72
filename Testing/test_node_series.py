"""The node's series without the network (issue 26): completeness by what the images say, what the store records of
a series (incomplete, released, grown after its case, a trickle), replaced versions' unsent files, the index
upgraded from schema 1, and the cheap look at a file before any parse."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset
from conftest import axial_grid, ctv_command, write_linear_series

from ctv_core.dicom.completeness import assess_completeness
from ctv_core.dicom.files import looks_like_dicom, read_dicom_header
from ctv_core.errors import StoreError
from ctv_core.service.records import (COMPLETE, HELD, INCOMPLETE, PENDING, QUEUED, RECEIVING, RELEASED, SENT,
                                      SUPERSEDED)
from ctv_core.service.store import CaseStore

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def series(tmp_path) -> list[Path]:
    folder = write_linear_series(tmp_path / "ct", axial_grid(size=(16, 16, 12)))
    return sorted(folder.iterdir(), key=lambda p: int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber))


def _headers(paths):
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


def test_completeness_by_what_the_images_say(series):
    assert assess_completeness(_headers(series)).complete
    gap = assess_completeness(_headers(series[:5] + series[6:]))
    assert not gap.complete and "1 slice(s) missing over 33.0 mm at 3.00 mm spacing" in gap.describe()
    assert any("InstanceNumbers run from 1 to 12 with 1 missing" in p for p in gap.problems)
    # the images cannot tell that slices are missing at an end: the node adds how the transfer ended
    assert assess_completeness(_headers(series[:-2])).complete
    counted = _headers(series[:-2])
    for ds in counted:
        ds.ImagesInAcquisition = 12
    assert "the images say their acquisition has 12 images; 10 arrived" in assess_completeness(counted).describe()
    twice = _headers(series)
    twice[3].ImagePositionPatient = twice[4].ImagePositionPatient
    assert "two or more slices lie at one position" in assess_completeness(twice).describe()
    turned = _headers(series)
    turned[2].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    assert "2 different orientations" in assess_completeness(turned).describe()
    del turned[0].ImagePositionPatient
    assert "1 slice(s) without ImagePositionPatient" in assess_completeness(turned).describe()


def _add(store: CaseStore, paths, sender="SCANNER") -> str:
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        store.inbox.add_instance(ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, CT, path.read_bytes(),
                                 sender, "127.0.0.1")
    return str(ds.SeriesInstanceUID)


def test_a_series_is_judged_incomplete_released_and_grown_without_losing_its_case(series, tmp_path):
    store = CaseStore(tmp_path / "data")
    uid = _add(store, series[:8])
    store.transfer_ended([uid], interrupted=True)  # its association was aborted
    (due,) = store.inbox.due_series(0.0, 600.0)
    verdict = store.inbox.assess(due)
    assert not verdict.complete and "ended without release" in verdict.describe()
    _add(store, series[8:9])  # an instance arrives between the verdict and its record: the verdict waits
    assert not store.mark_series_incomplete(due, verdict.describe())
    (due,) = store.inbox.due_series(0.0, 600.0)
    assert store.mark_series_incomplete(due, "9 slice(s): cut short")
    assert store.inbox.due_series(0.0, 600.0) == []
    assert store.series((INCOMPLETE,))[0]["note"] == "9 slice(s): cut short"
    assert store.release_series("1.2.3.4") is None  # not a series of this store
    released = store.release_series(uid)
    assert released["state"] == RELEASED and store.release_series(uid) is None  # released once
    (due,) = store.inbox.due_series(600.0, 600.0)  # an operator's release is due at once
    case_id, job = store.inbox.open_series_case(due, model="", device="cpu", formats=("rtstruct",), released=True)
    assert "released incomplete by an operator" in store.case(case_id)["description"] and job.version == 1
    assert store.series((COMPLETE,))[0]["case_id"] == case_id

    _add(store, series[9:11])  # more arrives, on an association that ends by release
    store.transfer_ended([uid], interrupted=False)
    (due,) = store.inbox.due_series(0.0, 600.0)
    assert due["state"] == RECEIVING and due["case_id"] == case_id and store.inbox.assess(due).complete
    assert store.update_series_case(due, model="", device="cpu", formats=("rtstruct",)) is None  # job 1 will see it
    assert store.inbox.due_series(0.0, 600.0) == []
    store.claim_job("node")  # job 1 starts
    _add(store, series[11:])  # and the last slice comes after it started: a new version
    (due,) = store.inbox.due_series(0.0, 600.0)
    second = store.update_series_case(due, model="", device="cpu", formats=("rtstruct",))
    assert second.version == 2 and second.kind == "update" and second.status == QUEUED
    assert len(store.cases()) == 1  # one case per series, however it grew


def test_a_trickle_cannot_keep_a_series_open(series, tmp_path):
    store = CaseStore(tmp_path / "data")
    uid = _add(store, series[:3])
    db = sqlite3.connect(tmp_path / "data" / "index.sqlite")
    db.execute("UPDATE series SET opened = ? WHERE uid = ?", (time.time() - 700, uid))  # open for 700 s
    db.commit()
    _add(store, series[3:4])  # and an instance just arrived: never quiet for 30 s
    assert [s["uid"] for s in store.inbox.due_series(30.0, 600.0)] == [uid]
    assert store.inbox.due_series(30.0, 800.0) == []


def test_a_new_version_supersedes_the_unsent_files_of_earlier_ones(tmp_path):
    store = CaseStore(tmp_path)
    case_id = store.new_case("dicom", sender="CT1")
    store.queue_job(case_id, queue="node")
    first = store.claim_job("node")
    store.finish_job(first, model="m", outbox=[("rtstruct.dcm", "TPS@h:1"), ("rtstruct.dcm", "PACS@h:2")])
    sent = store.outbox.due()[0]
    store.outbox.sent(sent)
    second = store.queue_job(case_id, queue="node", kind="update")
    store.claim_job("node")
    assert store.finish_job(second, model="m", outbox=[("rtstruct.dcm", "TPS@h:1"), ("rtstruct.dcm", "PACS@h:2")],
                            supersede_earlier=True) == 1
    items = store.outbox.items((SENT, SUPERSEDED, PENDING))
    assert sorted((i.version, i.destination, i.status) for i in items) == [
        (1, "PACS@h:2", SUPERSEDED), (1, "TPS@h:1", SENT), (2, "PACS@h:2", PENDING), (2, "TPS@h:1", PENDING)]
    assert "replaced by version 2" in next(i for i in items if i.status == SUPERSEDED).last_error
    third = store.queue_job(case_id, queue="node", kind="update")
    store.claim_job("node")
    store.finish_job(third, model="m", outbox=[("rtstruct.dcm", "TPS@h:1")], hold=True, supersede_earlier=True)
    assert [(i.version, i.status) for i in store.outbox.items((HELD, PENDING))] == [(3, HELD)]


SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE cases (id TEXT PRIMARY KEY, created TEXT NOT NULL, source TEXT NOT NULL, sender TEXT NOT NULL DEFAULT '',
    study_uid TEXT NOT NULL DEFAULT '', series_uid TEXT NOT NULL DEFAULT '', description TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', approved_version INTEGER);
CREATE TABLE series (uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, sender TEXT NOT NULL, host TEXT NOT NULL,
    first_received REAL NOT NULL, last_received REAL NOT NULL, instances INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL, case_id TEXT);
CREATE TABLE instances (sop_uid TEXT PRIMARY KEY, series_uid TEXT NOT NULL, sop_class TEXT NOT NULL, path TEXT NOT NULL,
    received REAL NOT NULL);
INSERT INTO meta VALUES ('schema', '1');
INSERT INTO series VALUES ('1.2.3', '1.2', 'CT1', '127.0.0.1', 100.0, 110.0, 1, 'receiving', NULL);
INSERT INTO instances VALUES ('1.2.3.1', '1.2.3', '1.2.840.10008.5.1.4.1.1.2', 'incoming/1.2.3/1.2.3.1.dcm', 110.0);
"""


def test_an_index_of_schema_1_is_upgraded_in_place_and_its_files_kept(tmp_path):
    db = sqlite3.connect(tmp_path / "index.sqlite")
    db.executescript(SCHEMA_1)
    db.close()
    (tmp_path / "incoming" / "1.2.3").mkdir(parents=True)
    (tmp_path / "incoming" / "1.2.3" / "1.2.3.1.dcm").write_bytes(b"DICM")
    store = CaseStore(tmp_path)
    (series,) = store.series((RECEIVING,))
    assert series["instances"] == 1 and len(series["folder"]) == 16 and series["opened"] == 100.0
    assert store.recover()["removed_partial_files"] == 0  # the old layout's file is still indexed and kept
    assert store.inbox.series_files("1.2.3") == [tmp_path / "incoming" / "1.2.3" / "1.2.3.1.dcm"]
    assert sqlite3.connect(tmp_path / "index.sqlite").execute("SELECT value FROM meta").fetchone()[0] == "3"
    CaseStore(tmp_path)  # opens again as schema 3 (1 -> 2 -> 3 in one go)


def test_paths_outside_the_data_folder_and_foreign_case_ids_are_refused(tmp_path):
    store = CaseStore(tmp_path / "data")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data" / "cases" / "20990101-000000-abcdef").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StoreError, match="outside the data folder"):
        store.version_dir("20990101-000000-abcdef", 1)
    for case_id in ("../x", "20990101-000000-ABCDEF", "", "a/b"):
        with pytest.raises(StoreError, match="not a case id"):
            store.case_dir(case_id)
    with pytest.raises(ValueError, match="not a checked UID"):
        store.inbox.add_instance("1.2", "../x", "1.2", CT, b"DICM", "A", "127.0.0.1")


def test_ctv_node_release_names_what_is_wrong(tmp_path, series):
    store = CaseStore(tmp_path / "data")
    uid = _add(store, series[:4])
    for argument, words in (("../x", "is not a DICOM UID"), (uid, "No incomplete series")):
        done = subprocess.run([ctv_command(), "node", "release", argument, "--data", str(tmp_path / "data")],
                              capture_output=True, text=True)
        assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr, done.stderr
    (due,) = store.inbox.due_series(0.0, 600.0)
    store.mark_series_incomplete(due, "4 slice(s): cut short")
    done = subprocess.run([ctv_command(), "node", "release", uid, "--data", str(tmp_path / "data")],
                          capture_output=True, text=True)
    assert done.returncode == 0 and f"series {uid} released" in done.stdout
    assert "released as it is by" in (tmp_path / "data" / "audit.log").read_text()
    status = subprocess.run([ctv_command(), "node", "status", "--data", str(tmp_path / "data")], capture_output=True,
                            text=True, check=True).stdout
    assert f"series {uid} from SCANNER: RELEASED, 4 instance(s) -- 4 slice(s): cut short" in status


def test_a_file_is_looked_at_before_it_is_parsed(tmp_path, series):
    zeros = tmp_path / "zeros.dcm"
    zeros.write_bytes(bytes(128) + b"DICM" + bytes(20 << 20))  # "DICM", then 20 MB of nothing
    plain = tmp_path / "zeros.bin"
    plain.write_bytes(bytes(20 << 20))
    assert not looks_like_dicom(zeros) and not looks_like_dicom(plain)
    assert looks_like_dicom(series[0])
    bare = tmp_path / "bare.dcm"  # a data set without preamble and meta, as some exports write them
    with open(bare, "wb") as handle:
        out = DicomFileLike(handle)
        out.is_little_endian, out.is_implicit_VR = True, False
        write_dataset(out, pydicom.dcmread(series[0]))
    assert looks_like_dicom(bare) and "SOPClassUID" in read_dicom_header(bare, force=True)
    # a real first element, then zeros: reading stops at the first element out of order
    forged = tmp_path / "forged.dcm"
    forged.write_bytes(series[0].read_bytes()[:400] + bytes(20 << 20))
    with open(forged, "rb") as handle:
        read_dicom_header(handle, force=True)
        assert handle.tell() < 1000
