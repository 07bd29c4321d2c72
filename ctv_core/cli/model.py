"""``ctv model compare``: a fine-tuned package against the one in use on held-out approved cases; promoted or not."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .progress import StageBars

#: Exit status of ``ctv model compare``: promoted, not promoted (errors are 2, as for every command).
PROMOTED, NOT_PROMOTED = 0, 1


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``ctv model compare`` to the ``ctv`` parser's subcommands."""
    from ..model.comparison import DEFAULT_TOLERANCE_DICE

    model = sub.add_parser("model", help="model packages (compare a candidate with the package in use)")
    commands = model.add_subparsers(dest="model_command", required=True)
    p = commands.add_parser(
        "compare", parents=[common], help="candidate vs current package on held-out approved cases",
        description="Predict every held-out case with both packages, score Dice and HD95 against the approved "
                    "contours and promote the candidate only when its mean Dice is higher and no case's Dice is "
                    "lower by more than --tolerance. The comparison is written into the candidate's manifest "
                    "('comparison'). Exit status 0: promoted; 1: not promoted; 2: error.")
    p.add_argument("candidate", type=Path, help="the new package (e.g. fine-tuned on approved contours)")
    p.add_argument("current", type=Path, help="the package in use")
    p.add_argument("--held-out", type=Path, required=True, metavar="DATA.h5",
                   help="approved cases no run trained on (ctv dataset build of a case store)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE_DICE, metavar="DICE",
                   help=f"largest Dice loss allowed on any case (default {DEFAULT_TOLERANCE_DICE})")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    p.set_defaults(func=run_model_compare)


def run_model_compare(args: argparse.Namespace) -> int:
    """Compare, record the comparison in the candidate's manifest, print the table and the decision."""
    from ..training.promotion import compare_packages, record_comparison

    with StageBars(args.quiet, {"comparing": "case"}) as bars:
        comparison = compare_packages(args.candidate, args.current, args.held_out, tolerance_dice=args.tolerance,
                                      device=args.device, progress=bars)
    manifest = record_comparison(args.candidate, comparison)
    print(format_comparison(comparison))
    print(f"Recorded in {manifest}")
    return PROMOTED if comparison["promoted"] else NOT_PROMOTED


def _mm(value: float | None) -> str:
    return "inf" if value is None else f"{value:.1f}"


def format_comparison(comparison: dict[str, Any]) -> str:
    """The per-case table, the means and the decision, for the command line."""
    current, candidate = comparison["current"], comparison["candidate"]
    lines = [f"current   {current['name']} {current['version']}",
             f"candidate {candidate['name']} {candidate['version']}",
             f"{'case':<14}{'Dice current':>13}{'candidate':>11}{'change':>9}{'HD95 current':>14}{'candidate':>11}"]
    for c in comparison["cases"]:
        lines.append(f"{c['case']:<14}{c['current_dice']:>13.3f}{c['candidate_dice']:>11.3f}"
                     f"{c['candidate_dice'] - c['current_dice']:>+9.3f}{_mm(c['current_hd95_mm']):>14}"
                     f"{_mm(c['candidate_hd95_mm']):>11}")
    mean = comparison["mean"]
    lines.append(f"{'mean':<14}{mean['current']['dice']:>13.3f}{mean['candidate']['dice']:>11.3f}"
                 f"{mean['candidate']['dice'] - mean['current']['dice']:>+9.3f}{_mm(mean['current']['hd95_mm']):>14}"
                 f"{_mm(mean['candidate']['hd95_mm']):>11}")
    decision = "PROMOTED" if comparison["promoted"] else "NOT PROMOTED"
    lines.append(f"{decision}: {comparison['rule']} ({comparison['tolerance_dice']:g}).")
    return "\n".join(lines)
