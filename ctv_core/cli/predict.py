"""``ctv predict``: CTV auto-delineation of one CT series into OUT_DIR."""

from __future__ import annotations

import argparse
from pathlib import Path

from .progress import StageBars


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``ctv predict``."""
    p = sub.add_parser("predict", parents=[common], help="CTV auto-delineation of one CT series")
    p.add_argument("ct_dir", type=Path, help="folder with the CT's DICOM files")
    p.add_argument("out_dir", type=Path, help="folder for rtstruct.dcm, report.json, qa.png (created if needed)")
    p.add_argument("--model", type=Path, default=None, metavar="PKG", help="model package (default: the bundled one)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--engine", choices=("auto", "openvino", "torch"), default="auto",
                   help="what runs the network: OpenVINO (CPU, no PyTorch needed) or PyTorch (CUDA, or the CPU); "
                        "auto (default): OpenVINO on the CPU when the model package has a graph, else PyTorch")
    p.add_argument("--series", default=None, metavar="UID", help="SeriesInstanceUID when CT_DIR has several")
    p.add_argument("--formats", default="rtstruct", metavar="LIST",
                   help="comma-separated outputs among rtstruct, seg, nifti (default: rtstruct)")
    p.add_argument("--supersedes", type=Path, default=None, metavar="DIR",
                   help="an earlier ctv predict folder of the same CT whose RTSTRUCT (and SEG) these replace: they "
                        "continue its series with the next instance number and name it as predecessor")
    p.add_argument("--progress", choices=("bars", "json"), default="bars",
                   help="progress as bars on stderr (default) or, for programs running ctv predict, as JSON lines "
                        "on stdout ({\"event\": \"progress\", \"stage\": ..., \"fraction\": ...}, then "
                        "{\"event\": \"done\", \"report\": ...})")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Run the predict job with progress bars (or JSON lines) and print its summary."""
    from ..inference.predict_job import run_predict_job

    if args.progress == "json":
        from ..inference.worker import write_protocol_line

        def report(stage: str, fraction: float) -> None:
            write_protocol_line({"event": "progress", "stage": stage, "fraction": round(fraction, 4)})

        result = run_predict_job(args.ct_dir, args.out_dir, model=args.model, device=args.device,
                                 engine=args.engine, series_uid=args.series, formats=args.formats.split(","),
                                 progress=report,
                                 supersedes=args.supersedes)
        write_protocol_line({"event": "done", "report": result.report})
        return 0
    with StageBars(args.quiet) as bars:
        def progress(stage: str, fraction: float) -> None:
            if stage != "done":
                bars(stage, int(round(fraction * 100)), 100)

        result = run_predict_job(args.ct_dir, args.out_dir, model=args.model, device=args.device,
                                 engine=args.engine, series_uid=args.series, formats=args.formats.split(","),
                                 progress=progress,
                                 supersedes=args.supersedes)
    report = result.report
    print(f"CTV {report['ctv']['volume_cc']:.0f} cc in {report['seconds']['total']:.1f} s on {report['device']} "
          f"({report['engine']}) "
          f"with {report['model']['name']} {report['model']['version']}")
    for key, path in result.files.items():
        print(f"  {key:8s} {path}")
    for warning in report["warnings"]:
        print(f"  warning  {warning}")
    return 0
