"""Benchmark: how a model holds up when the CT looks unlike its training data (the appearance-shift table).

Usage::

    .venv/bin/python benchmarks/appearance_shift.py [--model LABEL=PKG ...] [--seeds 9001 9002 ...]
        [--shifts realistic hu_offset_+40 ...] [--matrix 256] [--json OUT.json] [--cache DIR]

Phantoms of seeds never trained on (the demo models train on seeds 100-147; 9000 on are never
used) are rendered in the realistic appearance and in every appearance shift of
:mod:`ctv_core.phantom.appearance` (kernel, noise, contrast, slice thickness, HU offsets of
+-40, field of view cut), each shift applied where a scanner applies it: at the CT's resolution,
before the CT exists, by code training never runs. The CT is stored as whole HU (as DICOM would)
and each model predicts it as ``ctv predict`` does; Dice and HD95 against the phantom's truth CTV
on the CT grid (``ctv evaluate``'s definitions). The table gives per shift and model the mean
Dice (lowest in brackets), its change from the realistic rendering, the mean HD95 and how many
predictions carried an anatomy warning.

Default models: ``new`` = the bundled package. To compare with an earlier bundled model, export
it from git, e.g. ``git archive db79514 ctv_core/model/demo | tar -x -C /tmp/old`` and add
``--model old=/tmp/old/ctv_core/model/demo``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctv_core.evaluation.metrics import compute_metrics  # noqa: E402
from ctv_core.inference.predictor import CTVPredictor  # noqa: E402
from ctv_core.phantom.appearance import APPEARANCES, render_appearance  # noqa: E402
from ctv_core.phantom.scan import ScanSettings, plan_scan  # noqa: E402

DEFAULT_SEEDS = (9001, 9002, 9003, 9004, 9005, 9006)
POSITIONS = ("HFS", "HFS", "FFS", "HFS", "HFP", "HFS")  # mostly supine head first, as planning CTs are


def shifted_case(seed: int, shift: str, matrix: int, position: str, cache: Path | None = None):
    """(CT image in whole HU, truth CTV image) of phantom ``seed`` in appearance ``shift``.

    With ``cache``, both are kept there as NIfTI (``<seed>_<position>_<shift>_<matrix>_{ct,ctv}.nii.gz``) and
    read back by later runs, so a second model is compared on the very same images without rendering them again.
    """
    stem = f"{seed}_{position}_{shift}_{matrix}"
    if cache is not None and (cache / f"{stem}_ctv.nii.gz").is_file():
        return sitk.ReadImage(str(cache / f"{stem}_ct.nii.gz")), sitk.ReadImage(str(cache / f"{stem}_ctv.nii.gz"))
    grid, params, offset, rng = plan_scan(seed, ScanSettings(matrix=matrix, position=position, appearance=shift))
    rendered = render_appearance(grid, params, shift, position=position, anatomy_offset_mm=offset, rng=rng)
    ct = grid.image(np.rint(rendered.hu).astype(np.int16))
    truth = grid.image(rendered.structures["CTV"].astype(np.uint8))
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(ct, str(cache / f"{stem}_ct.nii.gz"), useCompression=True)
        sitk.WriteImage(truth, str(cache / f"{stem}_ctv.nii.gz"), useCompression=True)
    return ct, truth


def run_benchmark(models: dict[str, str | None], seeds, shifts, matrix: int = 256, progress=print,
                  cache: Path | None = None) -> list[dict]:
    """One row per (seed, shift, model): Dice, HD95 (mm), volume (cc), warnings."""
    predictors = {label: CTVPredictor(path, device="cpu") for label, path in models.items()}
    rows = []
    for n, seed in enumerate(seeds):
        position = POSITIONS[n % len(POSITIONS)]
        for shift in shifts:
            start = time.perf_counter()
            ct, truth = shifted_case(seed, shift, matrix, position, cache)
            for label, predictor in predictors.items():
                result = predictor.run(ct)
                metrics = compute_metrics(result.mask, truth)
                rows.append({"seed": seed, "position": position, "shift": shift, "model": label,
                             "model_id": predictor.package.model_id, "fingerprint": predictor.package.sha256,
                             "dice": metrics["dice"], "hd95_mm": metrics["hd95_mm"], "volume_cc": result.volume_cc,
                             "warnings": result.warnings})
            progress(f"seed {seed} {position} {shift}: " + ", ".join(
                f"{r['model']} Dice {r['dice']:.3f}" for r in rows[-len(predictors):])
                + f" ({time.perf_counter() - start:.0f} s)")
    return rows


def summarise(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (shift, model): mean and lowest Dice, Dice change from realistic, mean HD95, warned predictions."""
    out = {}
    for shift in dict.fromkeys(r["shift"] for r in rows):
        for model in dict.fromkeys(r["model"] for r in rows):
            these = [r for r in rows if r["shift"] == shift and r["model"] == model]
            base = [r for r in rows if r["shift"] == "realistic" and r["model"] == model]
            dice = statistics.fmean(r["dice"] for r in these)
            hd95 = [r["hd95_mm"] for r in these]
            out[shift, model] = {
                "dice": dice, "dice_min": min(r["dice"] for r in these),
                "dice_change": dice - statistics.fmean(r["dice"] for r in base) if base else None,
                "hd95_mm": statistics.fmean(hd95) if all(np.isfinite(hd95)) else float("inf"),
                "warned": sum(1 for r in these if r["warnings"]), "cases": len(these)}
    return out


def format_table(summary: dict[tuple[str, str], dict]) -> str:
    """A Markdown table: one row per shift, Dice (lowest), change and HD95 per model."""
    models = list(dict.fromkeys(model for _, model in summary))
    shifts = list(dict.fromkeys(shift for shift, _ in summary))
    head = "| shift | " + " | ".join(f"{m}: Dice (lowest) | {m}: change | {m}: HD95 mm | {m}: warned"
                                      for m in models) + " |"
    lines = [head, "|" + "---|" * (1 + 4 * len(models))]
    for shift in shifts:
        cells = []
        for model in models:
            s = summary[shift, model]
            change = "" if s["dice_change"] is None or shift == "realistic" else f"{s['dice_change']:+.3f}"
            cells += [f"{s['dice']:.3f} ({s['dice_min']:.3f})", change, f"{s['hd95_mm']:.1f}",
                      f"{s['warned']}/{s['cases']}"]
        lines.append(f"| {shift} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None, metavar="LABEL=PKG",
                        help="a model package to compare (repeatable); default: new=<the bundled package>")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("--shifts", nargs="+", default=list(APPEARANCES), choices=APPEARANCES)
    parser.add_argument("--matrix", type=int, default=256, choices=(256, 512))
    parser.add_argument("--json", type=Path, default=None, help="also write every row and the summary here")
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR",
                        help="keep the rendered CTs here and reuse them in later runs")
    args = parser.parse_args(argv)
    models: dict[str, str | None] = {"new": None}
    if args.model:
        models = dict(item.split("=", 1) if "=" in item else (item, item) for item in args.model)
    shifts = ["realistic"] + [s for s in args.shifts if s != "realistic"]
    start = time.perf_counter()
    rows = run_benchmark(models, args.seeds, shifts, args.matrix, cache=args.cache)
    summary = summarise(rows)
    print(f"\n{len(args.seeds)} unseen phantoms (seeds {', '.join(map(str, args.seeds))}), matrix {args.matrix}, "
          f"{time.perf_counter() - start:.0f} s\n")
    print(format_table(summary))
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "summary": [
            {"shift": shift, "model": model, **values} for (shift, model), values in summary.items()]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
