"""The case store the DICOM node and the review station share: durable, deduplicated, resumable."""

from __future__ import annotations

import pytest

from ctv_core.errors import PeerError, StoreError
from ctv_core.service.peers import AllowedPeer, Destination, admitted
from ctv_core.service.records import (DONE, FAILED, HELD, MAX_JOB_ATTEMPTS, PENDING, QUEUED, RECEIVING, RUNNING,
                                      SENT)
from ctv_core.service.store import CaseStore


CT = "1.2.840.10008.5.1.4.1.1.2"


def _receive(store: CaseStore, series: str, count: int, sender: str = "SCANNER") -> None:
    for n in range(count):
        store.inbox.add_instance(f"{series}.{n}", series, "1.2.3", CT, b"DICM" * 10, sender, "127.0.0.1")


def test_instances_are_filed_once_and_a_quiet_series_becomes_one_case_with_one_job(tmp_path):
    store = CaseStore(tmp_path)
    _receive(store, "9.1", 3)
    assert not store.inbox.add_instance("9.1.0", "9.1", "1.2.3", CT, b"other", "SCANNER", "127.0.0.1")  # duplicate
    files = store.inbox.series_files("9.1")
    assert len(files) == 3 and all(f.read_bytes() == b"DICM" * 10 for f in files)
    assert store.inbox.due_series(60.0, 600.0) == []  # still arriving
    quiet = store.inbox.due_series(0.0, 600.0)
    assert [s["uid"] for s in quiet] == ["9.1"] and quiet[0]["instances"] == 3
    case_id, job = store.inbox.open_series_case(quiet[0], model="", device="cpu", formats=("rtstruct",))
    assert store.inbox.due_series(0.0, 600.0) == []  # complete now
    assert job.version == 1 and job.status == QUEUED and store.case(case_id)["sender"] == "SCANNER"
    # a late instance re-opens the series, which keeps its case
    store.inbox.add_instance("9.1.99", "9.1", "1.2.3", CT, b"DICM", "SCANNER", "127.0.0.1")
    (again,) = store.inbox.due_series(0.0, 600.0)
    assert again["instances"] == 4 and again["case_id"] == case_id and again["state"] == RECEIVING


def test_restart_requeues_running_jobs_fails_them_after_repeated_stops_and_drops_unacknowledged_files(tmp_path):
    store = CaseStore(tmp_path)
    case_id = store.new_case("upload")
    job = store.queue_job(case_id)
    for attempt in range(1, MAX_JOB_ATTEMPTS + 1):
        claimed = store.claim_job()
        assert claimed.id == job.id and claimed.status == RUNNING and claimed.attempts == attempt
        partial = store.version_dir(case_id, job.version)
        partial.mkdir(parents=True)
        (partial / "rtstruct.dcm").write_bytes(b"half of a killed run's set")
        result = CaseStore(tmp_path).recover()  # the process died; a new one starts
        assert not partial.exists()  # a job not done has no version folder
        if attempt < MAX_JOB_ATTEMPTS:
            assert result["requeued"] == 1 and store.job(job.id).status == QUEUED
    assert store.job(job.id).status == FAILED and "stopped 3 times" in store.case(case_id)["message"]
    half = tmp_path / "incoming" / "0123456789abcdef"
    half.mkdir(parents=True)
    (half / ".x.tmp").write_bytes(b"partial")
    (half / "unindexed.dcm").write_bytes(b"never acknowledged")
    assert CaseStore(tmp_path).recover()["removed_partial_files"] == 2 and not half.exists()  # nor its folder


def test_finished_jobs_fill_the_outbox_held_until_approved_and_failed_sends_wait_for_resend(tmp_path):
    store = CaseStore(tmp_path)
    case_id = store.new_case("dicom", sender="TPS")
    store.queue_job(case_id)
    job = store.claim_job()
    store.finish_job(job, model="m 1", outbox=[("rtstruct.dcm", "TPS@h:104")], hold=True)
    assert store.case(case_id)["status"] == DONE and store.outbox.due() == []
    assert [i.status for i in store.outbox.items()] == [HELD]
    edit = store.reserve_version(case_id)
    store.record_version(case_id, edit, "edit", author="dr x")
    store.outbox.approve(case_id, edit, ["TPS@h:104"])
    (item,) = store.outbox.due()
    assert item.version == edit and item.status == PENDING  # the approved (edited) version goes, not the first
    store.outbox.send_failed(item, "down", retry_in_s=30.0)
    assert store.outbox.due() == []  # backing off
    store.outbox.send_failed(store.outbox.items()[0], "still down", retry_in_s=None)
    assert store.outbox.items()[0].status == FAILED and store.outbox.items()[0].last_error == "still down"
    assert store.outbox.resend() == 1
    (again,) = store.outbox.due()
    store.outbox.sent(again)
    assert store.outbox.items([SENT])[0].attempts == 1 and store.outbox.items() == []  # resend counts afresh
    assert store.summary()["outbox"] == {SENT: 1}


def test_versions_are_numbered_past_reserved_and_queued_ones(tmp_path):
    store = CaseStore(tmp_path)
    case_id = store.new_case("upload")
    first = store.queue_job(case_id)
    assert first.version == 1
    assert store.reserve_version(case_id) == 2
    assert store.queue_job(case_id, kind="rerun").version == 3
    assert store.version_dir(case_id, 3) == tmp_path / "cases" / case_id / "versions" / "3"


def test_a_damaged_index_or_unwritable_folder_is_a_clear_error(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="damaged"):
        CaseStore(tmp_path / "bad")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot be created"):
        CaseStore(tmp_path / "file")


def test_peers_parse_and_admit():
    assert str(Destination.parse("TPS@10.0.0.5:104")) == "TPS@10.0.0.5:104"
    for bad in ("TPS@host", "@h:1", "TPS@h:0", "A" * 17 + "@h:104", "T\\P@h:1"):
        with pytest.raises(PeerError):
            Destination.parse(bad)
    allowed = (AllowedPeer.parse("CT1@127.0.0.1"), AllowedPeer.parse("PACS"))
    assert admitted(allowed, "CT1", "127.0.0.1") and admitted(allowed, "PACS", "10.1.1.1")
    assert not admitted(allowed, "CT1", "10.1.1.1") and not admitted(allowed, "CT2", "127.0.0.1")
    assert admitted((), "ANYONE", "10.1.1.1")
