"""What an upload may put on disk, and how the station's desk turns one into a case (no server, no Slicer):
zip-slip, links, bad and oversized zips, file limits, non-DICOM members, MR, several series."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pydicom
import pytest
from conftest import axial_grid, write_linear_series

from ctv_core.errors import MultipleSeriesError, NotCTError, UploadError, UploadTooCostlyError, UploadTooLargeError
from ctv_core.service.jobs import prediction_arguments
from ctv_core.service.review.config import StationConfig
from ctv_core.service.review.desk import Received, ReviewDesk, SeriesChoice
from ctv_core.service.review.uploads import MB, CPUBudget, UploadContents, UploadLimits, add_received


def _zip(members: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zipped.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _receive(tmp_path: Path, data: bytes, limits: UploadLimits = UploadLimits()) -> UploadContents:
    folder = tmp_path / "upload" / "files"
    folder.mkdir(parents=True)
    contents = UploadContents(folder, limits)
    received = tmp_path / "upload" / ".body"
    received.write_bytes(data)
    add_received(received, "upload", contents)
    return contents


@pytest.mark.parametrize("name", ["../evil.dcm", "ct/../../evil.dcm", "/tmp/evil.dcm", "C:/evil.dcm",
                                  "..\\evil.dcm"])
def test_a_member_leaving_the_folder_refuses_the_upload_and_writes_nothing_outside(tmp_path, name):
    with pytest.raises(UploadError, match="leaves the upload's folder"):
        _receive(tmp_path, _zip({"ct/1.dcm": b"x" * 10, name: b"evil"}))
    assert not (tmp_path / "evil.dcm").exists() and not Path("/tmp/evil.dcm").exists()
    assert not any(p.name == "evil.dcm" for p in tmp_path.rglob("*"))


def test_links_encryption_and_broken_zips_are_refused(tmp_path):
    with pytest.raises(UploadError, match="symbolic link"):
        _receive(tmp_path / "a", _zip({"ct/1.dcm": b"x"}, links=("ct/passwd",)))
    assert not (tmp_path / "a" / "upload" / "files" / "ct" / "passwd").exists()
    good = _zip({"ct/1.dcm": b"x" * 1000})
    with pytest.raises(UploadError, match="not a readable zip"):
        _receive(tmp_path / "b", good[: len(good) // 2])  # cut off in transit: looks like a zip, is not one
    encrypted = bytearray(good)
    encrypted[6] |= 0x1  # the local header's flag: encrypted
    central = encrypted.rfind(b"PK\x01\x02")
    encrypted[central + 8] |= 0x1
    with pytest.raises(UploadError, match="encrypted"):
        _receive(tmp_path / "c", bytes(encrypted))


def test_limits_count_what_is_unpacked_not_what_the_zip_claims(tmp_path):
    bomb = _zip({"ct/zeros.dcm": bytes(3 * MB)})  # a few kilobytes that unpack to 3 MB
    assert len(bomb) < 100_000
    limits = UploadLimits(max_upload_bytes=MB, max_unpacked_bytes=2 * MB, max_files=3)
    with pytest.raises(UploadTooLargeError, match="more than 2 MB"):
        _receive(tmp_path / "a", bomb, limits)
    with pytest.raises(UploadError, match="at most 3"):
        _receive(tmp_path / "b", _zip({f"ct/{n}.dcm": b"x" for n in range(4)}), limits)
    with pytest.raises(UploadError, match="twice"):
        _receive(tmp_path / "c", _duplicate_zip())


def _duplicate_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped, pytest.warns(UserWarning):
        zipped.writestr("ct/1.dcm", b"x")
        zipped.writestr("ct/1.dcm", b"y")
    return buffer.getvalue()


def test_files_are_owner_only_and_a_plain_file_keeps_its_base_name_only(tmp_path):
    contents = _receive(tmp_path, _zip({"study/ct/1.dcm": b"x" * 10}))
    unpacked = contents.folder / "upload" / "study" / "ct" / "1.dcm"
    assert unpacked.read_bytes() == b"x" * 10 and stat.S_IMODE(unpacked.stat().st_mode) == 0o600
    received = tmp_path / "upload" / ".part"
    received.write_bytes(b"DICM")
    add_received(received, "../../x/../slice 1.dcm", contents)
    assert (contents.folder / "slice 1.dcm").read_bytes() == b"DICM" and contents.files == 2


# --- the desk: the loader's checks, the series choice, the case ---------------------------------------

@pytest.fixture
def desk(tmp_path):
    return ReviewDesk(StationConfig(data=tmp_path / "data"), {"demo 1": ""})


def _upload(desk: ReviewDesk, source: Path, extra: dict[str, bytes] | None = None) -> tuple[str, UploadContents]:
    upload, contents = desk.new_upload()
    members = {p.relative_to(source.parent).as_posix(): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    received = contents.folder.parent / ".body"
    received.write_bytes(_zip({**members, **(extra or {})}))
    add_received(received, "upload", contents)
    return upload, contents


def test_non_dicom_members_are_dropped_with_a_note_and_the_case_keeps_the_ct(desk, tmp_path):
    grid = axial_grid(size=(20, 20, 6))
    upload, contents = _upload(desk, write_linear_series(tmp_path / "ct", grid), {"ct/README.txt": b"hello"})
    received = desk.receive(upload, contents)
    assert isinstance(received, Received)
    assert "README.txt" in received.note and "ignored" in received.note
    case = desk.store.case(received.case_id)
    assert case["status"] == "queued" and [j["queue"] for j in case["jobs"]] == ["station"]
    ct_files = sorted(p.name for p in desk.store.ct_dir(received.case_id).rglob("*") if p.is_file())
    assert len(ct_files) == 6 and "README.txt" not in ct_files
    assert not (desk.uploads / upload).exists()  # moved into the case, nothing left behind
    assert received.ct.image.GetSize() == grid.size
    case_ct = desk.store.ct_dir(received.case_id)
    assert received.ct.folder == case_ct and all(Path(s.path).is_file() and Path(s.path).is_relative_to(case_ct)
                                                 for s in received.ct.reference.slices)  # writers re-read them


def test_mr_is_refused_with_the_loaders_message_and_nothing_is_kept(desk, tmp_path):
    folder = write_linear_series(tmp_path / "mr", axial_grid(size=(20, 20, 4)))
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.save_as(path)
    upload, contents = _upload(desk, folder)
    with pytest.raises(NotCTError, match=r"no CT image series[\s\S]*\[MR\]"):
        desk.receive(upload, contents)
    assert desk.store.cases() == [] and (desk.uploads / upload).exists()  # left to its request, which removes it


def test_two_series_wait_for_a_choice_and_the_chosen_one_is_predicted(desk, tmp_path):
    write_linear_series(tmp_path / "two" / "a", axial_grid(size=(20, 20, 5)))
    write_linear_series(tmp_path / "two" / "b", axial_grid(size=(20, 20, 7)))
    upload, contents = _upload(desk, tmp_path / "two")
    choice = desk.receive(upload, contents)
    assert isinstance(choice, SeriesChoice) and desk.store.cases() == []
    assert sorted(s["files"] for s in choice.series) == [5, 7]
    chosen = next(s["uid"] for s in choice.series if s["files"] == 7)
    assert desk.claim(upload) is None  # not kept: its request did not answer with a choice
    desk.keep(upload)
    assert desk.claim("../x") is None
    name, kept = desk.claim(upload)
    assert desk.claim(upload) is None and desk.in_use(upload)  # one choice at a time
    received = desk.receive(name, kept, chosen)
    assert received.ct.image.GetSize()[2] == 7
    case = desk.store.case(received.case_id)
    assert case["series_uid"] == chosen
    job = desk.store.claim_job("station")
    command = prediction_arguments(desk.store, job)
    assert f"--series={chosen}" in command  # ctv predict gets the chosen series
    assert "--formats=rtstruct,seg,nifti" in command
    with pytest.raises(MultipleSeriesError):
        from ctv_core import load_ct_series

        load_ct_series(desk.store.ct_dir(received.case_id))  # both series are kept: the upload as it came


def test_the_cpu_budget_of_an_upload_stops_its_examination(desk, tmp_path):
    upload, contents = _upload(desk, write_linear_series(tmp_path / "ct", axial_grid(size=(20, 20, 6))))
    contents.budget = CPUBudget(1e-6)  # spent by reading the first header
    with pytest.raises(UploadTooCostlyError, match=r"more than 1e-06 s of CPU[\s\S]*--max-upload-cpu-seconds"):
        desk.receive(upload, contents)
    assert desk.store.cases() == [] and contents.budget.spent > 1e-6
    contents.budget = CPUBudget(600.0)
    assert isinstance(desk.receive(upload, contents), Received)  # within budget, the same upload becomes a case
