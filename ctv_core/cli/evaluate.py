"""``ctv evaluate``: metrics of predicted against reference structures, per case and summarised."""

from __future__ import annotations

import argparse
from pathlib import Path

from .progress import StageBars


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``ctv evaluate``."""
    p = sub.add_parser(
        "evaluate",
        parents=[common],
        help="metrics of predicted against reference structures (Dice, HD95, MSD, surface Dice, volumes)",
        description=(
            "Compare predicted with reference structures: two structure files (one case), or two folders of "
            "cases matched by name (a case is <case>.nii.gz / <case>.dcm / ... or a subfolder <case>/ holding one "
            "structure file). A case folder holding several structure files (as ctv predict and ctv phantom write) "
            "gives the first of rtstruct.dcm, truth.dcm, seg.dcm, ctv.nii.gz it holds (ctv.nii.gz first without "
            "--ct); --pred-file / --ref-file override. Writes OUT_DIR/per_case.csv, summary.csv and metrics.png. "
            "Metric definitions: ctv_core/evaluation/metrics.py."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("prediction", type=Path, metavar="PRED", help="predicted structure file, or folder of cases")
    p.add_argument("reference", type=Path, metavar="REF", help="reference structure file, or folder of cases")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder for the results (created if needed)")
    p.add_argument("--ct", type=Path, default=None, metavar="CT_DIR",
                   help="CT folder (files), or folder of per-case CT folders CT_DIR/<case> (folders); needed for "
                        "RTSTRUCT/SEG, and then every structure is read onto the CT")
    p.add_argument("--roi", default=None, metavar="NAME", help="ROI name or pattern in the reference (and prediction)")
    p.add_argument("--pred-roi", default=None, metavar="NAME", help="ROI name or pattern in the prediction, if other")
    p.add_argument("--pred-file", default=None, metavar="PATH",
                   help="structure file inside each prediction case folder, e.g. ctv.nii.gz (overrides the rule above)")
    p.add_argument("--ref-file", default=None, metavar="PATH",
                   help="structure file inside each reference case folder, e.g. masks/CTV.nii.gz (overrides the rule above)")
    p.add_argument("--tolerance", type=float, default=3.0, metavar="MM", help="surface Dice tolerance in mm")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate with a progress bar and print the summary."""
    from ..evaluation.evaluate import evaluate_folder
    from ..evaluation.summary import PLOTTED_METRICS

    with StageBars(args.quiet, {"evaluating": "case"}) as bars:
        result = evaluate_folder(args.prediction, args.reference, args.out_dir, ct_dir=args.ct, roi=args.roi,
                                 pred_roi=args.pred_roi, pred_file=args.pred_file, ref_file=args.ref_file,
                                 tolerance_mm=args.tolerance,
                                 progress=lambda done, total: bars("evaluating", done, total))
    print(f"{len(result.rows)} case(s) evaluated (surface Dice at {args.tolerance:g} mm)")
    for row in result.summary:
        if row["metric"] in PLOTTED_METRICS:
            spread = f" ± {row['sd']:.3g}" if row["n"] >= 2 else ""
            print(f"  {row['metric']:20s} mean {row['mean']:.4g}{spread}, median {row['median']:.4g} "
                  f"[{row['min']:.4g}, {row['max']:.4g}]")
    for key, path in result.files.items():
        print(f"  {key:8s} {path}")
    return 0
