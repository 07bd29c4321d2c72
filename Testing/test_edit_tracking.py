"""AI versus approved: the edit figures on masks with known answers, their record at a review-station approval (an
uploaded case and a DICOM node's case held for review), the case store's schema upgrade, ``ctv report``, and bad
input (an approved contour on another CT, a store with no approved case)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import ctv_command

from ctv_core import load_ct_series
from ctv_core.errors import EditRecordError
from ctv_core.evaluation.edits import FIGURE_KEYS, AIProvenance, edit_figures, read_edit_record
from ctv_core.geometry import Grid
from ctv_core.inference.predict_job import describe_input, run_predict_job
from ctv_core.phantom import ScanSettings, make_phantom
from ctv_core.service.approvals import approved_records
from ctv_core.service.records import HELD, PENDING
from ctv_core.service.review.config import StationConfig
from ctv_core.service.review.desk import ReviewDesk
from ctv_core.service.store import CaseStore
from ctv_core.service.store_schema import SCHEMA
from ctv_core.structures.mask_files import read_mask, write_mask
from ctv_core.structures.rtstruct import write_rtstruct

PHANTOM = ScanSettings(matrix=256, slice_thickness_mm=5.0)
DESTINATION = "TPS@127.0.0.1:11104"


# --- the figures ------------------------------------------------------------------------------------------------

GRID = Grid((40, 30, 20), (0.8, 0.8, 3.0), (-10.0, 20.0, 5.0), (1, 0, 0, 0, -1, 0, 0, 0, 1))


def _box(k: slice, j: slice, i: slice, grid: Grid = GRID) -> sitk.Image:
    array = np.zeros(grid.shape, np.uint8)
    array[k, j, i] = 1
    return grid.image(array)


def test_two_slices_added_above_and_below_give_the_exact_volume_and_slices():
    ai = _box(slice(6, 14), slice(10, 20), slice(10, 30))
    approved = _box(slice(4, 16), slice(10, 20), slice(10, 30))  # 2 slices more at each end: 4 x 10 x 20 voxels
    figures = edit_figures(ai, approved)
    voxel_cc = 0.8 * 0.8 * 3.0 / 1000
    assert figures["added_cc"] == pytest.approx(4 * 10 * 20 * voxel_cc, abs=1e-9)
    assert figures["removed_cc"] == 0.0
    assert figures["slices_touched"] == 4 and figures["slices_with_ctv"] == 12
    assert figures["dice"] == pytest.approx(2 * 8 / (8 + 12))
    assert figures["ai_volume_cc"] == pytest.approx(8 * 200 * voxel_cc)
    assert figures["approved_volume_cc"] == pytest.approx(12 * 200 * voxel_cc)
    assert 3.0 <= figures["hd95_mm"] <= 6.0 + 1e-6  # the new caps lie 6 mm (2 slices) from the AI's
    assert 0.0 < figures["surface_dice_2mm"] < 1.0 and figures["unchanged"] is False
    assert list(figures) == list(FIGURE_KEYS)


def test_a_2_voxel_in_plane_dilation_adds_its_exact_ring_and_an_erosion_removes_it():
    ai = _box(slice(5, 15), slice(10, 20), slice(10, 30))
    dilated = sitk.BinaryDilate(ai, (2, 2, 0), sitk.sitkBox)
    voxel_cc = 0.8 * 0.8 * 3.0 / 1000
    grown = edit_figures(ai, dilated)
    assert grown["added_cc"] == pytest.approx(10 * (14 * 24 - 10 * 20) * voxel_cc, abs=1e-9)
    assert grown["removed_cc"] == 0.0 and grown["slices_touched"] == 10
    assert 1.6 - 1e-6 <= grown["hd95_mm"] <= 2 * 0.8 * 2 ** 0.5 + 1e-6  # faces 2 voxels out, edges diagonally
    assert grown["surface_dice_2mm"] > 0.9  # most of the surface moved 1.6 mm, within 2 mm
    shrunk = edit_figures(dilated, ai)
    assert shrunk["removed_cc"] == pytest.approx(grown["added_cc"]) and shrunk["added_cc"] == 0.0
    same = edit_figures(ai, ai)
    assert (same["dice"], same["hd95_mm"], same["surface_dice_2mm"], same["added_cc"], same["removed_cc"],
            same["slices_touched"], same["unchanged"]) == (1.0, 0.0, 1.0, 0.0, 0.0, 0, True)


def test_masks_on_two_grids_are_refused_naming_the_difference():
    other = Grid((40, 30, 20), (0.8, 0.8, 3.0), (-10.0, 20.0, 8.0), GRID.direction)  # one slice along
    with pytest.raises(EditRecordError, match="not on the voxels of the CT.*origin"):
        edit_figures(_box(slice(5, 15), slice(10, 20), slice(10, 30)),
                     _box(slice(5, 15), slice(10, 20), slice(10, 30), other))


# --- the review station's approvals ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cts(tmp_path_factory):
    """Two phantom CTs on one grid (same settings), other patients and UIDs; and the demo model's prediction on a."""
    root = tmp_path_factory.mktemp("edit_tracking")
    a = make_phantom(root / "a", seed=31, settings=PHANTOM).ct_dir
    b = make_phantom(root / "b", seed=32, settings=PHANTOM).ct_dir
    prediction = run_predict_job(a, root / "prediction", device="cpu", formats=("rtstruct", "nifti")).out_dir
    return {"a": a, "b": b, "prediction": prediction}


def _edit_version(store: CaseStore, case_id: str, ct_dir, mask: sitk.Image, derives_from: int,
                  input_ct_dir=None) -> int:
    """A version as the station's save writes it (rtstruct.dcm, ctv.nii.gz, report.json of kind edit)."""
    ct = load_ct_series(ct_dir)
    number = store.reserve_version(case_id)
    folder = store.version_dir(case_id, number)
    folder.mkdir(parents=True)
    write_rtstruct(ct, {"CTV": mask}, folder / "rtstruct.dcm", algorithm=None)
    write_mask(mask, folder / "ctv.nii.gz")
    report = {"kind": "edit", "author": "dr edit", "derives_from": {"version": derives_from, "kind": "prediction"},
              "input": describe_input(load_ct_series(input_ct_dir or ct_dir))}
    (folder / "report.json").write_text(json.dumps(report), encoding="utf-8")
    store.record_version(case_id, number, "edit", author="dr edit")
    return number


def _uploaded_case(store: CaseStore, ct_dir, prediction, tmp_path) -> str:
    files = tmp_path / f"upload-{len(store.cases())}"
    shutil.copytree(ct_dir, files)
    case_id, job = store.open_case("upload", files, queue="station")
    claimed = store.claim_job("station")
    shutil.copytree(prediction, store.version_dir(case_id, claimed.version))
    store.finish_job(claimed, model="ctv-demo-phantom")
    return case_id


def _node_case(store: CaseStore, ct_dir, prediction) -> str:
    """A case the DICOM node received and predicted (an RTSTRUCT only), held for review before sending."""
    for path in sorted(ct_dir.iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        store.inbox.add_instance(ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.SOPClassUID,
                                 path.read_bytes(), "SCANNER", "127.0.0.1")
    (series,) = store.inbox.due_series(0.0, 0.0)
    case_id, job = store.inbox.open_series_case(series, model="", device="cpu", formats=("rtstruct",))
    claimed = store.claim_job("node")
    for n, path in enumerate(store.inbox.series_files(series["uid"])):  # as the node links them before predicting
        shutil.copy(path, store.ct_dir(case_id) / f"{n:05d}.dcm")
    folder = store.version_dir(case_id, claimed.version)
    folder.mkdir(parents=True)
    for name in ("rtstruct.dcm", "qa.png", "report.json"):
        shutil.copy(prediction / name, folder / name)
    store.finish_job(claimed, model="ctv-demo-phantom", outbox=[("rtstruct.dcm", DESTINATION)], hold=True)
    return case_id


def _grown(mask: sitk.Image) -> sitk.Image:
    """The clinician's edit: 2 voxels more in-plane, on every slice of the CTV."""
    return sitk.Cast(sitk.BinaryDilate(mask, (2, 2, 0), sitk.sitkBox), sitk.sitkUInt8)


def test_an_approval_in_the_station_records_the_edit_beside_the_rtstruct_and_in_the_store(cts, tmp_path):
    data = tmp_path / "data"
    store = CaseStore(data)
    desk = ReviewDesk(StationConfig(data=data), {"demo": ""})
    ct = load_ct_series(cts["a"])
    ai = read_mask(cts["prediction"] / "ctv.nii.gz", ct.grid)
    case_id = _uploaded_case(store, cts["a"], cts["prediction"], tmp_path)
    edited = _grown(ai)
    edit = _edit_version(store, case_id, cts["a"], edited, derives_from=1)
    second = _edit_version(store, case_id, cts["a"], edited, derives_from=edit)  # an edit of the edit

    assert desk.approve(case_id, second, "Dr A", "tester") == []  # nothing held: nothing released
    sidecar = store.version_dir(case_id, second) / "rtstruct.ai-edits.json"
    record = read_edit_record(sidecar)
    (stored,) = approved_records(store)
    assert stored == record
    prediction_report = json.loads((cts["prediction"] / "report.json").read_text())
    assert record["ai"] == AIProvenance.from_report(prediction_report).as_dict()
    assert record["ai"]["model_name"] == "ctv-demo-phantom" and len(record["ai"]["model_sha256"]) == 64
    assert record["ai"]["series_instance_uid"] == ct.reference.series_instance_uid
    assert record["context"] == {"case": case_id, "case_source": "upload", "version": second, "ai_version": 1,
                                 "rtstruct": "rtstruct.dcm"}
    a, b = sitk.GetArrayFromImage(ai) != 0, sitk.GetArrayFromImage(edited) != 0
    figures = record["figures"]
    assert figures["added_cc"] == pytest.approx(np.count_nonzero(b & ~a) * ct.grid.voxel_cc, abs=1e-4)
    assert figures["removed_cc"] == 0.0 and figures["unchanged"] is False
    assert figures["slices_touched"] == int(np.count_nonzero(a.any(axis=(1, 2))))
    assert 0.5 < figures["dice"] < 1.0 and record["approved_by"] == "Dr A" and record["door"] == "review-station"
    assert "Dice" in (data / "audit.log").read_text()

    desk.approve(case_id, 1, "Dr B", "tester")  # approving the prediction itself: approved unchanged
    (stored,) = approved_records(store)  # the case's current approval only
    assert stored["context"]["version"] == 1 and stored["figures"]["unchanged"] is True
    assert stored["figures"]["dice"] == 1.0 and stored["figures"]["slices_touched"] == 0


def _held_node_case(cts, data: Path) -> tuple[CaseStore, ReviewDesk, str, sitk.Image]:
    """A store under ``data`` with a node case of CT "a" held for review, its station desk, and the AI mask."""
    store = CaseStore(data)
    desk = ReviewDesk(StationConfig(data=data), {"demo": ""})
    case_id = _node_case(store, cts["a"], cts["prediction"])
    return store, desk, case_id, read_mask(cts["prediction"] / "ctv.nii.gz", load_ct_series(cts["a"]).grid)


def test_a_node_case_held_for_review_records_its_edit_when_the_station_approves_it(cts, tmp_path):
    data = tmp_path / "data"
    store, desk, case_id, ai = _held_node_case(cts, data)
    edit = _edit_version(store, case_id, cts["a"], _grown(ai), derives_from=1)
    assert [i.status for i in store.outbox.items()] == [HELD]

    assert desk.approve(case_id, edit, "Dr N", "tester") == [("rtstruct.dcm", DESTINATION)]
    (item,) = store.outbox.items()
    assert (item.status, item.version) == (PENDING, edit)
    (record,) = approved_records(store)
    assert record["context"]["case_source"] == "dicom" and record["context"]["ai_version"] == 1
    # the AI contour came from the node's RTSTRUCT (no ctv.nii.gz): read onto the CT, it is the prediction
    assert record["figures"]["added_cc"] == pytest.approx(edit_figures(ai, _grown(ai))["added_cc"], abs=1e-3)
    assert (store.version_dir(case_id, edit) / "rtstruct.ai-edits.json").is_file()


def test_an_approval_whose_contour_lies_on_another_ct_is_refused_and_nothing_is_written(cts, tmp_path):
    data = tmp_path / "data"
    store, desk, case_id, ai = _held_node_case(cts, data)
    b = load_ct_series(cts["b"])  # another patient's CT: its CTV saved as an edit of this case's prediction
    wrong = _edit_version(store, case_id, cts["b"], read_mask(cts["b"].parent / "masks" / "CTV.nii.gz", b.grid),
                          derives_from=1)

    with pytest.raises(EditRecordError, match=f"another CT.*series {b.reference.series_instance_uid}"):
        desk.approve(case_id, wrong, "Dr N", "tester")
    assert store.case(case_id)["approved_version"] is None
    assert [i.status for i in store.outbox.items()] == [HELD]  # nothing released
    assert approved_records(store) == [] and not list(store.case_dir(case_id).rglob("*.ai-edits.json"))
    assert not (data / "audit.log").exists()  # no approval logged

    good = _edit_version(store, case_id, cts["a"], _grown(ai), derives_from=1)
    shutil.rmtree(store.version_dir(case_id, 1))  # the prediction it started from is gone
    with pytest.raises(EditRecordError, match="no readable report.json"):
        desk.approve(case_id, good, "Dr N", "tester")
    assert store.case(case_id)["approved_version"] is None and approved_records(store) == []


def test_an_index_of_schema_2_is_upgraded_to_3_with_its_cases_kept(tmp_path):
    schema_2 = SCHEMA.split("CREATE TABLE IF NOT EXISTS approvals")[0] + \
        SCHEMA.split("record TEXT NOT NULL);")[1].replace("CREATE INDEX IF NOT EXISTS approvals_case ON approvals "
                                                           "(case_id);", "")
    db = sqlite3.connect(tmp_path / "index.sqlite")
    db.executescript(schema_2 + "INSERT INTO meta VALUES ('schema', '2');"
                     "INSERT INTO cases (id, created, source, status, approved_version) "
                     "VALUES ('20260101-000000-abcdef', '2026-01-01T00:00:00', 'dicom', 'done', 1);")
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'approvals'").fetchone() is None
    db.close()
    store = CaseStore(tmp_path)
    assert store.case("20260101-000000-abcdef")["approved_version"] == 1
    assert approved_records(store) == []  # approved before approvals were recorded: no record, no error
    assert sqlite3.connect(tmp_path / "index.sqlite").execute(
        "SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == "3"
    CaseStore(tmp_path)  # opens again as schema 3


# --- ctv report -------------------------------------------------------------------------------------------------

def test_ctv_report_summarises_a_store_and_a_folder_of_exports_per_model_version(cts, tmp_path):
    data = tmp_path / "data"
    store = CaseStore(data)
    desk = ReviewDesk(StationConfig(data=data), {"demo": ""})
    ct = load_ct_series(cts["a"])
    ai = read_mask(cts["prediction"] / "ctv.nii.gz", ct.grid)
    added = []
    for radius in (1, 2, 3):
        case_id = _uploaded_case(store, cts["a"], cts["prediction"], tmp_path)
        edited = sitk.Cast(sitk.BinaryDilate(ai, (radius, radius, 0), sitk.sitkBox), sitk.sitkUInt8)
        desk.approve(case_id, _edit_version(store, case_id, cts["a"], edited, 1), "Dr R", "tester")
        added.append(edit_figures(ai, edited)["added_cc"])
    store.close()

    done = subprocess.run([ctv_command(), "report", str(data), str(tmp_path / "report")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    (key,) = report["models"]
    group = report["models"][key]
    assert key.startswith("ctv-demo-phantom 0.3.0 (") and group["n"] == 3 and group["unchanged"] == 0
    assert group["figures"]["added_cc"]["median"] == pytest.approx(sorted(added)[1], abs=1e-3)
    assert group["figures"]["added_cc"]["min"] == pytest.approx(min(added), abs=1e-3)
    assert group["figures"]["added_cc"]["max"] == pytest.approx(max(added), abs=1e-3)
    assert group["figures"]["removed_cc"]["max"] == 0.0
    assert "3 approval(s) from the case store" in done.stdout
    png = (tmp_path / "report" / "edits.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 10_000
    assert len((tmp_path / "report" / "edits.csv").read_text().splitlines()) == 4

    exports = tmp_path / "exports"  # the same records as sidecars in a folder: the same figures
    for n, sidecar in enumerate(sorted(data.rglob("*.ai-edits.json"))):
        (exports / str(n)).mkdir(parents=True)
        shutil.copy(sidecar, exports / str(n) / "CTV.ai-edits.json")
    done = subprocess.run([ctv_command(), "report", str(exports), str(tmp_path / "report2")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    again = json.loads((tmp_path / "report2" / "report.json").read_text())
    assert again["models"] == report["models"]


def test_ctv_report_on_a_store_or_folder_without_an_approved_case_says_so(tmp_path):
    CaseStore(tmp_path / "data").close()
    for source in (tmp_path / "data", tmp_path / "data" / "cases"):
        done = subprocess.run([ctv_command(), "report", str(source), str(tmp_path / "out")], capture_output=True,
                              text=True)
        assert done.returncode == 2 and "no approved case" in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "out").exists()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.ai-edits.json").write_text("{not json")
    done = subprocess.run([ctv_command(), "report", str(tmp_path / "bad"), str(tmp_path / "out")], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "x.ai-edits.json" in done.stderr and "cannot be read" in done.stderr


def test_without_monai_the_surface_figures_are_not_measured_and_never_counted_as_infinite(monkeypatch):
    # Slicer's CPU install has OpenVINO, not PyTorch, so not MONAI: an export there must still record the rest.
    from ctv_core.errors import MissingDependencyError
    from ctv_core.evaluation import surfaces
    from ctv_core.evaluation.edit_report import summarise_edits

    def no_monai():
        raise MissingDependencyError("MONAI is not installed (pip install 'ctv_core[torch]').")

    ai = _box(slice(6, 14), slice(10, 20), slice(10, 30))
    approved = _box(slice(6, 14), slice(10, 20), slice(10, 31))  # one column of voxels added on 8 slices
    measured = edit_figures(ai, approved)
    monkeypatch.setattr(surfaces, "_torch", no_monai)
    figures = edit_figures(ai, approved)
    assert figures["not_measured"] == ["hd95_mm", "surface_dice_2mm"]
    assert figures["hd95_mm"] is None and figures["surface_dice_2mm"] is None
    assert measured["not_measured"] == [] and measured["hd95_mm"] is not None
    for key in ("dice", "added_cc", "removed_cc", "slices_touched", "ai_volume_cc", "approved_volume_cc"):
        assert figures[key] == pytest.approx(measured[key]), key
    assert figures["added_cc"] == pytest.approx(8 * 10 * 0.8 * 0.8 * 3.0 / 1000)
    records = [{"ai": {"model_name": "m", "model_version": "1", "model_sha256": "x"}, "door": "slicer-export",
                "figures": f} for f in (figures, measured)]
    summary = next(iter(summarise_edits(records).values()))["figures"]
    assert summary["hd95_mm"]["n"] == 1 and summary["hd95_mm"]["infinite"] == 0
    assert summary["dice"]["n"] == 2
