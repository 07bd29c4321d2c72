"""Approved contours back into training, end to end on phantoms: is the fine-tuned model promoted, and by how much?

The loop as a department would run it, every step through the ``ctv`` command line:

1. phantom CTs (known truth) go into two case stores (``ctv review``'s ``--data`` folders): one whose approvals
   train, one whose approvals are held out; each case is the bundled model's prediction;
2. simulated clinicians approve each case after editing it from the phantom's truth with their habit: Dr A adds a
   3 mm margin all round, Dr B trims 5 mm posteriorly (towards the rectum); cases alternate between them. The
   edit is saved as a version and approved through the review station's desk, which records the edit figures;
3. ``ctv dataset build STORE`` gives each store's approved cases (with the approval records);
4. ``ctv train --initial-weights <bundled model>`` fine-tunes on the training store's approvals, once plainly
   (``configs/finetune_approved_cpu.json``) and once with QAM+OCM (``configs/finetune_approved_cpu_qam.json``);
   ``ctv export`` makes each a package;
5. ``ctv model compare CANDIDATE <bundled model> --held-out`` scores both on the held-out approvals, prints the
   per-case Dice and HD95 and the decision, and records it in the candidate's manifest.

Printed: the per-case tables, per-clinician mean Dice before and after, each decision, and the wall time of each
stage. A CPU budget of minutes: a few dozen fine-tuning steps on small patches, so the figures say whether the
loop works and which way it moves the model, not how much a real fine-tune gains.

    python benchmarks/approved_loop.py [--work DIR] [--train-cases 6] [--held-out-cases 4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ctv_core import load_ct_series
from ctv_core.cli.main import main as ctv
from ctv_core.dataset.hdf5_reader import CTVDataset
from ctv_core.inference.predict_job import describe_input, run_predict_job
from ctv_core.model.manifest import BUNDLED, read_manifest
from ctv_core.phantom import ScanSettings, make_phantom
from ctv_core.service.review.config import StationConfig
from ctv_core.service.review.desk import ReviewDesk
from ctv_core.service.store import CaseStore
from ctv_core.structures.mask_files import read_mask, write_mask
from ctv_core.structures.rtstruct import write_rtstruct

ROOT = Path(__file__).resolve().parents[1]
PHANTOM = ScanSettings(matrix=256, slice_thickness_mm=5.0)
CONFIGS = {"plain": ROOT / "configs" / "finetune_approved_cpu.json",
           "qam+ocm": ROOT / "configs" / "finetune_approved_cpu_qam.json"}
MARGIN_MM, TRIM_MM = 3.0, 5.0


def margin(truth: sitk.Image) -> sitk.Image:
    """Dr A's habit: every voxel within ``MARGIN_MM`` (Euclidean, mm) of the truth."""
    distance = sitk.SignedMaurerDistanceMap(truth, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return sitk.Cast(distance <= MARGIN_MM, sitk.sitkUInt8)


def posterior_trim(truth: sitk.Image) -> sitk.Image:
    """Dr B's habit: the truth less its posterior ``TRIM_MM`` (a voxel stays when the voxel ``TRIM_MM`` behind it,
    towards +y in LPS, is also inside)."""
    direction = np.reshape(truth.GetDirection(), (3, 3))
    if not np.allclose(np.abs(direction), np.eye(3)):
        raise ValueError("the phantom is expected axial (j along y)")
    step = int(round(TRIM_MM / truth.GetSpacing()[1])) * int(np.sign(direction[1, 1]))
    array = sitk.GetArrayFromImage(truth) != 0
    behind = np.zeros_like(array)
    if step > 0:
        behind[:, :-step] = array[:, step:]
    else:
        behind[:, -step:] = array[:, :step]
    out = sitk.GetImageFromArray((array & behind).astype(np.uint8))
    out.CopyInformation(truth)
    return out


HABITS = {"Dr A": margin, "Dr B": posterior_trim}


def approve(store: CaseStore, desk: ReviewDesk, ct_dir: Path, prediction: Path, approved: sitk.Image,
            clinician: str, uploads: Path) -> str:
    """A case as the review station holds it: uploaded, predicted (version 1), edited (version 2), approved."""
    files = uploads / f"upload-{len(store.cases())}"
    shutil.copytree(ct_dir, files)
    case_id, _ = store.open_case("upload", files, queue="station")
    job = store.claim_job("station")
    shutil.copytree(prediction, store.version_dir(case_id, job.version))
    store.finish_job(job, model="ctv-demo-phantom")
    ct = load_ct_series(ct_dir)
    number = store.reserve_version(case_id)
    folder = store.version_dir(case_id, number)
    folder.mkdir(parents=True)
    write_rtstruct(ct, {"CTV": approved}, folder / "rtstruct.dcm", algorithm=None)
    write_mask(approved, folder / "ctv.nii.gz")
    report = {"kind": "edit", "author": clinician, "derives_from": {"version": job.version, "kind": "prediction"},
              "input": describe_input(ct)}
    (folder / "report.json").write_text(json.dumps(report), encoding="utf-8")
    store.record_version(case_id, number, "edit", author=clinician)
    desk.approve(case_id, number, clinician, "benchmark")
    return case_id


def fill_store(data: Path, seeds: list[int], work: Path) -> None:
    store = CaseStore(data)
    desk = ReviewDesk(StationConfig(data=data), {"demo": ""})
    for n, seed in enumerate(seeds):
        phantom = make_phantom(work / "phantoms" / str(seed), seed=seed, settings=PHANTOM)
        prediction = run_predict_job(phantom.ct_dir, work / "predictions" / str(seed), device="cpu",
                                     formats=("rtstruct", "nifti")).out_dir
        truth = read_mask(phantom.masks["CTV"], load_ct_series(phantom.ct_dir).grid)
        clinician = list(HABITS)[n % len(HABITS)]
        approve(store, desk, phantom.ct_dir, prediction, HABITS[clinician](truth), clinician, work / "uploads")
    store.close()


def run(*argv: str) -> int:
    print("$ ctv " + " ".join(argv), flush=True)
    return ctv(list(argv))


def clinician_means(comparison: dict, approvers: dict[str, str]) -> list[str]:
    lines = []
    for clinician in sorted(set(approvers.values())):
        rows = [c for c in comparison["cases"] if approvers[c["case"]] == clinician]
        before = np.mean([c["current_dice"] for c in rows])
        after = np.mean([c["candidate_dice"] for c in rows])
        lines.append(f"  {clinician}: {len(rows)} case(s), mean Dice {before:.3f} -> {after:.3f} "
                     f"({after - before:+.3f})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--train-cases", type=int, default=6)
    parser.add_argument("--held-out-cases", type=int, default=4)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="approved_loop_"))
    work.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    train_seeds = list(range(400, 400 + args.train_cases))
    held_seeds = list(range(500, 500 + args.held_out_cases))
    fill_store(work / "store_train", train_seeds, work)
    fill_store(work / "store_held_out", held_seeds, work)
    seconds["phantoms, predictions, approvals"] = time.perf_counter() - start

    start = time.perf_counter()
    for name in ("train", "held_out"):
        assert run("dataset", "build", str(work / f"store_{name}"), str(work / f"{name}.h5"), "--overwrite", "-q") == 0
    seconds["dataset build (both stores)"] = time.perf_counter() - start
    with CTVDataset(work / "held_out.h5") as held:
        approvers = {case: held.approval(case)["approved_by"] for case in held.case_ids}

    decisions = {}
    for method, config in CONFIGS.items():
        run_dir, package = work / "runs" / method.replace("+", "_"), work / "packages" / method.replace("+", "_")
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(package, ignore_errors=True)
        start = time.perf_counter()
        assert run("train", str(work / "train.h5"), str(run_dir), "--config", str(config), "--initial-weights",
                   str(BUNDLED), "--device", "cpu", "-q") == 0
        assert run("export", str(run_dir), str(package), "--checkpoint", "last", "--name",
                   f"ctv-demo-phantom-approved-{method.replace('+', '-')}", "--version", "0.3.0+approved.1",
                   "-q") == 0
        seconds[f"fine-tune and export ({method})"] = time.perf_counter() - start
        start = time.perf_counter()
        status = run("model", "compare", str(package), str(BUNDLED), "--held-out", str(work / "held_out.h5"), "-q")
        seconds[f"compare ({method})"] = time.perf_counter() - start
        assert status in (0, 1), status
        decisions[method] = read_manifest(package)["comparison"]

    print(f"\nTraining approvals: {args.train_cases}, held-out approvals: {args.held_out_cases} (clinicians "
          f"alternating: Dr A +{MARGIN_MM:g} mm margin, Dr B -{TRIM_MM:g} mm posteriorly); work folder {work}")
    for method, comparison in decisions.items():
        mean = comparison["mean"]
        print(f"{method}: mean Dice {mean['current']['dice']:.3f} -> {mean['candidate']['dice']:.3f}, mean HD95 "
              f"{mean['current']['hd95_mm']} -> {mean['candidate']['hd95_mm']} mm; "
              f"{'PROMOTED' if comparison['promoted'] else 'not promoted'}")
        print("\n".join(clinician_means(comparison, approvers)))
    print("Wall time (s), 2 shared cores:")
    for stage, value in seconds.items():
        print(f"  {stage}: {value:.0f}")


if __name__ == "__main__":
    main()
