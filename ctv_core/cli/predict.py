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
                   help="progress as bars on stderr (default) or, for programs running ctv predict, as the "
                        "prediction-process protocol: JSON lines on stdout ({\"event\": \"progress\", \"stage\": ..., "
                        "\"fraction\": ...}, then one of {\"event\": \"done\", \"report\": ..., \"files\": ...}, "
                        "{\"event\": \"error\", ...}, {\"event\": \"cancelled\", ...}); a line 'cancel' on stdin stops "
                        "it (exit status 3)")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Run the predict job with progress bars (or JSON lines) and print its summary."""
    from ..inference.predict_job import run_predict_job

    if args.progress == "json":
        return _run_with_events(args)
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


def _run_with_events(args: argparse.Namespace) -> int:
    """``ctv predict --progress json``: the run speaks the prediction-process protocol on stdout
    (:mod:`ctv_core.inference.process_protocol`) and stops at a ``cancel`` line on stdin."""
    import contextlib
    import sys

    from ..errors import CTVError, PredictionCancelled
    from ..inference.predict_job import run_predict_job
    from ..inference.process_protocol import EXIT_CANCELLED, stdin_commands, write_event
    from .main import user_message

    channel = sys.stdout
    commands = stdin_commands(eof_cancels=False)  # a script's closed stdin is no cancel

    def report(stage: str, fraction: float) -> None:
        write_event({"event": "progress", "stage": stage, "fraction": round(fraction, 4)}, channel)

    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout is the protocol's: anything else printed goes to stderr
            result = run_predict_job(args.ct_dir, args.out_dir, model=args.model, device=args.device,
                                     engine=args.engine, series_uid=args.series, formats=args.formats.split(","),
                                     progress=report,
                                     cancelled=commands.cancel.is_set, supersedes=args.supersedes)
    except PredictionCancelled as exc:
        write_event({"event": "cancelled", "message": str(exc)}, channel)
        return EXIT_CANCELLED
    except (CTVError, OSError) as exc:  # the event for the caller; the ctv command prints it and exits 2 as ever
        write_event({"event": "error", "kind": type(exc).__name__, "message": user_message("predict", exc)}, channel)
        raise
    write_event({"event": "done", "report": result.report,
                 "files": {key: str(path) for key, path in result.files.items()}}, channel)
    return 0
