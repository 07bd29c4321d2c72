"""Benchmark: RTSTRUCT write and read of a CTV and six OARs on a 512 x 512 x 200 CT, next to rt-utils.

Usage: .venv/bin/python benchmarks/rtstruct_io.py [--slices 200] [--repeats 3] [--workdir DIR]

Each measurement runs in a fresh process (so peak RSS is its own): ctv_core's write_rtstruct and
read_rtstruct, and rt-utils' RTStructBuilder (create_new + add_roi + save; create_from +
get_roi_mask_by_name) on the same CT and masks. Prints median wall seconds, the rt-utils/ours
ratio, the peak resident memory each operation adds above the loaded CT and masks (MB), file
sizes, and Dice of each reader's masks against the source masks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from memory import reset_peak_rss, status_mb

ROIS = ("CTV", "Bladder", "Rectum", "Bowel", "Femur_Head_L", "Femur_Head_R", "Body")


def _masks(phantom_dir: Path):
    import SimpleITK as sitk

    return {name: sitk.ReadImage(str(phantom_dir / "masks" / f"{name}.nii.gz")) for name in ROIS}


def _dice(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def worker(task: str, phantom_dir: Path, out: Path) -> dict:
    """One measured operation; returns seconds, peak RSS and, for readers, Dice per ROI."""
    import SimpleITK as sitk

    from ctv_core import load_ct_series, read_rtstruct, write_rtstruct

    ct = load_ct_series(phantom_dir / "ct")
    masks = _masks(phantom_dir)
    arrays = {n: sitk.GetArrayFromImage(m) != 0 for n, m in masks.items()}
    result: dict = {}
    baseline_mb = reset_peak_rss()
    start = time.perf_counter()
    if task == "ours-write":
        write_rtstruct(ct, masks, out)
    elif task == "ours-read":
        back = read_rtstruct(out, ct, roi=None)
        read_back = {n: sitk.GetArrayFromImage(back[n]) for n in ROIS}
    elif task == "rtutils-write":
        from rt_utils import RTStructBuilder

        builder = RTStructBuilder.create_new(dicom_series_path=str(phantom_dir / "ct"))
        uids = list(ct.reference.sop_instance_uids)
        order = [uids.index(s.SOPInstanceUID) for s in builder.series_data]
        for name in ROIS:
            builder.add_roi(mask=np.transpose(arrays[name][order], (1, 2, 0)), name=name)
        builder.save(str(out))
    elif task == "rtutils-read":
        from rt_utils import RTStructBuilder

        builder = RTStructBuilder.create_from(dicom_series_path=str(phantom_dir / "ct"), rt_struct_path=str(out))
        uids = list(ct.reference.sop_instance_uids)
        order = [uids.index(s.SOPInstanceUID) for s in builder.series_data]
        read_back = {}
        for name in ROIS:
            got = np.transpose(builder.get_roi_mask_by_name(name), (2, 0, 1))
            read_back[name] = np.zeros_like(got)
            read_back[name][order] = got
    else:
        raise ValueError(task)
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_mb"] = status_mb("VmHWM")
    result["peak_increase_mb"] = result["peak_rss_mb"] - baseline_mb
    if task.endswith("read"):
        result["dice"] = {n: _dice(read_back[n], arrays[n]) for n in ROIS}
    return result


def _run(task: str, phantom_dir: Path, out: Path) -> dict:
    completed = subprocess.run([sys.executable, __file__, "--worker", task, str(phantom_dir), str(out)],
                               capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--worker", nargs=3, metavar=("TASK", "PHANTOM_DIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        task, phantom_dir, out = args.worker
        print(json.dumps(worker(task, Path(phantom_dir), Path(out))))
        return

    from ctv_core.phantom import ScanSettings, make_phantom

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        phantom = make_phantom(Path(tmp) / "ph", seed=0,
                               settings=ScanSettings(matrix=512, slices=args.slices, slice_thickness_mm=2.0))
        g = phantom.grid
        print(f"CT {g.size[0]} x {g.size[1]} x {g.size[2]}, spacing {g.spacing[0]:.3f} x {g.spacing[1]:.3f} x "
              f"{g.spacing[2]:.2f} mm; ROIs: {', '.join(ROIS)}")
        results = {}
        for tool in ("ours", "rtutils"):
            out = Path(tmp) / f"{tool}.dcm"
            for op in ("write", "read"):
                runs = [_run(f"{tool}-{op}", phantom.ct_dir.parent, out) for _ in range(args.repeats)]
                results[(tool, op)] = runs
            results[(tool, "size")] = out.stat().st_size / 2**20
        for op in ("write", "read"):
            ours = statistics.median(r["seconds"] for r in results[("ours", op)])
            theirs = statistics.median(r["seconds"] for r in results[("rtutils", op)])
            ours_mb = max(r["peak_increase_mb"] for r in results[("ours", op)])
            theirs_mb = max(r["peak_increase_mb"] for r in results[("rtutils", op)])
            print(f"{op:5s}: ctv_core {ours:6.2f} s (+{ours_mb:5.0f} MB peak) | rt-utils {theirs:6.2f} s "
                  f"(+{theirs_mb:5.0f} MB peak) | rt-utils / ctv_core = {theirs / ours:5.1f}x")
        print(f"file size: ctv_core {results[('ours', 'size')]:.1f} MB, rt-utils {results[('rtutils', 'size')]:.1f} MB")
        for tool in ("ours", "rtutils"):
            dice = results[(tool, "read")][0]["dice"]
            label = "ctv_core write+read" if tool == "ours" else "rt-utils write+read"
            print(f"{label}: Dice vs source " + ", ".join(f"{n} {d:.4f}" for n, d in dice.items()))
        print("(timings include loading the CT headers for rt-utils' builder; ctv_core's CT load is outside "
              "the timed region, as the CT is loaded once per case in the pipeline)")
        _agreement_on_rt_utils_file(phantom.ct_dir, Path(tmp) / "rtutils.dcm", Path(tmp) / "pm")


def _agreement_on_rt_utils_file(ct_dir: Path, rs: Path, out: Path) -> None:
    """Dice of our reader against plastimatch's rasterisation (--xor-contours) of the rt-utils file."""
    import shutil

    import SimpleITK as sitk

    from ctv_core import load_ct_series, read_rtstruct

    plastimatch = shutil.which("plastimatch")
    if plastimatch is None:
        print("plastimatch not installed: reader agreement not measured")
        return
    subprocess.run([plastimatch, "convert", "--input", str(rs), "--referenced-ct", str(ct_dir), "--output-prefix",
                    str(out), "--prefix-format", "nii.gz", "--xor-contours"], check=True, capture_output=True)
    ct = load_ct_series(ct_dir)
    ours = read_rtstruct(rs, ct, roi=None)
    scores = []
    for name in ROIS:
        theirs = sitk.Resample(sitk.ReadImage(str(out / f"{name}.nii.gz")), ct.image, sitk.Transform(),
                               sitk.sitkNearestNeighbor)
        scores.append(f"{name} {_dice(sitk.GetArrayFromImage(ours[name]), sitk.GetArrayFromImage(theirs)):.4f}")
    print("our reader vs plastimatch on the rt-utils file (contours through voxel centres, every boundary voxel "
          "a tie): Dice " + ", ".join(scores))


if __name__ == "__main__":
    main()
