"""Benchmark: which uncertainty signal ranks the slices where the CTV is wrong above those where it is right.

Usage: .venv/bin/python benchmarks/uncertainty_ranking.py [--cases 12] [--model PKG] [--json OUT.json]

Held-out phantoms (seeds 9401 on; the demo model was trained on seeds 100-199), 256 x 256, with
deliberately hard cases: hip prosthesis streaks (``metal``), low contrast-to-noise (``noise_x3``: three
times the noise), a smoothing kernel, a HU offset, and unusual anatomy (a very full bladder with a
retroverted, deviated uterus; an empty bladder with a strongly anteverted uterus), plus ordinary
phantoms. Each is rendered in memory (no DICOM) and predicted with the model package (default: the
bundled demo model) on the CPU.

For every axial CT slice ``k`` holding CTV in the truth or the prediction, the slice is **wrong** when
the mean distance between the two outlines on that slice exceeds 4 mm (symmetric, in mm; a slice
where only one of them has CTV is wrong). Each candidate signal gives a slice score:

margin
    the default (:mod:`ctv_core.inference.uncertainty`): area of margin ``1 - |2p - 1|`` above the default
    band threshold over the predicted outline's length (mm); ``margin>T``: the same with the band at T.
entropy
    the same with the binary entropy of ``p`` (bits) > 0.5 (a monotone function of the margin: the
    band of entropy > 0.5 bits is that of margin > 0.22).
passes
    disagreement between the refinement passes: the area-integral of ``|p_N - p_(N-1)|`` over the outline
    length (mm); costs a network run with one pass fewer.
flips
    disagreement with the left-right mirrored input, integrated likewise; costs a second network pass
    (seconds printed).
size, smallness
    the baselines: the predicted CTV's area on the slice (mm²), and its negative (small slices, at the
    CTV's ends, ranked first).

It prints the AUC of each score for wrong above right, pooled over all slices and within each CT
(mean over the CTs holding both), the seconds each costs, and the cost of the default map on a
512 x 512 x 120 CT grid (compute, and writing ``uncertainty.nii.gz``). Under load (other processes
on the machine) the seconds are longer; the AUCs are not affected.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage, stats

from ctv_core.geometry import Grid
from ctv_core.inference.postprocessing import postprocess
from ctv_core.inference.predictor import CTVPredictor
from ctv_core.inference.preprocessing import prepare_input, probability_to_mask
from ctv_core.inference.sliding_window import sliding_window_probability
from ctv_core.inference.uncertainty import margin, outline_length_mm, slice_scores, uncertainty_of
from ctv_core.inference.worker import with_options
from ctv_core.model.package import load_model_package
from ctv_core.phantom import ScanSettings
from ctv_core.phantom.appearance import render_appearance
from ctv_core.phantom.scan import plan_scan
from ctv_core.structures.image_files import write_image

WRONG_MM = 4.0
#: Other band thresholds of the margin tried (the default's is ``BAND_THRESHOLD``).
OTHER_BANDS = (0.35, 0.5, 0.7)
SIGNALS = ("margin", *(f"margin>{b:g}" for b in OTHER_BANDS), "entropy", "passes", "flips", "size", "smallness")


def _unusual_full(params):
    return dataclasses.replace(params, bladder_volume_cc=700.0, uterus_version_deg=-35.0, uterus_shift_x_mm=22.0)


def _unusual_empty(params):
    return dataclasses.replace(params, bladder_volume_cc=25.0, uterus_version_deg=60.0, uterus_lateral_deg=20.0)


#: (label, seed, scan settings, anatomy change)
CASES = [
    ("metal", 9401, dict(metal=True), None),
    ("metal", 9402, dict(metal=True), None),
    ("low contrast (noise x3)", 9403, dict(appearance="noise_x3"), None),
    ("low contrast (noise x3)", 9404, dict(appearance="noise_x3"), None),
    ("smooth kernel", 9405, dict(appearance="smooth_kernel"), None),
    ("HU offset -40", 9406, dict(appearance="hu_offset_-40"), None),
    ("unusual: full bladder, retroverted deviated uterus", 9407, {}, _unusual_full),
    ("unusual: empty bladder, anteverted tilted uterus", 9408, {}, _unusual_empty),
    ("metal + noise x3", 9409, dict(metal=True, appearance="noise_x3"), None),
    ("ordinary", 9410, dict(metal=False), None),
    ("ordinary", 9411, dict(metal=False), None),
    ("ordinary", 9412, dict(metal=False), None),
]


def render_case(seed: int, scan: dict, change) -> tuple[sitk.Image, np.ndarray]:
    """The CT image (HU) and the truth CTV ``[k, j, i]`` of one held-out phantom, in memory."""
    settings = ScanSettings(matrix=256, **scan)
    grid, params, offset, rng = plan_scan(seed, settings)
    if change is not None:
        params = change(params)
    rendered = render_appearance(grid, params, settings.appearance, position=settings.position,
                                 anatomy_offset_mm=offset, rng=rng)
    return grid.image(rendered.hu), rendered.structures["CTV"].astype(np.uint8)


def _on_ct(array: np.ndarray, grid: Grid, ct: sitk.Image) -> np.ndarray:
    """A ``[z, y, x]`` float array on the model grid, resampled linearly onto the CT grid ``[k, j, i]``."""
    image = grid.image(np.ascontiguousarray(array, dtype=np.float32))
    return sitk.GetArrayFromImage(sitk.Resample(image, ct, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return -(q * np.log2(q) + (1 - q) * np.log2(1 - q))


def _outline(mask2d: np.ndarray) -> np.ndarray:
    return mask2d & ~ndimage.binary_erosion(mask2d)


def mean_outline_distance_mm(a: np.ndarray, b: np.ndarray, spacing_yx: tuple[float, float]) -> float:
    """Symmetric mean distance (mm) between the outlines of two non-empty 2D masks."""
    ea, eb = _outline(a), _outline(b)
    to_b = ndimage.distance_transform_edt(~eb, sampling=spacing_yx)
    to_a = ndimage.distance_transform_edt(~ea, sampling=spacing_yx)
    return float((to_b[ea].sum() + to_a[eb].sum()) / (ea.sum() + eb.sum()))


def wrong_slices(truth: np.ndarray, pred: np.ndarray, spacing_yx) -> tuple[np.ndarray, np.ndarray]:
    """The slices ``k`` with CTV in truth or prediction, and whether each is wrong (see the module docstring)."""
    ks, wrong = [], []
    for k in range(truth.shape[0]):
        t, p = truth[k] != 0, pred[k] != 0
        if not t.any() and not p.any():
            continue
        ks.append(k)
        wrong.append(not (t.any() and p.any()) or mean_outline_distance_mm(t, p, spacing_yx) > WRONG_MM)
    return np.asarray(ks, dtype=int), np.asarray(wrong, dtype=bool)


def auc(scores: np.ndarray, wrong: np.ndarray) -> float | None:
    """P(score of a wrong slice > score of a right one), ties counting a half; None without both kinds."""
    n_wrong, n_right = int(wrong.sum()), int((~wrong).sum())
    if n_wrong == 0 or n_right == 0:
        return None
    ranks = stats.rankdata(scores)
    return float((ranks[wrong].sum() - n_wrong * (n_wrong + 1) / 2) / (n_wrong * n_right))


def _integrated(signal: np.ndarray, mask: np.ndarray, spacing_xy) -> np.ndarray:
    """Per slice: the area-integral of ``signal`` (mm²) over the outline length (mm)."""
    area = signal.sum(axis=(1, 2)) * spacing_xy[0] * spacing_xy[1]
    length = outline_length_mm(mask, spacing_xy)
    out = np.zeros(len(length))
    np.divide(area, length, out=out, where=length > 0)
    return out


def run_case(image: sitk.Image, truth: np.ndarray, package, fewer_passes, seconds: dict) -> dict:
    settings = package.settings
    predictor = CTVPredictor(package, device="cpu", engine="auto")
    model_input = prepare_input(image, settings.preprocessing, package.divisor)
    inference = settings.inference

    def probability(engine, array):
        return sliding_window_probability(array, engine.logits, inference.patch_zyx, overlap=inference.overlap)

    start = time.perf_counter()
    p = probability(predictor.engine, model_input.array)
    seconds.setdefault("network", []).append(time.perf_counter() - start)
    ct_grid = Grid.of_image(image)
    mask = postprocess(probability_to_mask(p, model_input.grid, ct_grid, inference.threshold), ct_grid.voxel_cc,
                       settings.postprocessing)
    measured = uncertainty_of(p, model_input.grid, ct_grid, mask)
    seconds.setdefault("margin", []).append(measured.seconds)
    spacing_xy = ct_grid.spacing[:2]
    p_ct = _on_ct(p, model_input.grid, image)

    start = time.perf_counter()
    entropy = slice_scores(np.rint(_entropy_bits(p_ct) * 100), mask, spacing_xy)
    seconds.setdefault("entropy", []).append(time.perf_counter() - start)

    scores = {"margin": np.asarray(measured.slice_scores), "entropy": entropy}
    percent = np.rint(margin(p_ct) * 100)
    for band in OTHER_BANDS:
        scores[f"margin>{band:g}"] = slice_scores(percent, mask, spacing_xy, band_threshold=band)
    if fewer_passes is not None:
        start = time.perf_counter()
        p_fewer = probability(CTVPredictor(fewer_passes, device="cpu", engine="auto").engine, model_input.array)
        scores["passes"] = _integrated(np.abs(p_ct - _on_ct(p_fewer, model_input.grid, image)), mask, spacing_xy)
        seconds.setdefault("passes", []).append(time.perf_counter() - start)
    start = time.perf_counter()
    p_flip = probability(predictor.engine, np.ascontiguousarray(model_input.array[:, :, ::-1]))[:, :, ::-1]
    scores["flips"] = _integrated(np.abs(p_ct - _on_ct(p_flip, model_input.grid, image)), mask, spacing_xy)
    seconds.setdefault("flips", []).append(time.perf_counter() - start)
    scores["size"] = (mask != 0).sum(axis=(1, 2)) * spacing_xy[0] * spacing_xy[1]
    scores["smallness"] = -scores["size"]

    ks, wrong = wrong_slices(truth, mask, spacing_xy[::-1])
    return {"slices": ks, "wrong": wrong, "scores": {name: s[ks] for name, s in scores.items()},
            "dice": float(2 * (truth & mask).sum() / max(truth.sum() + mask.sum(), 1))}


def map_cost(package) -> dict:
    """Seconds for the default map and scores on a 512 x 512 x 120 CT grid, and for writing it."""
    image, _ = render_case(9412, dict(metal=False), None)
    small = Grid.of_image(image)
    low, high = small.lps_bounds()
    spacing = tuple(float(v) for v in (high - low) / np.array([511, 511, 119]))
    grid = Grid(size=(512, 512, 120), spacing=spacing, origin=tuple(float(v) for v in low))
    ct = sitk.Resample(image, grid.image(np.zeros(grid.shape, np.uint8)), sitk.Transform(), sitk.sitkLinear,
                       -1024.0, sitk.sitkFloat32)
    model_input = prepare_input(ct, package.settings.preprocessing, package.divisor)
    inference = package.settings.inference
    engine = CTVPredictor(package, device="cpu").engine
    p = sliding_window_probability(model_input.array, engine.logits, inference.patch_zyx, overlap=inference.overlap)
    mask = probability_to_mask(p, model_input.grid, grid, inference.threshold)
    best = min((uncertainty_of(p, model_input.grid, grid, mask) for _ in range(3)), key=lambda u: u.seconds)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        write_image(best.map, Path(folder) / "uncertainty.nii.gz")
        written = time.perf_counter() - start
        size = (Path(folder) / "uncertainty.nii.gz").stat().st_size
    return {"map_seconds": best.seconds, "write_seconds": written, "file_kb": size / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=len(CASES))
    parser.add_argument("--model", default=None, help="model package folder (default: the bundled demo model)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    package = load_model_package(args.model)
    passes = getattr(package.network_config, "passes", None)
    fewer = with_options(package, passes - 1, None, True) if passes and passes > 1 else None
    seconds: dict[str, list[float]] = {}
    results = []
    for label, seed, scan, change in CASES[:args.cases]:
        start = time.perf_counter()
        image, truth = render_case(seed, scan, change)
        case = run_case(image, truth, package, fewer, seconds)
        case.update(label=label, seed=seed)
        results.append(case)
        within = {name: auc(s, case["wrong"]) for name, s in case["scores"].items()}
        print(f"seed {seed} {label:52s} Dice {case['dice']:.3f}  slices {len(case['slices']):3d}  wrong "
              f"{int(case['wrong'].sum()):3d}  AUC " + " ".join(
                  f"{n} {'-' if a is None else f'{a:.3f}'}" for n, a in within.items())
              + f"  ({time.perf_counter() - start:.0f} s)", flush=True)

    figures = {}
    wrong = np.concatenate([c["wrong"] for c in results])
    for name in SIGNALS:
        if name not in results[0]["scores"]:
            continue
        pooled = auc(np.concatenate([c["scores"][name] for c in results]), wrong)
        per_ct = [a for c in results if (a := auc(c["scores"][name], c["wrong"])) is not None]
        figures[name] = {"auc_pooled": pooled, "auc_within_ct": float(np.mean(per_ct)) if per_ct else None,
                         "cts_with_both": len(per_ct),
                         "seconds_mean": float(np.mean(seconds[name])) if name in seconds else 0.0}
    print(f"\n{len(results)} CTs, {len(wrong)} slices with CTV, {int(wrong.sum())} wrong (mean outline distance > "
          f"{WRONG_MM:g} mm or CTV in one only); network pass {np.mean(seconds['network']):.2f} s mean")
    print(f"{'signal':11s} {'AUC pooled':>10s} {'AUC within CT':>14s} {'CTs':>4s} {'seconds':>8s}")
    for name, f in figures.items():
        within = "-" if f["auc_within_ct"] is None else f"{f['auc_within_ct']:.3f}"
        print(f"{name:11s} {f['auc_pooled']:10.3f} {within:>14s} {f['cts_with_both']:4d} {f['seconds_mean']:8.2f}")
    cost = map_cost(package)
    print(f"\ndefault map on 512 x 512 x 120: {cost['map_seconds']:.2f} s to compute, {cost['write_seconds']:.2f} s to "
          f"write ({cost['file_kb']:.0f} kB)")
    if args.json:
        args.json.write_text(json.dumps({"signals": figures, "map_cost": cost, "cases": [
            {"seed": c["seed"], "label": c["label"], "dice": c["dice"], "slices": len(c["slices"]),
             "wrong": int(c["wrong"].sum())} for c in results]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
