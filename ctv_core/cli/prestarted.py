"""``python -m ctv_core.cli.prestarted``: a ``ctv`` command started before its arguments are known.

A service that runs ``ctv predict`` for each job (:mod:`ctv_core.service.jobs`) starts this process
ahead of the next job: it imports what ``ctv predict`` needs (OpenVINO, SimpleITK, pydicom, highdicom,
matplotlib, the pipeline) while nothing waits for it, then reads one line from stdin, the command's
arguments as a JSON list, and runs them exactly as ``ctv`` would (the same parser, messages, exit
status and ``--progress json`` lines). A job then costs its own work, not the interpreter's start
(seconds on a busy machine). An empty line or a closed stdin ends it without running anything.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    import ctv_core.inference.predict_job  # noqa: F401 - importing ahead of the job is the point
    import ctv_core.structures.seg  # noqa: F401
    try:
        import openvino  # noqa: F401 - the CPU engine's library (ctv_core.model.engines)
    except ImportError:
        pass  # the network then runs on PyTorch, imported when the job opens its engine

    from .main import main as ctv

    line = sys.stdin.readline()
    if not line.strip():
        return 0
    return ctv(json.loads(line))


if __name__ == "__main__":
    sys.exit(main())
