"""``ctv dataset build`` / ``info``: a messy archive of phantoms becomes one HDF5 training set."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ctv_core import load_ct_series, write_rtstruct
from ctv_core.dataset.builder import (
    DEFAULT_TARGET_ALIASES,
    DatasetError,
    RoiSelection,
    build_dataset,
    parse_extra_roi,
)
from ctv_core.geometry import Grid
from ctv_core.cli.dataset import add_commands as add_dataset_commands
from ctv_core.cli.dataset import format_dataset_info
from ctv_core.dataset.hdf5_reader import CTVDataset
from ctv_core.phantom import ScanSettings, make_phantom

SMALL = ScanSettings(matrix=256, slices=10, slice_thickness_mm=5.0)
EXTRA = {"Bladder": "bladder|blase"}


def _truth(phantom_dir: Path, name: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(phantom_dir / "masks" / f"{name}.nii.gz")))


def _phantom(work: Path, seed: int) -> Path:
    return make_phantom(work / f"phantom{seed}", seed=seed, settings=SMALL).ct_dir.parent


def _rewrite(files, change) -> None:
    for f in files:
        ds = pydicom.dcmread(f)
        change(ds)
        ds.save_as(f)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A nested archive with messy names and one of each problem; returns (root, expectations)."""
    work = tmp_path_factory.mktemp("phantoms")
    root = tmp_path_factory.mktemp("archive") / "dept_export_2021"
    good, problems, phantoms = {}, {}, {}

    # Patient 1: the phantom as exported, target 'CTV' (truth.dcm also holds Bladder).
    p = _phantom(work, 1)
    dest = root / "site_A" / "PAT 001" / "2021-03-04"
    shutil.copytree(p / "ct", dest / "CT_planning")
    shutil.copy(p / "truth.dcm", dest / "RS.truth.dcm")
    good[dest / "RS.truth.dcm"] = ("CTV", p, dest / "CT_planning", "Bladder")
    shutil.copy(p / "truth.dcm", dest / "RS.truth_copy.dcm")  # exported twice
    problems[dest / "RS.truth_copy.dcm"] = "duplicate structure set"

    # Patient 2: 'ctv_45' and 'Blase' written by another system; plus a copy of its structure set
    # moved to another frame of reference.
    p = _phantom(work, 2)
    dest = root / "site_A" / "pat002"
    shutil.copytree(p / "ct", dest / "ct")
    ct = load_ct_series(dest / "ct")
    write_rtstruct(ct, {"ctv_45": sitk.ReadImage(str(p / "masks" / "CTV.nii.gz")),
                        "Blase": sitk.ReadImage(str(p / "masks" / "Bladder.nii.gz"))}, dest / "rs" / "RS1")
    good[dest / "rs" / "RS1"] = ("ctv_45", p, dest / "ct", "Bladder")
    moved = dest / "rs" / "RS_other_frame"
    shutil.copy(dest / "rs" / "RS1", moved)

    def other_frame(ds):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.FrameOfReferenceUID = pydicom.uid.generate_uid()
        ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = ds.FrameOfReferenceUID

    _rewrite([moved], other_frame)
    problems[moved] = "frame of reference mismatch"

    # Patient 3: 'CTVp+n', no bladder, files without .dcm, and a truncated copy of a slice.
    p = _phantom(work, 3)
    dest = root / "site_B" / "3"
    (dest / "images").mkdir(parents=True)
    for n, f in enumerate(sorted((p / "ct").iterdir())):
        shutil.copy(f, dest / "images" / f"IM{n:04d}")
    ct = load_ct_series(dest / "images")
    write_rtstruct(ct, {"CTVp+n": sitk.ReadImage(str(p / "masks" / "CTV.nii.gz"))}, dest / "images" / "RTSS")
    data = (dest / "images" / "IM0004").read_bytes()
    (dest / "images" / "IM0004_broken").write_bytes(data[: len(data) * 3 // 5])
    good[dest / "images" / "RTSS"] = ("CTVp+n", p, dest / "images", None)

    # Patient 4: the target twice ('CTV' and 'CTV_4500'): ambiguous.
    p = _phantom(work, 4)
    dest = root / "site_B" / "4"
    shutil.copytree(p / "ct", dest / "ct")
    ct = load_ct_series(dest / "ct")
    ctv = sitk.ReadImage(str(p / "masks" / "CTV.nii.gz"))
    write_rtstruct(ct, {"CTV": ctv, "CTV_4500": ctv}, dest / "RS_dup.dcm")
    problems[dest / "RS_dup.dcm"] = "ambiguous ROI"

    # Patient 5: a structure set whose CT was never exported.
    p = _phantom(work, 5)
    dest = root / "site_C" / "p5"
    dest.mkdir(parents=True)
    shutil.copy(p / "truth.dcm", dest / "RS_without_ct.dcm")
    problems[dest / "RS_without_ct.dcm"] = "missing CT"

    # Patient 6: two CT series of one patient in one folder; the structure set references the first.
    p, q = _phantom(work, 6), _phantom(work, 7)
    dest = root / "site_C" / "p6"
    shutil.copytree(p / "ct", dest / "mixed")
    patient = pydicom.dcmread(next((p / "ct").iterdir()))
    for f in sorted((q / "ct").iterdir()):
        ds = pydicom.dcmread(f)
        ds.PatientID, ds.PatientName = patient.PatientID, patient.PatientName
        ds.SeriesNumber = 7
        ds.save_as(dest / "mixed" / f"second_{f.name}")
    shutil.copy(p / "truth.dcm", dest / "RS6.dcm")
    good[dest / "RS6.dcm"] = ("CTV", p, dest / "mixed", "Bladder")

    # Patient 8: a gantry-tilted acquisition (positions drift along y): the loader resamples it.
    p = _phantom(work, 8)
    dest = root / "site_C" / "p8"
    shutil.copytree(p / "ct", dest / "ct")

    def tilt(ds):
        z = float(ds.ImagePositionPatient[2])
        ds.ImagePositionPatient[1] = float(ds.ImagePositionPatient[1]) + np.tan(np.radians(12)) * z
        ds.GantryDetectorTilt = 12

    _rewrite(sorted((dest / "ct").iterdir()), tilt)
    shutil.copy(p / "truth.dcm", dest / "RS8.dcm")
    problems[dest / "RS8.dcm"] = "CT resampled"

    for seed in range(1, 9):
        phantoms[seed] = work / f"phantom{seed}"
    return root, good, problems, phantoms


@pytest.fixture(scope="module")
def built(archive, tmp_path_factory):
    root, *_ = archive
    out = tmp_path_factory.mktemp("out") / "train.h5"
    summary = build_dataset(root, out, RoiSelection(extras=EXTRA))
    return out, summary


@pytest.fixture(scope="module")
def built_deidentified(archive, tmp_path_factory):
    root, *_ = archive
    out = tmp_path_factory.mktemp("out_deid") / "train_deid.h5"
    summary = build_dataset(root, out, RoiSelection(extras=EXTRA), deidentify=True)
    return out, summary


def _case_by_source(summary):
    return {c.source: c for c in summary.cases}


def test_problem_cases_are_skipped_with_their_reason(archive, built):
    root, good, problems, _ = archive
    out, summary = built
    assert {s.source: s.category for s in summary.skipped} == problems
    assert set(_case_by_source(summary)) == set(good)
    ambiguous = next(s for s in summary.skipped if s.category == "ambiguous ROI")
    assert "'CTV'" in ambiguous.reason and "'CTV_4500'" in ambiguous.reason
    assert len(summary.unpaired_ct_series) == 1  # patient 6's second series
    with CTVDataset(out) as ds:
        table = {row["source"]: (row["category"], row["reason"]) for row in ds.skipped()}
    assert {src: cat for src, (cat, _) in table.items()} == {
        p.relative_to(root).as_posix(): cat for p, cat in problems.items()}
    assert any(reason.startswith("ambiguous:") for _, reason in table.values())
    assert "missing CT" in summary.describe() and f"skipped {len(problems)}" in summary.describe()


def test_stored_ct_and_masks_equal_the_loader_and_the_truth(archive, built):
    root, good, _, _ = archive
    out, summary = built
    cases = _case_by_source(summary)
    with CTVDataset(out) as ds:
        assert len(ds) == len(good) and set(ds.case_ids) == {c.case_id for c in summary.cases}
        for source, (roi, phantom, ct_dir, bladder) in good.items():
            case_id = cases[source].case_id
            ct = load_ct_series(ct_dir, series_uid=ds.case_attrs(case_id)["series_instance_uid"])
            stored = ds.read_ct(case_id)
            assert stored.dtype == np.int16
            np.testing.assert_array_equal(stored, sitk.GetArrayViewFromImage(ct.image))
            target = ds.read_mask(case_id)
            assert target.dtype == np.uint8
            np.testing.assert_array_equal(target, _truth(phantom, "CTV"))
            attrs = ds.case_attrs(case_id)
            assert attrs["roi_name"] == roi
            assert attrs["patient_key"] == ct.reference.patient_study.patient_id
            assert attrs["patient_position"] == "HFS"
            assert attrs["series_instance_uid"] == ct.reference.series_instance_uid
            assert attrs["frame_of_reference_uid"] == ct.reference.frame_of_reference_uid
            assert attrs["rtstruct_source"] == source.relative_to(root).as_posix()
            # geometry round-trips into an image on the CT's own grid
            image = ds.image(case_id)
            assert image.GetSize() == ct.image.GetSize()
            np.testing.assert_allclose(image.GetSpacing(), ct.image.GetSpacing(), atol=1e-12)
            np.testing.assert_allclose(image.GetOrigin(), ct.image.GetOrigin(), atol=1e-12)
            np.testing.assert_allclose(image.GetDirection(), ct.image.GetDirection(), atol=1e-12)
            assert Grid.of_image(ds.mask(case_id)).matches(ct.grid, tolerance_mm=1e-9)
            np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), stored)
            # extra ROIs: stored where present, recorded where not
            if bladder:
                np.testing.assert_array_equal(ds.read_mask(case_id, "Bladder"), _truth(phantom, "Bladder"))
                assert ds.mask_names(case_id) == ("Bladder", "target")
            else:
                assert ds.mask_names(case_id) == ("target",)
                assert attrs["extra_rois_missing"] == ["Bladder"]
                with pytest.raises(DatasetError, match="no mask 'Bladder'"):
                    ds.read_mask(case_id, "Bladder")
            if roi == "CTVp+n":  # the truncated copy of a slice was passed over, not fatal
                assert any("IM0004_broken" in w for w in attrs["ct_warnings"])
            # a patch read is the same voxels as the full array
            region = (slice(2, 7), slice(100, 180), slice(60, 200))
            np.testing.assert_array_equal(ds.read_ct(case_id, region), stored[region])


def test_storage_is_chunked_and_compressed(built):
    out, _ = built
    with h5py.File(out, "r") as h5:
        assert h5.attrs["format"] == "ctv-dataset" and h5.attrs["format_version"] == 1
        assert not h5.attrs["deidentified"]
        for case in h5["cases"].values():
            for data in (case["ct"], case["masks"]["target"]):
                assert data.chunks == (10, 64, 64) and data.compression == "gzip" and data.fletcher32


def test_info_numbers_match_the_masks(archive, built, capsys):
    _, good, problems, _ = archive
    out, _ = built
    with CTVDataset(out) as ds:
        info = ds.info()
        volumes = {}
        for case_id in ds.case_ids:
            spacing = ds.image(case_id).GetSpacing()
            for name in ds.mask_names(case_id):
                cc = ds.read_mask(case_id, name).sum() * np.prod(spacing) / 1000.0
                volumes.setdefault(name, []).append(cc)
    assert info["cases"] == len(good) and info["patients"] == len(good)
    assert info["skipped"] == len(problems)
    assert info["skipped_by_category"] == {cat: 1 for cat in problems.values()}
    for name, values in volumes.items():
        got = info["roi_volumes_cc"][name]
        assert got["count"] == len(values)
        assert got["mean"] == pytest.approx(np.mean(values), rel=1e-9)
        assert got["min"] == pytest.approx(np.min(values), rel=1e-9)
        assert got["max"] == pytest.approx(np.max(values), rel=1e-9)
    assert info["extra_rois_missing"] == {"Bladder": 1}
    assert info["size_min"] == [256, 256, 10] and info["size_max"] == [256, 256, 10]
    text = format_dataset_info(info)
    assert f"{len(good)} case(s) from {len(good)} patient(s)" in text
    assert "CTV" in info["target_aliases"] and f"target ROI: aliases {', '.join(info['target_aliases'])}" in text
    assert f"mean {np.mean(volumes['target']):.1f}" in text
    json.dumps(info)  # serialisable as is


def _all_strings(path: Path) -> list[str]:
    found: list[str] = []

    def collect(value):
        if isinstance(value, bytes):
            found.append(value.decode("utf-8", "replace"))
        elif isinstance(value, str):
            found.append(value)
        elif isinstance(value, np.ndarray) and value.dtype.names:
            for row in value:
                for v in row:
                    collect(v)
        elif isinstance(value, (np.ndarray, list, tuple)):
            for v in np.asarray(value, dtype=object).ravel():
                collect(v)

    with h5py.File(path, "r") as h5:
        def visit(name, obj):
            found.append(name)
            for value in obj.attrs.values():
                collect(value)
            if isinstance(obj, h5py.Dataset) and (obj.dtype.kind in "OSU" or obj.dtype.names):
                collect(obj[...])

        for value in h5.attrs.values():
            collect(value)
        h5.visititems(visit)
    return found


def test_deidentified_file_holds_no_names_ids_uids_or_paths(archive, built_deidentified):
    root, good, problems, phantoms = archive
    out, summary = built_deidentified
    assert len(summary.cases) == len(good) and len(summary.skipped) == len(problems)
    forbidden = {str(root), root.name, "site_A", "PAT 001"}
    for folder in [*phantoms.values(), root]:
        for f in folder.rglob("*"):
            if not f.is_file() or f.suffix == ".gz":
                continue
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - the truncated copy
                continue
            forbidden |= {str(ds.PatientName), str(ds.PatientID), str(ds.StudyInstanceUID),
                          str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), str(ds.FrameOfReferenceUID)}
            if ds.get("PatientBirthDate"):
                forbidden.add(str(ds.PatientBirthDate))
            for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
                forbidden.add(str(frame.FrameOfReferenceUID))
    forbidden.discard("")
    strings = _all_strings(out)
    leaks = sorted({f for f in forbidden for s in strings if f in s})
    assert not leaks, leaks
    raw = out.read_bytes()
    assert not [f for f in forbidden if len(f) > 8 and f.encode() in raw]
    with CTVDataset(out) as ds:
        keys = {ds.patient_key(c) for c in ds.case_ids}
        assert len(keys) == len(good) and all(k.startswith("p_") and len(k) == 22 for k in keys)
        assert ds.attrs["deidentified"] is True
        attrs = ds.case_attrs(ds.case_ids[0])
        assert {"spacing", "origin", "direction", "roi_name", "patient_position"} <= set(attrs)
        assert not {"series_instance_uid", "rtstruct_source", "ct_source"} & set(attrs)
        assert {row["category"] for row in ds.skipped()} == set(problems.values())
        assert all(row["source"].startswith("structure_set_") for row in ds.skipped())


def test_salted_patient_key_is_stable_with_the_same_salt(archive, tmp_path):
    root, *_ = archive
    keys = []
    for n in range(2):
        out = tmp_path / f"d{n}.h5"
        build_dataset(root / "site_A", out, deidentify=True, deidentify_salt=b"department secret")
        with CTVDataset(out) as ds:
            keys.append(sorted(ds.patient_key(c) for c in ds.case_ids))
    assert keys[0] == keys[1] and len(keys[0]) == 2


def test_interrupted_build_leaves_nothing(archive, tmp_path):
    root, *_ = archive
    out = tmp_path / "train.h5"

    def fail_midway(stage, done, total):
        if stage == "building" and done == 3:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        build_dataset(root, out, progress=fail_midway)
    assert list(tmp_path.iterdir()) == []

    # An existing file survives an interrupted rebuild untouched.
    out.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        build_dataset(root, out, overwrite=True, progress=fail_midway)
    assert out.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [out]


def test_user_errors_name_the_problem_and_the_fix(archive, built, tmp_path):
    root, *_ = archive
    with pytest.raises(DatasetError, match="not a folder"):
        build_dataset(tmp_path / "nowhere", tmp_path / "x.h5")
    with pytest.raises(DatasetError, match="exists.*--overwrite"):
        build_dataset(root, built[0])
    with pytest.raises(DatasetError, match="not a valid regular expression"):
        build_dataset(root, tmp_path / "x.h5", RoiSelection(pattern="CTV("))
    with pytest.raises(DatasetError, match="NAME=PATTERN"):
        parse_extra_roi("Bladder")
    with pytest.raises(DatasetError, match="cannot name an extra ROI"):
        RoiSelection.from_options(extra_rois=["target=bladder"])
    with pytest.raises(DatasetError, match="No RTSTRUCT"):
        build_dataset(root / "site_A" / "pat002" / "ct", tmp_path / "x.h5")
    with pytest.raises(DatasetError, match="gave a usable case.*--roi PATTERN"):
        build_dataset(root, tmp_path / "x.h5", RoiSelection(pattern="PTV_bogus", aliases=()))
    assert not (tmp_path / "x.h5").exists()
    (tmp_path / "not.h5").write_bytes(b"plain text")
    with pytest.raises(DatasetError, match="cannot be opened as HDF5"):
        CTVDataset(tmp_path / "not.h5")
    with CTVDataset(built[0]) as ds, pytest.raises(DatasetError, match="No case 'case_99999'"):
        ds.image("case_99999")


def test_roi_selection_from_options():
    assert RoiSelection.from_options().aliases == DEFAULT_TARGET_ALIASES
    only = RoiSelection.from_options(pattern="ctv.*")
    assert only.pattern == "ctv.*" and only.aliases == ()
    both = RoiSelection.from_options(pattern="zielvolumen", aliases=["CTV_Becken"], default_aliases=True)
    assert "CTV_Becken" in both.aliases and "CTV" in both.aliases
    assert RoiSelection.from_options(extra_rois=["Bladder=bladder|blase"]).extras == EXTRA


_INHERITED: CTVDataset | None = None  # reaches forked workers by inheritance, open handle included


def _read_in_child(case_id: str) -> int:
    return int(_INHERITED.read_mask(case_id).sum())


def test_reader_works_in_worker_processes(built):
    out, _ = built
    ds = CTVDataset(out)
    case_id = ds.case_ids[0]
    expected = int(ds.read_mask(case_id).sum())  # the parent holds an open handle before forking
    clone = pickle.loads(pickle.dumps(ds))
    assert int(clone.read_mask(case_id).sum()) == expected
    global _INHERITED
    _INHERITED = ds
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            assert pool.map(_read_in_child, ds.case_ids) == [int(ds.read_mask(c).sum()) for c in ds.case_ids]
    finally:
        _INHERITED = None
        ds.close()


def test_cli_glue(archive, tmp_path, capsys):
    root, good, *_ = archive
    parser = argparse.ArgumentParser(prog="ctv")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true")
    common.add_argument("-q", "--quiet", action="store_true")
    add_dataset_commands(parser.add_subparsers(dest="command", required=True), common)
    out = tmp_path / "cli.h5"
    args = parser.parse_args(["dataset", "build", str(root / "site_A"), str(out), "--roi", "ctv(_45)?", "-q",
                              "--extra-roi", "Bladder=bladder|blase", "--deidentify"])
    assert args.func(args) == 0
    assert "2 case(s) from 2 patient(s)" in capsys.readouterr().out
    args = parser.parse_args(["dataset", "info", str(out), "--json"])
    assert args.func(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cases"] == 2 and info["target_pattern"] == "ctv(_45)?" and info["deidentified"]
    assert info["skipped_by_category"] == {"frame of reference mismatch": 1, "duplicate structure set": 1}
    args = parser.parse_args(["dataset", "info", str(out)])
    assert args.func(args) == 0
    assert "target volume (cc): mean" in capsys.readouterr().out


def test_tissue_label_maps_are_stored_with_their_legend_or_the_case_is_skipped(tmp_path):
    """--tissue-labels: each case's map (beside its RTSTRUCT, as ctv phantom writes it) is stored with one
    legend for the file; a structure set without a map, or with a map of another CT's grid, is skipped."""
    root = tmp_path / "archive"
    kept = make_phantom(root / "kept", seed=11, settings=SMALL)
    other = make_phantom(root / "other_grid", seed=12, settings=SMALL)
    missing = make_phantom(root / "missing", seed=13, settings=SMALL)
    missing.tissue_labels.unlink()
    for name in ("tissue_labels.nii.gz", "tissue_labels.json"):  # the map of another CT (other pixel spacing)
        shutil.copy(kept.tissue_labels.parent / name, other.tissue_labels.parent / name)
    summary = build_dataset(root, tmp_path / "labels.h5", tissue_labels=True)
    assert [c.source for c in summary.cases] == [kept.truth_rtstruct]
    reasons = {s.source.parent.name: (s.category, s.reason) for s in summary.skipped}
    assert reasons["missing"][0] == "no tissue labels" and "--tissue-labels" in reasons["missing"][1]
    assert reasons["other_grid"][0] == "tissue labels unusable" and "not on the CT's grid" in reasons["other_grid"][1]
    with CTVDataset(tmp_path / "labels.h5") as data:
        case = data.case_ids[0]
        expected = sitk.GetArrayFromImage(sitk.ReadImage(str(kept.tissue_labels)))
        np.testing.assert_array_equal(data.read_tissue_labels(case), expected)
        legend = data.tissue_legend
        assert "fat" in legend.classes and legend.labels[0].name == "AIR" and data.info()["tissue_labels"]
    plain = build_dataset(root, tmp_path / "plain.h5")  # without the option: every case, no maps
    assert len(plain.cases) == 3
    with CTVDataset(tmp_path / "plain.h5") as data:
        assert data.tissue_legend is None and not data.info()["tissue_labels"]
        with pytest.raises(DatasetError, match="no tissue label map.*--tissue-labels"):
            data.read_tissue_labels(data.case_ids[0])
