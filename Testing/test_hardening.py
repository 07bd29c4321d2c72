"""Fault injection through the real ``ctv`` command: what a hostile user or a failing machine does to it.

Every user- or environment-caused failure must end with exit status 2 and one paragraph on stderr
(no traceback); ``OUT_DIR`` holds exactly one run's complete set, or nothing new; no temporary
file or folder is left (what a killed run leaves is removed by the next run); no pickle is ever
executed; every RTSTRUCT written is dciodvfy-clean. Permissions are tested as a process without
root's override capabilities, disk space and mount points on a small tmpfs (mounted here, as
root), kills with SIGKILL at chosen points of the commit.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import ctv_command, require_tool

from ctv_core import load_ct_series
from ctv_core.cli import main
from ctv_core.errors import ModelPackageError
from ctv_core.model.package import load_model_package, model_fingerprint
from ctv_core.model.qa_models import HUWindowConfig, HUWindowModel
from ctv_core.model.settings import InferenceConfig, ModelSettings, PostprocessingConfig, PreprocessingConfig
from ctv_core.model.package import save_model_package
from ctv_core.output_folder import JOURNAL, _recover
from ctv_core.phantom import ScanSettings, make_phantom

SMALL = ScanSettings(matrix=256, slices=26, slice_thickness_mm=4.0)  # 104 mm, just above the least
SET = {"rtstruct.dcm", "uncertainty.nii.gz", "qa.png", "report.json"}


def qa_package(path: Path, window=(150.0, 3000.0)) -> Path:
    """A fast geometric "model" (HU window) at the phantom's 4 mm grid."""
    settings = ModelSettings(
        preprocessing=PreprocessingConfig(spacing_mm=(4.0, 4.0, 4.0), hu_window=(-1024.0, 3071.0)),
        inference=InferenceConfig(patch_zyx=(32, 64, 64)),
        postprocessing=PostprocessingConfig(keep_largest=0, fill_holes=False))
    config = HUWindowConfig(low_hu=window[0], high_hu=window[1], input_window=settings.preprocessing.hu_window)
    save_model_package(path, HUWindowModel(config), "hu_window", config, settings, name="qa-window", version="1",
                       description="geometric QA model")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two patients' CTs and the QA package (bone window), plus one that draws nothing."""
    root = tmp_path_factory.mktemp("hardening")
    a = make_phantom(root / "a", seed=5, settings=SMALL).ct_dir
    b = make_phantom(root / "b", seed=6, settings=SMALL).ct_dir
    return {"a": a, "b": b, "pkg": qa_package(root / "qa"), "empty_pkg": qa_package(root / "qa0", (5000, 6000)),
            "root": root}


def ctv(*args, as_unprivileged: bool = False, **kwargs) -> subprocess.CompletedProcess:
    command = [ctv_command(), *map(str, args)]
    if as_unprivileged and os.geteuid() == 0:  # root without its override of file permissions
        command = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", *command]
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def assert_user_error(result: subprocess.CompletedProcess, *words: str) -> str:
    message = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stdout, message)
    assert "Traceback" not in message and "\n" not in message, message
    assert message.startswith("ctv "), message
    for word in words:
        assert word in message, (word, message)
    return message


def no_leftovers(folder: Path) -> None:
    hidden = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert not hidden, hidden


def assert_complete_set(folder: Path, ct_dir: Path, names: set[str] = SET) -> dict:
    """``folder`` holds exactly one run's set, made from ``ct_dir``, dciodvfy-clean."""
    assert {p.name for p in folder.iterdir() if not p.name.startswith(".")} == names
    report = json.loads((folder / "report.json").read_text())
    assert set(report["outputs"]) == names
    ct = load_ct_series(ct_dir)
    assert report["input"]["series_instance_uid"] == ct.reference.series_instance_uid
    if "rtstruct.dcm" in names:
        rs = pydicom.dcmread(folder / "rtstruct.dcm")
        referenced = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0] \
            .RTReferencedSeriesSequence[0].SeriesInstanceUID
        assert referenced == ct.reference.series_instance_uid
        check = subprocess.run([require_tool("dciodvfy"), str(folder / "rtstruct.dcm")], capture_output=True, text=True)
        errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
        assert not errors, errors
    return report


# --- the output folder ---------------------------------------------------------------------------

def test_output_folder_that_is_a_file_or_under_a_file(world, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    assert_user_error(ctv("predict", world["a"], afile, "--model", world["pkg"], "-q"), "is a file")
    assert afile.read_text() == "keep me"
    assert_user_error(ctv("predict", world["a"], afile / "out", "--model", world["pkg"], "-q"), "not a folder")


def test_no_permission_is_said_before_predicting(world, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    started = time.perf_counter()
    result = ctv("predict", world["a"], locked / "out", "--model", world["pkg"], "-q", as_unprivileged=True)
    assert_user_error(result, "permission denied")
    assert not list(locked.iterdir())
    # a writable OUT_DIR inside a read-only parent works: nothing is staged beside it any more
    inside = tmp_path / "ro_parent"
    (inside / "out").mkdir(parents=True)
    inside.chmod(0o555)
    done = ctv("predict", world["a"], inside / "out", "--model", world["pkg"], "-q", as_unprivileged=True)
    assert done.returncode == 0, done.stderr
    assert_complete_set(inside / "out", world["a"])
    no_leftovers(inside / "out")
    assert time.perf_counter() - started < 120


@pytest.fixture
def tmpfs(tmp_path):
    mounted = []

    def mount(size: str) -> Path:
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.fail(f"cannot mount a tmpfs for the disk tests (run them as root): {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], capture_output=True)


def test_a_mount_point_works_and_a_full_disk_keeps_the_previous_set(world, tmpfs):
    disk = tmpfs("2m")  # OUT_DIR is the mount point: staging lives inside it, no cross-device rename
    first = ctv("predict", world["a"], disk, "--model", world["pkg"], "-q")
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in disk.iterdir()}
    assert_complete_set(disk, world["a"])
    used = sum(len(b) for b in before.values())
    assert used < 2 * 2**20
    # the next run needs more than is left: refused, the previous set intact, nothing left behind
    filler = disk / ".filler"  # hidden, so the folder still counts as a ctv predict output
    filler.write_bytes(b"\0" * (2 * 2**20 - used - 200 * 1024))
    result = ctv("predict", world["b"], disk, "--model", world["pkg"], "--formats", "rtstruct,seg,nifti", "-q")
    assert_user_error(result, "disk is full", "Nothing in the folder was replaced")
    filler.unlink()
    assert {p.name: p.read_bytes() for p in disk.iterdir()} == before
    no_leftovers(disk)
    # a disk too small for anything: refused, nothing new
    tiny = tmpfs("64k")
    assert_user_error(ctv("predict", world["a"], tiny, "--model", world["pkg"], "-q"), "disk is full")
    assert list(tiny.iterdir()) == []


def test_a_new_set_replaces_the_whole_previous_one(world, tmp_path):
    out = tmp_path / "out"
    first = ctv("predict", world["a"], out, "--model", world["pkg"], "--formats", "rtstruct,seg,nifti", "-q")
    assert first.returncode == 0, first.stderr
    assert_complete_set(out, world["a"], SET | {"seg.dcm", "ctv.nii.gz"})
    second = ctv("predict", world["b"], out, "--model", world["pkg"], "-q")  # another patient, RTSTRUCT only
    assert second.returncode == 0, second.stderr
    assert_complete_set(out, world["b"])  # no seg.dcm or ctv.nii.gz of patient A left beside it
    no_leftovers(out)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    umask = os.umask(0)
    os.umask(umask)
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_foreign_folders_and_concurrent_runs_are_refused(world, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "plan.pdf").write_text("not ours")
    assert_user_error(ctv("predict", world["a"], foreign, "--model", world["pkg"], "-q"), "plan.pdf")
    assert [p.name for p in foreign.iterdir()] == ["plan.pdf"]
    lookalike = tmp_path / "lookalike"
    lookalike.mkdir()
    (lookalike / "rtstruct.dcm").write_text("someone's own")
    assert_user_error(ctv("predict", world["a"], lookalike, "--model", world["pkg"], "-q"), "no report.json")
    busy = tmp_path / "busy"
    busy.mkdir()
    holder = os.open(busy, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another run holds the folder
    try:
        assert_user_error(ctv("predict", world["a"], busy, "--model", world["pkg"], "-q"), "Another ctv predict")
    finally:
        os.close(holder)
    assert list(busy.iterdir()) == []


KILLER = """
import os, signal, sys
import ctv_core.output_folder as folder
real, calls = folder.os.replace, [0]
def replace(a, b):
    calls[0] += 1
    if calls[0] == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(a, b)
folder.os.replace = replace
from ctv_core.cli import main
sys.exit(main({args!r}))
"""


def test_sigkill_during_the_commit_leaves_one_set_and_the_next_run_completes_it(world, tmp_path):
    """Killed at every rename of a run: the two files staged atomically, then the commit's journal, the old
    set moved aside and the new set moved in (report last)."""
    out = tmp_path / "out"
    assert ctv("predict", world["a"], out, "--model", world["pkg"], "-q").returncode == 0
    set_of_a = {p.name: p.read_bytes() for p in out.iterdir()}
    series = {load_ct_series(world[k]).reference.series_instance_uid: world[k] for k in ("a", "b")}
    args = ["predict", str(world["b"]), str(out), "--model", str(world["pkg"]), "-q"]
    seen = set()
    for n in range(1, 10):  # 2 staged files + 1 journal + 3 aside + 3 in
        killed = subprocess.run([sys.executable, "-c", KILLER.format(n=n, args=args)], capture_output=True, text=True)
        assert killed.returncode == -signal.SIGKILL, (n, killed.stderr)
        visible = {p.name for p in out.iterdir() if not p.name.startswith(".")}
        if "report.json" in visible:  # whoever finds the report finds one run's complete set
            report = json.loads((out / "report.json").read_text())
            assert_complete_set(out, series[report["input"]["series_instance_uid"]])
        if (out / JOURNAL).exists():  # the commit had begun: the next run rolls it forward
            expected, state = world["b"], "journal"
        else:  # the commit had not begun (the old set) or was done (the new one)
            expected = series[report["input"]["series_instance_uid"]]
            state = "old" if expected == world["a"] else "new"
        seen.add(state)
        _recover(out, "report.json")  # what the next run does first
        assert_complete_set(out, expected)
        no_leftovers(out)
        for p in out.iterdir():  # back to A's set for the next kill
            p.unlink()
        for name, data in set_of_a.items():
            (out / name).write_bytes(data)
    assert seen == {"old", "journal"} or seen == {"old", "journal", "new"}, seen


def test_sigkill_while_predicting_leaves_the_previous_set_and_the_next_run_cleans_up(world, tmp_path):
    out = tmp_path / "out"
    assert ctv("predict", world["a"], out, "--model", world["pkg"], "-q").returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    process = subprocess.Popen([ctv_command(), "predict", str(world["b"]), str(out), "--model", str(world["pkg"]),
                                "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(out.glob(".ctv-staging-*/*")):
        time.sleep(0.01)  # until the first output is staged
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")} == before
    assert list(out.glob(".ctv-staging-*")), "the kill came too late to test anything"
    done = ctv("predict", world["b"], out, "--model", world["pkg"], "-q")
    assert done.returncode == 0, done.stderr
    assert_complete_set(out, world["b"])
    no_leftovers(out)


# --- inputs that cannot be a pelvic planning CT --------------------------------------------------

@pytest.mark.parametrize("slices, thickness, words", [(1, 3.0, "1 slice(s) covering 3 mm"),
                                                       (2, 2.5, "2 slice(s) covering 5 mm"),
                                                       (12, 5.0, "12 slice(s) covering 60 mm")])
def test_too_short_a_ct_is_refused_before_predicting(tmp_path, world, slices, thickness, words):
    ct = make_phantom(tmp_path / "short", seed=7, settings=ScanSettings(matrix=256, slices=slices,
                                                                        slice_thickness_mm=thickness)).ct_dir
    result = ctv("predict", ct, tmp_path / "out", "--model", world["pkg"], "-q")
    assert_user_error(result, words, "at least 3 slices and 100 mm")
    assert not (tmp_path / "out").exists()


def test_an_empty_ctv_gives_a_valid_rtstruct_and_says_so(world, tmp_path):
    out = tmp_path / "out"
    done = ctv("predict", world["a"], out, "--model", world["empty_pkg"], "-q")
    assert done.returncode == 0, done.stderr
    report = assert_complete_set(out, world["a"])
    assert report["ctv"]["volume_cc"] == 0 and any("without contours" in w for w in report["warnings"])
    assert "ContourSequence" not in pydicom.dcmread(out / "rtstruct.dcm").ROIContourSequence[0]


# --- model packages -------------------------------------------------------------------------------

def _edit(pkg: Path, change) -> None:
    manifest = json.loads((pkg / "manifest.json").read_text())
    change(manifest)
    (pkg / "manifest.json").write_text(json.dumps(manifest))


def _restamp(manifest: dict) -> None:
    manifest["fingerprint"] = model_fingerprint(manifest)


HOSTILE = {
    "weights a string": (lambda m: m.update(weights="weights.safetensors"), "'weights' must be a JSON object"),
    "bytes a word": (lambda m: m["weights"].update(bytes="lots"), "weights.bytes"),
    "bytes null": (lambda m: m["weights"].update(bytes=None), "weights.bytes"),
    "format_version true": (lambda m: m.update(format_version=True), "format_version"),
    "unknown field": (lambda m: m.update(colour="red"), "unknown field(s) colour"),
    "patch 9x9x9": (lambda m: (m["settings"]["inference"].update(patch_zyx=[9, 9, 9]), _restamp(m)), "multiples of"),
    "width 200000": (lambda m: (m["network"].update(widths=[200000]), _restamp(m)), "widths"),
    "fixed shape 4000^3": (lambda m: (m["settings"]["preprocessing"].update(fixed_shape_zyx=[4000] * 3),
                                      _restamp(m)), "fixed_shape_zyx"),
    "NaN window": (lambda m: m["settings"]["preprocessing"].update(hu_window=[float("nan"), 350.0]), "NaN"),
    "absolute weights": (lambda m: m["weights"].update(file="/etc/passwd"), "plain file name"),
    "weights up and out": (lambda m: m["weights"].update(file="../x.safetensors"), "plain file name"),
    "passes changed": (lambda m: m["network"].update(passes=3), "fingerprint"),
    "threshold changed": (lambda m: m["settings"]["inference"].update(threshold=0.3), "fingerprint"),
}


def _unet_package(path: Path) -> Path:
    import torch

    from ctv_core.model.network_config import NetworkConfig
    from ctv_core.model.unet3d import UNet3D

    torch.manual_seed(0)
    config = NetworkConfig(widths=(4, 8, 8), passes=2)
    settings = ModelSettings(inference=InferenceConfig(patch_zyx=(32, 48, 64)))
    save_model_package(path, UNet3D(config), "unet3d", config, settings, name="t", version="0", description="test")
    return path


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_manifests_are_refused_through_the_cli(world, tmp_path, capsys, case):
    change, words = HOSTILE[case]
    pkg = _unet_package(tmp_path / "pkg")
    _edit(pkg, change)
    assert main(["predict", str(world["a"]), str(tmp_path / "out"), "--model", str(pkg), "-q"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("ctv predict: error: ") and "not a usable model package" in message, message
    assert words in message and "\n" not in message, message
    assert not (tmp_path / "out").exists()


def test_deep_json_symlinked_weights_and_a_folder_for_a_manifest(tmp_path):
    pkg = _unet_package(tmp_path / "deep")
    (pkg / "manifest.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ModelPackageError, match="nested"):
        load_model_package(pkg)
    pkg = _unet_package(tmp_path / "link")
    (tmp_path / "elsewhere.safetensors").write_bytes((pkg / "weights.safetensors").read_bytes())
    (pkg / "weights.safetensors").unlink()
    (pkg / "weights.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(ModelPackageError, match="symbolic link"):
        load_model_package(pkg)
    pkg = _unet_package(tmp_path / "dir")
    (pkg / "manifest.json").unlink()
    (pkg / "manifest.json").mkdir()
    with pytest.raises(ModelPackageError, match="not a regular file"):
        load_model_package(pkg)


class _Trap:
    """Unpickling this writes a file: the proof that code from a model or checkpoint file ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("pickle code ran",))


def test_no_pickle_is_ever_executed(tmp_path, capsys):
    marker = tmp_path / "ran"
    pkg = _unet_package(tmp_path / "pkg")
    trap = pickle.dumps({"weight": _Trap(str(marker))})
    (pkg / "weights.safetensors").write_bytes(trap)
    _edit(pkg, lambda m: (m["weights"].update(bytes=len(trap), sha256=__import__("hashlib").sha256(trap).hexdigest()),
                          _restamp(m)))
    with pytest.raises(ModelPackageError, match="cannot be read"):
        load_model_package(pkg).build_network()
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    import torch

    torch.save({"format": "ctv-checkpoint", "format_version": 2, "step": 1, "trap": _Trap(str(marker))},
               run / "checkpoints" / "best.pt")
    (run / "config.json").write_text("{}")
    (run / "splits.json").write_text(json.dumps({"fold": 0, "folds": 1}))
    assert main(["export", str(run), str(tmp_path / "out_pkg"), "-q"]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert not marker.exists()


# --- structures -----------------------------------------------------------------------------------

def _damage_a_contour(rtstruct: Path, out: Path, roi: str, data: bytes) -> Path:
    """A copy of ``rtstruct`` whose first contour of ``roi`` holds ``data`` as its encoded ContourData."""
    ds = pydicom.dcmread(rtstruct)
    number = next(r.ROINumber for r in ds.StructureSetROISequence if r.ROIName == roi)
    item = next(i for i in ds.ROIContourSequence if i.ReferencedROINumber == number)
    item.ContourSequence[0][0x30060050] = pydicom.dataelem.RawDataElement(
        pydicom.tag.Tag(0x30060050), "DS", len(data), data, 0, False, True)
    ds.save_as(out)
    return out


def test_damaged_contours_are_refused_or_recorded(world, tmp_path, capsys):
    ct_dir = world["a"]
    truth = ct_dir.parent / "truth.dcm"
    nan = _damage_a_contour(truth, tmp_path / "nan.dcm", "Body", b"NaN\\0\\0\\1\\1\\0\\2\\2\\0 ")
    for args in (["convert", ct_dir, nan, tmp_path / "o.nii.gz", "--roi", "Body"],
                 ["evaluate", nan, nan, tmp_path / "eval", "--ct", ct_dir, "--roi", "Body"]):
        assert main([str(a) for a in args]) == 2
        message = capsys.readouterr().err
        assert "not finite numbers" in message and "Traceback" not in message, message
    assert not (tmp_path / "o.nii.gz").exists()
    import shutil

    archive = tmp_path / "nan_archive"  # the dataset builder skips such a structure set with the reason
    shutil.copytree(ct_dir, archive / "ct")
    shutil.copy(nan, archive / "rs.dcm")
    assert main(["dataset", "build", str(archive), str(tmp_path / "n.h5"), "--roi", "Body", "-q"]) == 2
    assert "structure set cannot be read" in capsys.readouterr().err
    # an archive with a structure set whose CTV has a damaged contour (odd coordinate count): recorded, or skipped

    archive = tmp_path / "archive"
    shutil.copytree(ct_dir, archive / "ct")
    _damage_a_contour(truth, archive / "rs.dcm", "CTV", b"1\\2\\3\\4\\5 ")  # five numbers: not points
    assert main(["dataset", "build", str(archive), str(tmp_path / "d.h5"), "-q"]) == 0
    capsys.readouterr()
    assert main(["dataset", "info", str(tmp_path / "d.h5"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cases"] == 1 and info["case_list"][0]["dropped_contours"] == {"CTV": 1}
    assert main(["dataset", "build", str(archive), str(tmp_path / "s.h5"), "--strict", "-q"]) == 2
    assert "damaged contours" in capsys.readouterr().err


def test_contours_beyond_the_ct_are_not_converted_to_an_empty_mask(world, tmp_path, capsys):
    ct = load_ct_series(world["a"])
    ds = pydicom.dcmread(world["a"].parent / "truth.dcm")
    for item in ds.ROIContourSequence:
        for contour in item.get("ContourSequence", []):
            points = np.array(contour.ContourData, dtype=float).reshape(-1, 3)
            points[:, 2] += 500.0  # 50 cm up: another, longer scan of the patient
            contour.ContourData = [f"{v:.4f}" for v in points.ravel()]
    ds.save_as(tmp_path / "far.dcm")
    assert main(["convert", str(world["a"]), str(tmp_path / "far.dcm"), str(tmp_path / "o.nii.gz"),
                 "--roi", "CTV"]) == 2
    message = capsys.readouterr().err
    assert "beyond this CT's slices" in message and "'CTV'" in message
    assert not (tmp_path / "o.nii.gz").exists()
    assert ct.grid.size[2] == 26


def test_grid_mismatch_messages_say_what_differs_and_masks_must_be_binary(world, tmp_path, capsys):
    ct = load_ct_series(world["a"])
    mask = sitk.ReadImage(str(world["a"].parent / "masks" / "CTV.nii.gz"))
    shifted = sitk.Image(mask)
    origin = list(mask.GetOrigin())
    origin[0] += 0.002  # 2 micrometres: beyond the 1 um tolerance, invisible at 3 decimals
    shifted.SetOrigin(origin)
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nii.gz"))
    assert main(["convert", str(world["a"]), str(tmp_path / "shifted.nii.gz"), str(tmp_path / "o.dcm")]) == 2
    message = capsys.readouterr().err
    assert re.search(r"up to 0\.002\d* mm apart", message) and "origin (" in message and "mask vs CT: )" not in message, message
    fuzzy = sitk.Cast(mask, sitk.sitkFloat32) * 0.4
    sitk.WriteImage(fuzzy, str(tmp_path / "fuzzy.nii.gz"))
    assert main(["convert", str(world["a"]), str(tmp_path / "fuzzy.nii.gz"), str(tmp_path / "o.dcm")]) == 2
    assert "probability map" in capsys.readouterr().err
    array = sitk.GetArrayFromImage(mask).astype(np.uint8)
    labels = sitk.GetImageFromArray(array * 2 + array[:, :, ::-1])  # two structures, labels 1, 2 and 3
    labels.CopyInformation(mask)
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    assert main(["convert", str(world["a"]), str(tmp_path / "labels.nii.gz"), str(tmp_path / "o.dcm")]) == 2
    assert "several values" in capsys.readouterr().err
    assert not (tmp_path / "o.dcm").exists()
    assert ct.grid.matches(ct.grid)
