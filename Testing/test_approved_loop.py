"""Approved contours back into training: ``ctv dataset build`` of a case store (approved cases with their approval's
record), bad input (an approval whose contour lies on another CT, a store with no approved case, a damaged approval
attribute), and ``ctv model compare`` (promotion rule, exit codes, the manifest's ``comparison``)."""

from __future__ import annotations

import json
import shutil
import subprocess

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ctv_command
from test_edit_tracking import _edit_version, _grown, _uploaded_case, cts  # noqa: F401 - cts is a fixture
from test_hardening import qa_package

from ctv_core import load_ct_series
from ctv_core.dataset.hdf5_reader import CTVDataset
from ctv_core.dataset.hdf5_writer import DatasetWriter
from ctv_core.errors import DatasetError, ModelPackageError
from ctv_core.evaluation.edits import AIProvenance, edit_figures, edit_record, read_edit_record, write_edit_record
from ctv_core.model.comparison import promoted_by_rule
from ctv_core.model.manifest import sha256_of
from ctv_core.model.package import load_model_package
from ctv_core.service.approvals import approved_records
from ctv_core.service.review.config import StationConfig
from ctv_core.service.review.desk import ReviewDesk
from ctv_core.service.store import CaseStore
from ctv_core.structures.mask_files import read_mask
from ctv_core.structures.rtstruct import write_rtstruct
from ctv_core.structures.rtstruct_reader import read_rtstruct


def _build(source, out) -> subprocess.CompletedProcess:
    return subprocess.run([ctv_command(), "dataset", "build", str(source), str(out), "--quiet"], capture_output=True,
                          text=True)


def _store_with_approvals(cts, tmp_path):  # noqa: F811 - cts is the fixture's value
    """A store with three cases of CT "a": approved with an edit by Dr A, approved as predicted by Dr B, and not
    approved. Returns the store, its folder, the case ids and the edited mask."""
    data = tmp_path / "data"
    store = CaseStore(data)
    desk = ReviewDesk(StationConfig(data=data), {"demo": ""})
    ai = read_mask(cts["prediction"] / "ctv.nii.gz", load_ct_series(cts["a"]).grid)
    edited, predicted, pending = (_uploaded_case(store, cts["a"], cts["prediction"], tmp_path) for _ in range(3))
    desk.approve(edited, _edit_version(store, edited, cts["a"], _grown(ai), derives_from=1), "Dr A", "tester")
    desk.approve(predicted, 1, "Dr B", "tester")
    return store, data, (edited, predicted, pending), _grown(ai)


def test_a_case_store_gives_its_approved_cases_with_their_approval_records(cts, tmp_path):  # noqa: F811
    store, data, (edited, predicted, pending), grown = _store_with_approvals(cts, tmp_path)
    records = approved_records(store)
    store.close()

    done = _build(data, tmp_path / "approved.h5")
    assert done.returncode == 0, done.stderr
    assert "2 case(s)" in done.stdout
    ct = load_ct_series(cts["a"])
    with CTVDataset(tmp_path / "approved.h5") as dataset:
        assert len(dataset) == 2  # the case not approved is not there
        approvals = [dataset.approval(case) for case in dataset.case_ids]
        assert approvals == records  # the whole record, as the store keeps it
        assert [a["approved_by"] for a in approvals] == ["Dr A", "Dr B"]
        assert [a["context"]["case"] for a in approvals] == [edited, predicted]
        assert approvals[0]["ai"]["model_name"] == "ctv-demo-phantom" and len(approvals[0]["ai"]["model_sha256"]) == 64
        assert approvals[0]["figures"]["added_cc"] > 0 and approvals[1]["figures"]["unchanged"] is True
        first = dataset.case_attrs("case_00000")
        assert first["series_instance_uid"] == ct.reference.series_instance_uid
        assert first["frame_of_reference_uid"] == ct.reference.frame_of_reference_uid
        # the target is the approved RTSTRUCT's contour on the CT, the clinician's edit (not the AI's)
        approved_rtstruct = store.version_dir(edited, approvals[0]["context"]["version"]) / "rtstruct.dcm"
        expected = sitk.GetArrayFromImage(read_rtstruct(approved_rtstruct, ct)["CTV"])
        assert np.array_equal(dataset.read_mask("case_00000"), expected)
        assert np.count_nonzero(expected != (sitk.GetArrayFromImage(grown) != 0)) < 0.02 * np.count_nonzero(expected)
        assert dataset.approval("case_00001")["figures"]["dice"] == 1.0


def test_an_approval_whose_contour_lies_on_another_ct_is_skipped_with_the_uids_in_the_report(cts, tmp_path):  # noqa
    store, data, (edited, predicted, _), _ = _store_with_approvals(cts, tmp_path)
    b = load_ct_series(cts["b"])
    version = store.case(predicted)["approved_version"]
    # the approved version's RTSTRUCT replaced by one drawn on another patient's CT (a restored backup, a mix-up)
    write_rtstruct(b, {"CTV": read_mask(cts["b"].parent / "masks" / "CTV.nii.gz", b.grid)},
                   store.version_dir(predicted, version) / "rtstruct.dcm", algorithm=None)
    store.close()

    done = _build(data, tmp_path / "approved.h5")
    assert done.returncode == 0, done.stderr
    assert "1 case(s)" in done.stdout and "approval on another CT" in done.stdout
    assert b.reference.series_instance_uid in done.stdout  # the report names the CT the contour lies on
    with CTVDataset(tmp_path / "approved.h5") as dataset:
        assert [dataset.approval(c)["context"]["case"] for c in dataset.case_ids] == [edited]
        (skipped,) = dataset.skipped()
        assert skipped["category"] == "approval on another CT" and predicted in skipped["source"]

    store = CaseStore(data)  # the record itself naming another CT (the index edited, or the CT folder replaced)
    with store.transaction() as db:
        db.execute("UPDATE approvals SET record = replace(record, ?, ?) WHERE case_id = ?",
                   (load_ct_series(cts["a"]).reference.series_instance_uid, "1.2.3.4", edited))
    store.close()
    done = _build(data, tmp_path / "none.h5")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "None of the 2 approved case(s)" in done.stderr and "series 1.2.3.4" in done.stderr
    assert not (tmp_path / "none.h5").exists()


def test_a_store_with_no_approved_case_is_refused_naming_the_fix(cts, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    store = CaseStore(data)
    _uploaded_case(store, cts["a"], cts["prediction"], tmp_path)  # predicted, never approved
    store.close()
    done = _build(data, tmp_path / "out.h5")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "holds no approved case" in done.stderr and "Approve cases first" in done.stderr
    assert not (tmp_path / "out.h5").exists()
    done = subprocess.run([ctv_command(), "dataset", "build", str(data), str(tmp_path / "out.h5"), "--deidentify"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--deidentify does not apply" in done.stderr


def test_an_archive_of_exported_rtstructs_gives_those_approved_beside_them(cts, tmp_path):  # noqa: F811
    a, b = load_ct_series(cts["a"]), load_ct_series(cts["b"])
    ai = read_mask(cts["prediction"] / "ctv.nii.gz", a.grid)
    provenance = AIProvenance.from_report(json.loads((cts["prediction"] / "report.json").read_text()))
    record = edit_record(provenance, edit_figures(ai, _grown(ai)), door="slicer-export", approved_ct=a.reference)
    archive = tmp_path / "exports"
    for name, ct_dir in (("a", cts["a"]), ("b", cts["b"])):
        shutil.copytree(ct_dir, archive / name / "ct")
    write_rtstruct(a, {"CTV": _grown(ai)}, archive / "a" / "CTV.dcm", algorithm=None)  # as Slicer exports it
    write_edit_record(record, archive / "a" / "CTV.ai-edits.json")
    b_truth = read_mask(cts["b"].parent / "masks" / "CTV.nii.gz", b.grid)
    write_rtstruct(b, {"CTV": b_truth}, archive / "b" / "CTV.dcm", algorithm=None)
    write_edit_record(record, archive / "b" / "CTV.ai-edits.json")  # a's record beside b's contour: another CT
    write_rtstruct(b, {"CTV": b_truth}, archive / "b" / "plain.dcm", algorithm=None)  # never approved

    done = subprocess.run([ctv_command(), "dataset", "build", str(archive), str(tmp_path / "out.h5"), "--approved-only",
                           "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with CTVDataset(tmp_path / "out.h5") as dataset:
        assert len(dataset) == 1 and dataset.approval("case_00000") == read_edit_record(
            archive / "a" / "CTV.ai-edits.json")
        assert dataset.case_attrs("case_00000")["rtstruct_source"] == "a/CTV.dcm"
        assert sorted(row["category"] for row in dataset.skipped()) == ["approval on another CT", "not approved"]
    assert b.reference.series_instance_uid in done.stdout

    for sidecar in archive.rglob("*.ai-edits.json"):
        sidecar.unlink()
    done = subprocess.run([ctv_command(), "dataset", "build", str(archive), str(tmp_path / "none.h5"),
                           "--approved-only"], capture_output=True, text=True)
    assert done.returncode == 2 and "holds no approved case" in done.stderr and not (tmp_path / "none.h5").exists()


def test_an_approval_attribute_that_is_not_an_edit_record_is_refused(tmp_path):
    image = sitk.Image(8, 8, 4, sitk.sitkInt16)
    mask = sitk.Image(8, 8, 4, sitk.sitkUInt8)
    with pytest.raises(DatasetError, match="not an edit record"):
        with DatasetWriter(tmp_path / "bad.h5") as writer:
            writer.add_case("case_00000", image, {"target": ("CTV", mask)}, patient_key="p",
                            approval={"format": "ctv-edit-record/1", "figures": {}})
    assert not (tmp_path / "bad.h5").exists()
    with DatasetWriter(tmp_path / "plain.h5") as writer:
        writer.add_case("case_00000", image, {"target": ("CTV", mask)}, patient_key="p")
    with CTVDataset(tmp_path / "plain.h5") as dataset:
        assert dataset.approval("case_00000") is None  # not built from an approval
    for value, message in (("{not json", "not JSON"), ('{"format": "ctv-edit-record/1", "ai": {}}', "not an edit")):
        with h5py.File(tmp_path / "plain.h5", "r+") as h5:
            h5["cases/case_00000"].attrs["approval"] = value
        with CTVDataset(tmp_path / "plain.h5") as dataset, pytest.raises(DatasetError, match=message):
            dataset.approval("case_00000")


# --- ctv model compare ------------------------------------------------------------------------------------------

def _compare(candidate, current, held_out, *options) -> subprocess.CompletedProcess:
    return subprocess.run([ctv_command(), "model", "compare", str(candidate), str(current), "--held-out",
                           str(held_out), "--quiet", *options], capture_output=True, text=True)


@pytest.fixture(scope="module")
def held_out(cts, tmp_path_factory):  # noqa: F811
    """A held-out set of one case whose "approved" target is the CT's bone (HU 150-3000): a bone-window package
    finds it, a soft-tissue-window package does not (both HU-window "models": exact and fast)."""
    root = tmp_path_factory.mktemp("compare")
    ct = load_ct_series(cts["a"])
    target = sitk.Cast(sitk.BinaryThreshold(ct.image, 150, 3000), sitk.sitkUInt8)
    with DatasetWriter(root / "held_out.h5") as writer:
        writer.add_case("case_00000", ct.image, {"target": ("CTV", target)}, patient_key="p")
    return root / "held_out.h5"


def test_the_better_package_is_promoted_the_worse_not_and_each_carries_the_comparison(held_out, tmp_path):
    bone, soft = qa_package(tmp_path / "bone", (150.0, 3000.0)), qa_package(tmp_path / "soft", (20.0, 90.0))
    fingerprint = load_model_package(bone).manifest["fingerprint"]

    done = _compare(bone, soft, held_out)
    assert done.returncode == 0, done.stderr
    assert "PROMOTED" in done.stdout and "NOT PROMOTED" not in done.stdout
    comparison = json.loads((bone / "manifest.json").read_text())["comparison"]
    assert comparison["promoted"] is True and comparison["held_out"] == {
        "file": "held_out.h5", "sha256": sha256_of(held_out), "cases": 1}
    (case,) = comparison["cases"]
    assert case["case"] == "case_00000" and case["candidate_dice"] > 0.5 > 0.2 > case["current_dice"]
    assert comparison["mean"]["candidate"]["dice"] == case["candidate_dice"]
    assert comparison["candidate"]["name"] == "qa-window" and len(comparison["current"]["fingerprint"]) == 64
    assert "mean Dice on the held-out approved cases is higher" in comparison["rule"]
    assert comparison["tolerance_dice"] == 0.02
    assert load_model_package(bone).manifest["fingerprint"] == fingerprint  # a record: the model's output is unchanged

    done = _compare(soft, bone, held_out)
    assert done.returncode == 1, done.stderr
    assert "NOT PROMOTED" in done.stdout
    assert json.loads((soft / "manifest.json").read_text())["comparison"]["promoted"] is False

    shutil.copytree(bone, tmp_path / "same")  # no better than the package in use: not promoted
    assert _compare(tmp_path / "same", bone, held_out).returncode == 1

    done = _compare(bone, soft, tmp_path / "missing.h5")
    assert done.returncode == 2 and "missing.h5" in done.stderr and "Traceback" not in done.stderr


def test_a_manifest_with_a_malformed_comparison_is_refused(held_out, tmp_path):
    bone, soft = qa_package(tmp_path / "bone", (150.0, 3000.0)), qa_package(tmp_path / "soft", (20.0, 90.0))
    assert _compare(bone, soft, held_out).returncode == 0
    good = json.loads((bone / "manifest.json").read_text())
    for change, problem in ((lambda c: c.update(promoted=False), "not what the rule gives"),
                            (lambda c: c.pop("rule"), "exactly the keys"),
                            (lambda c: c["cases"][0].update(candidate_dice="0.9"), "wrong type"),
                            (lambda c: c.update(cases=[]), "every held-out case")):
        manifest = json.loads(json.dumps(good))
        change(manifest["comparison"])
        (bone / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ModelPackageError, match=f"malformed comparison.*{problem}"):
            load_model_package(bone)


def test_the_promotion_rule_needs_a_higher_mean_and_no_case_worse_than_the_tolerance():
    def cases(*pairs):
        return [{"current_dice": a, "candidate_dice": b} for a, b in pairs]

    assert promoted_by_rule(cases((0.80, 0.85), (0.80, 0.82)), 0.02)
    assert not promoted_by_rule(cases((0.80, 0.90), (0.80, 0.77)), 0.02)  # mean +0.035, one case -0.03
    assert promoted_by_rule(cases((0.80, 0.90), (0.80, 0.77)), 0.05)
    assert not promoted_by_rule(cases((0.80, 0.80)), 0.02)  # equal is not better
    assert not promoted_by_rule([], 0.02)
