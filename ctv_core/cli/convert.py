"""``ctv convert``: structures from one format to another on a CT."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``ctv convert``."""
    p = sub.add_parser("convert", parents=[common], help="a structure from one format to another on a CT")
    p.add_argument("ct_dir", type=Path, help="folder of the CT the structures belong to")
    p.add_argument("input", type=Path, help="RTSTRUCT, DICOM SEG, NIfTI or NRRD file")
    p.add_argument("output", type=Path, help="file to write (.dcm, .nii.gz, .nrrd)")
    p.add_argument("--roi", action="append", default=None, metavar="NAME",
                   help="ROI name or regular expression (repeatable); default: all")
    p.add_argument("--to", choices=("rtstruct", "seg", "nifti", "nrrd"), default=None,
                   help="output format (default: from the output's ending; .dcm = rtstruct)")
    p.add_argument("--series", default=None, metavar="UID", help="SeriesInstanceUID when CT_DIR has several")
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    """Convert and print the file written."""
    from ..structures.convert import convert_structures

    roi = args.roi if args.roi is None or len(args.roi) > 1 else args.roi[0]
    out = convert_structures(args.ct_dir, args.input, args.output, roi=roi, to=args.to, series_uid=args.series)
    print(f"Wrote {out}")
    return 0
