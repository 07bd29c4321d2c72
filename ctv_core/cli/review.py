"""``ctv review``: the browser review station (upload, review slice by slice, edit, versions, download)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import CTVError


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``ctv review``."""
    p = sub.add_parser(
        "review", parents=[common], help="the browser review station: upload a CT, review and edit the CTV, download",
        description="Serve the review station: upload a CT (a zip of its DICOM folder, or its files) in the browser, "
                    "the CTV is delineated in a worker process, reviewed slice by slice (autoplay), edited with "
                    "Slicer's Segment Editor, and every version downloads as an RTSTRUCT on the CT's own UIDs, a "
                    "DICOM SEG or NIfTI. An HTTP API beside the page serves scripts. Needs the 'review' extra "
                    "(pip install -e \".[review]\"). Cases live under --data and survive a restart; a DICOM node "
                    "given the same --data shows its cases here too.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this computer only; any other needs a token)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0: any free port)")
    p.add_argument("--data", type=Path, default=Path("review_data"), metavar="DIR",
                   help="case store: uploads, results, versions, the index and the audit log (default: ./review_data)")
    p.add_argument("--model", type=Path, action="append", default=None, metavar="PKG",
                   help="model package (repeatable: the first runs every upload, all are offered for re-runs; "
                        "default: the bundled one)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--engine", choices=("auto", "openvino", "torch"), default="auto",
                   help="what runs the network (as ctv predict --engine; auto: OpenVINO on the CPU)")
    p.add_argument("--token", default=None, metavar="T",
                   help="access token every page and API call must carry (at least 16 characters); on an address "
                        "other than loopback one is generated and printed when none is given")
    p.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                   help="read the access token from FILE (keeps it out of the process list); one token per line, "
                        "each may be named (NAME:TOKEN): the audit log records the name of the token used")
    p.add_argument("--max-upload-mb", type=int, default=2048, metavar="MB", help="largest upload (default: 2048)")
    p.add_argument("--max-unpacked-mb", type=int, default=4096, metavar="MB",
                   help="largest upload once unpacked (default: 4096)")
    p.add_argument("--max-files", type=int, default=20000, help="most files in one upload (default: 20000)")
    p.add_argument("--max-upload-cpu-seconds", type=float, default=120.0, metavar="S",
                   help="CPU time examining one upload may take (unpacking, reading, decoding) before it is refused "
                        "(default: 120)")
    p.add_argument("--workers", type=int, default=1, help="predictions at once (default: 1)")
    p.set_defaults(func=run_review)


def _token_lines(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The (name, token) lines of --token-file (name '' for an unnamed token)."""
    try:
        text = args.token_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CTVError(f"The token file '{args.token_file}' cannot be read ({getattr(exc, 'strerror', None) or exc})."
                       ) from exc
    lines = []
    for line in (raw.strip() for raw in text.splitlines()):
        if line:
            name, _, token = line.rpartition(":")
            lines.append((name.strip(), token.strip()))
    if not lines:
        raise CTVError(f"The token file '{args.token_file}' holds no token; write one per line (NAME:TOKEN or TOKEN).")
    return lines


def _token(args: argparse.Namespace) -> tuple[str | None, bool]:
    """The access token (the first of --token-file) and whether it was generated here."""
    from ..service.review.config import is_loopback, new_token

    if args.token_file is not None:
        return _token_lines(args)[0][1], False
    if args.token is not None:
        return args.token, False
    return (new_token(), True) if not is_loopback(args.host) else (None, False)


def _users(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The named tokens of --token-file."""
    if args.token_file is None:
        return ()
    return tuple((name, token) for name, token in _token_lines(args) if name)


def run_review(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM."""
    from ..service.review.config import StationConfig
    from ..service.review.server import serve
    from ..service.review.uploads import MB, UploadLimits

    os.umask(0o077)  # every file and folder the station and its predictions write is the station user's only
    token, generated = _token(args)
    config = StationConfig(data=args.data, host=args.host, port=args.port, models=tuple(args.model or [None]),
                           device=args.device, engine=args.engine, token=token, users=_users(args),
                           workers=args.workers,
                           limits=UploadLimits(args.max_upload_mb * MB, args.max_unpacked_mb * MB, args.max_files,
                                               args.max_upload_cpu_seconds))

    def ready(actual: StationConfig) -> None:
        print(f"ctv review listening on {actual.url}  (data in {actual.data}; Ctrl+C stops)", flush=True)
        if generated:
            print(f"access token (generated; give it to the users of the station): {actual.token}", flush=True)

    serve(config, ready)
    return 0
