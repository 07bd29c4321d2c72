"""``python -m ctv_core.cli.prestarted``: a ``ctv`` command started before its arguments are known.

A service that runs ``ctv predict`` for each job (:mod:`ctv_core.service.jobs`) starts this process
ahead of the next job: it imports what ``ctv predict`` needs (OpenVINO, SimpleITK, pydicom, highdicom,
matplotlib, the pipeline) while nothing waits for it, then waits for the prediction-process
protocol's ``go`` (:mod:`ctv_core.inference.process_protocol`), whose payload is the command's
arguments as a JSON list, and runs them exactly as ``ctv`` would (the same parser, messages, exit
status and ``--progress json`` events; a later ``cancel`` line stops the run). A job then costs its
own work, not the interpreter's start (seconds on a busy machine). A ``cancel`` or a closed stdin
before ``go`` ends it without running anything.
"""

from __future__ import annotations

import sys

from ..errors import PredictionCancelled


def main() -> int:
    import ctv_core.inference.predict_job  # noqa: F401 - importing ahead of the job is the point
    import ctv_core.structures.seg  # noqa: F401
    from ctv_core.errors import MissingDependencyError
    from ctv_core.model.graph import import_openvino

    try:
        import_openvino()  # the CPU engine's library (ctv_core.model.engines), its telemetry off
    except MissingDependencyError:
        pass  # the network then runs on PyTorch, imported when the job opens its engine
    from ctv_core.inference.process_protocol import EXIT_DONE, stdin_commands

    from .main import main as ctv

    try:
        arguments = stdin_commands(eof_cancels=False).wait_for_go()
    except PredictionCancelled:
        return EXIT_DONE
    if not isinstance(arguments, list) or not all(isinstance(a, str) for a in arguments):
        sys.stderr.write(f"ctv (prestarted): 'go' must carry the command's arguments as a JSON list of strings, "
                         f"not {arguments!r}\n")
        return 2
    return ctv(arguments)


if __name__ == "__main__":
    sys.exit(main())
