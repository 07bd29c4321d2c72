"""``ctv predict`` that stops at named stages: the prediction process of the job-outcome tests.

``python paused_ctv.py --sync=DIR -- ARGS...`` runs the ``ctv`` arguments ARGS;
``python paused_ctv.py --sync=DIR --prestarted`` reads them from the protocol's ``go`` line on stdin first,
as :mod:`ctv_core.cli.prestarted` does (a ``cancel`` or a closed stdin ends it, nothing run).
ARGS are parsed by ``ctv``'s own parser (what ``ctv`` refuses, this refuses), and only
``ctv predict --progress json`` is served. The outputs are written the way ``ctv predict`` writes
them (:mod:`ctv_core.output_folder`): a staging folder inside OUT_DIR from the start; then a commit
journal and the files moved in, ``report.json`` (the marker of a complete set) last; then the
``done`` line with the report; exit 0.

Synchronisation, with no sleep: on start it writes its pid to ``DIR/started-<pid>``; at each stage of
:data:`PAUSES` it writes its pid to ``DIR/<stage>`` (atomically) and waits until the test writes a
line into the FIFO ``DIR/go-<stage>`` (made by the test). SIGTERM ends it as it ends a killed
``ctv predict``, wherever it is. With ``--exit-before-finished`` it exits 0 after the done line
instead of waiting at ``finished``, while a child of it (``--hold-stdout``) keeps its stdout open and
waits there: the run has ended with its report, and the worker reading its output has not seen the
end yet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

#: Where it waits for the test, in order: the network running, the outputs half moved in, the done line written.
PAUSES = ("network", "writing", "finished")
REPORT = {"model": {"name": "paused-ctv", "version": "1"}, "ctv": {"volume_cc": 1.0}}
DICOM_BYTES = b"\0" * 128 + b"DICM"


def _mark(sync: Path, name: str) -> None:
    partial = sync / f".{name}.part"
    partial.write_text(str(os.getpid()))
    os.replace(partial, sync / name)


def _pause(sync: Path, stage: str) -> None:
    _mark(sync, stage)
    with open(sync / f"go-{stage}", encoding="utf-8") as go:  # blocks until the test opens it to write
        go.readline()


def _line(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def predict(sync: Path, own: list[str], arguments: list[str]) -> int:
    from ctv_core.cli import build_parser

    args = build_parser().parse_args(arguments)
    if args.command != "predict" or args.progress != "json":
        sys.stderr.write(f"paused_ctv: only 'ctv predict --progress json' is served, not {arguments}\n")
        return 2
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ctv-staging-", dir=out))
    (staging / "rtstruct.dcm").write_bytes(DICOM_BYTES)
    (staging / "report.json").write_text(json.dumps(REPORT))
    _line({"event": "progress", "stage": "network", "fraction": 0.5})
    _pause(sync, "network")

    _line({"event": "progress", "stage": "writing", "fraction": 0.0})
    (out / ".ctv-commit").write_text(json.dumps({"staging": staging.name, "files": ["rtstruct.dcm", "report.json"]}))
    os.replace(staging / "rtstruct.dcm", out / "rtstruct.dcm")
    _pause(sync, "writing")

    os.replace(staging / "report.json", out / "report.json")
    staging.rmdir()
    (out / ".ctv-commit").unlink()
    _line({"event": "done", "report": REPORT})
    if "--exit-before-finished" in own:
        subprocess.Popen([sys.executable, __file__, f"--sync={sync}", "--hold-stdout"])
        return 0
    _pause(sync, "finished")
    return 0


def hold_stdout(sync: Path) -> int:
    """Keep the stdout inherited from the run open until the test lets ``finished`` go on: the run has exited,
    and whoever reads its output has not seen the end yet."""
    _pause(sync, "finished")
    return 0


def main(argv: list[str]) -> int:
    own, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    sync = Path(next(a.split("=", 1)[1] for a in own if a.startswith("--sync=")))
    _mark(sync, f"started-{os.getpid()}")
    if "--hold-stdout" in own:
        return hold_stdout(sync)
    if "--prestarted" in own:
        from ctv_core.errors import PredictionCancelled
        from ctv_core.inference.process_protocol import stdin_commands

        try:
            rest = stdin_commands().wait_for_go()
        except PredictionCancelled:
            return 0
    return predict(sync, own, rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
