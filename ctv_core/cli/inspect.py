"""``ctv inspect``: load one CT series as ``load_ct_series`` does and describe it."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``ctv inspect``."""
    p = sub.add_parser("inspect", parents=[common], help="load a CT series from a DICOM folder and describe it")
    p.add_argument("ct_dir", type=Path, help="folder with the CT's DICOM files (searched recursively)")
    p.add_argument("--series", default=None, metavar="UID", help="SeriesInstanceUID when there are several")
    p.add_argument("--allow-gaps", action="store_true", help="resample across missing slices instead of refusing")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    """Load the series and print its description (text or JSON)."""
    from ..dicom.series import load_ct_series

    start = time.perf_counter()
    ct = load_ct_series(args.ct_dir, series_uid=args.series, allow_resampling_gaps=args.allow_gaps)
    seconds = time.perf_counter() - start
    if args.json:
        image = ct.image
        print(json.dumps({
            "series_instance_uid": ct.reference.series_instance_uid,
            "study_instance_uid": ct.reference.study_instance_uid,
            "frame_of_reference_uid": ct.reference.frame_of_reference_uid,
            "size": list(image.GetSize()),
            "spacing": list(image.GetSpacing()),
            "origin": list(image.GetOrigin()),
            "direction": list(image.GetDirection()),
            "pixel_type": image.GetPixelIDTypeAsString(),
            "patient_position": ct.reference.patient_position,
            "regularization": ct.regularization,
            "warnings": list(ct.warnings),
            "load_seconds": round(seconds, 3),
        }, indent=2))
    else:
        print(ct.describe())
        print(f"  loaded in {seconds:.2f} s")
    return 0
