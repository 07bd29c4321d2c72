"""The ``ctv`` command line: parses arguments, then calls one public function by keyword.

Errors that users can cause (``CTVError``) are printed as one paragraph on stderr with exit
status 2; no traceback. Logging is configured here and nowhere else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .._version import __version__
from ..errors import CTVError
from .progress import StageBars

logger = logging.getLogger("ctv_core")


def _cmd_phantom(args: argparse.Namespace) -> int:
    from ..phantom import ScanSettings, make_phantom

    settings = ScanSettings(
        matrix=args.matrix,
        slices=args.slices,
        position=args.position,
        slice_thickness_mm=args.slice_thickness,
        pixel_spacing_mm=tuple(args.pixel_spacing) if args.pixel_spacing else None,
        oblique_deg=args.oblique,
        metal=args.metal,
        contrast=args.contrast,
    )
    start = time.perf_counter()
    with StageBars(args.quiet, {"writing CT slices": "slice"}) as bars:
        phantom = make_phantom(args.out_dir, seed=args.seed, settings=settings,
                               progress=lambda done, total: bars("writing CT slices", done, total))
    g = phantom.grid
    print(f"Phantom (seed {args.seed}) written to {Path(args.out_dir).resolve()} in "
          f"{time.perf_counter() - start:.1f} s")
    print(f"  CT: {phantom.ct_dir} ({g.size[0]} x {g.size[1]} x {g.size[2]} voxels, spacing "
          f"{g.spacing[0]:.3f} x {g.spacing[1]:.3f} x {g.spacing[2]:.2f} mm, {args.position})")
    print(f"  truth masks: {', '.join(sorted(phantom.masks))} in {Path(args.out_dir) / 'masks'}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
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


def _cmd_convert(args: argparse.Namespace) -> int:
    from ..structures.convert import convert_structures

    roi = args.roi if args.roi is None or len(args.roi) > 1 else args.roi[0]
    out = convert_structures(args.ct_dir, args.input, args.output, roi=roi, to=args.to, series_uid=args.series)
    print(f"Wrote {out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..inference.predict_job import run_predict_job

    with StageBars(args.quiet) as bars:
        def progress(stage: str, fraction: float) -> None:
            if stage != "done":
                bars(stage, int(round(fraction * 100)), 100)

        result = run_predict_job(args.ct_dir, args.out_dir, model=args.model, device=args.device,
                                 series_uid=args.series, formats=args.formats.split(","), progress=progress)
    report = result.report
    print(f"CTV {report['ctv']['volume_cc']:.0f} cc in {report['seconds']['total']:.1f} s on {report['device']} "
          f"with {report['model']['name']} {report['model']['version']}")
    for key, path in result.files.items():
        print(f"  {key:8s} {path}")
    for warning in report["warnings"]:
        print(f"  warning  {warning}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctv", description="CTV auto-delineation for cervical cancer radiotherapy (ctv_core)."
    )
    parser.add_argument("--version", action="version", version=f"ctv_core {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log details")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", parents=[common], help="write a synthetic pelvic CT with known truth")
    p.add_argument("out_dir", type=Path, help="new or empty folder")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same phantom")
    p.add_argument("--matrix", type=int, choices=(256, 512), default=512, help="rows and columns per slice")
    p.add_argument("--slices", type=int, default=None, help="number of slices (default: cover the pelvis)")
    p.add_argument("--position", choices=("HFS", "FFS", "HFP", "FFP"), default="HFS", help="patient position")
    p.add_argument("--slice-thickness", type=float, default=None, metavar="MM", help="default: drawn, 1.25-5")
    p.add_argument("--pixel-spacing", type=float, nargs=2, default=None, metavar=("ROW_MM", "COL_MM"),
                   help="DICOM PixelSpacing (row, column); default: field of view / matrix")
    p.add_argument("--oblique", type=float, default=0.0, metavar="DEG",
                   help="tilt the slice plane about the left-right axis")
    p.add_argument("--metal", action=argparse.BooleanOptionalAction, default=None, help="hip prosthesis streaks")
    p.add_argument("--contrast", action=argparse.BooleanOptionalAction, default=None,
                   help="contrast-enhanced vessels")
    p.set_defaults(func=_cmd_phantom)

    p = sub.add_parser("inspect", parents=[common], help="load a CT series from a DICOM folder and describe it")
    p.add_argument("ct_dir", type=Path, help="folder with the CT's DICOM files (searched recursively)")
    p.add_argument("--series", default=None, metavar="UID", help="SeriesInstanceUID when there are several")
    p.add_argument("--allow-gaps", action="store_true", help="resample across missing slices instead of refusing")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("convert", parents=[common], help="a structure from one format to another on a CT")
    p.add_argument("ct_dir", type=Path, help="folder of the CT the structures belong to")
    p.add_argument("input", type=Path, help="RTSTRUCT, DICOM SEG, NIfTI or NRRD file")
    p.add_argument("output", type=Path, help="file to write (.dcm, .nii.gz, .nrrd)")
    p.add_argument("--roi", action="append", default=None, metavar="NAME",
                   help="ROI name or regular expression (repeatable); default: all")
    p.add_argument("--to", choices=("rtstruct", "seg", "nifti", "nrrd"), default=None,
                   help="output format (default: from the output's ending; .dcm = rtstruct)")
    p.add_argument("--series", default=None, metavar="UID", help="SeriesInstanceUID when CT_DIR has several")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("predict", parents=[common], help="CTV auto-delineation of one CT series")
    p.add_argument("ct_dir", type=Path, help="folder with the CT's DICOM files")
    p.add_argument("out_dir", type=Path, help="folder for rtstruct.dcm, report.json, qa.png (created if needed)")
    p.add_argument("--model", type=Path, default=None, metavar="PKG", help="model package (default: the bundled one)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--series", default=None, metavar="UID", help="SeriesInstanceUID when CT_DIR has several")
    p.add_argument("--formats", default="rtstruct", metavar="LIST",
                   help="comma-separated outputs among rtstruct, seg, nifti (default: rtstruct)")
    p.set_defaults(func=_cmd_predict)

    from ..dataset.builder import add_dataset_commands
    from ..evaluation.evaluate import add_evaluate_command
    from .training import add_training_commands

    add_dataset_commands(sub, common)
    add_training_commands(sub, common)
    add_evaluate_command(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ctv`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # pydicom logs every oddity of every file it probes (vendor files, odd VRs); ours are enough.
    logging.getLogger("pydicom").setLevel(logging.INFO if args.verbose else logging.ERROR)
    try:
        return args.func(args)
    except CTVError as exc:
        print(f"ctv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ctv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
