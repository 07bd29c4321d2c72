"""Running the prediction in a process of its own, without ever waiting for it.

``ProcessRunner`` is the seam: the logic only starts a command, sends it lines, collects the
lines it has printed so far and asks whether it has ended. ``SubprocessRunner`` does this with
``subprocess.Popen`` and two reader threads (stdout lines into a queue, the tail of stderr kept
for the log), so nothing here blocks Slicer's main thread. The child starts in a process group
of its own, and stopping it stops the whole group: Slicer's ``PythonSlicer`` is a launcher
(CTKAppLauncher) that runs the real interpreter as its own child, so signalling the launcher
alone would leave the interpreter running; tests use a fake runner that plays a
scripted conversation. ``workerCommand`` is the command line of ctv_core's worker
(``ctv_core.inference.worker``) for Slicer's Python; what is said on it is ctv_core's
prediction-process protocol (``ctv_core.inference.process_protocol``).
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ctv_core.inference.process_protocol import process_command

logger = logging.getLogger(__name__)


class ProcessRunner(Protocol):
    """What the logic needs from a child process; every call returns at once."""

    def start(self, command: Sequence[str]) -> None:
        """Launch ``command`` (raises ``OSError`` when it cannot be started)."""

    def send(self, line: str) -> None:
        """Write one line to the process's stdin (ignored once the process has ended)."""

    def readLines(self) -> list[str]:
        """The stdout lines received since the last call, without their line ends."""

    def exitCode(self) -> int | None:
        """None while the process runs or its output is still being read; then its exit status."""

    def terminate(self) -> None:
        """Ask the process and the processes it started to stop (SIGTERM to its group; on Windows the
        whole tree is ended, as Windows has no polite request for a console-less process)."""

    def kill(self) -> None:
        """Stop the process and the processes it started at once."""

    def errorOutput(self) -> str:
        """The last lines the process wrote to stderr, for the log."""


class SubprocessRunner:
    """A ``ProcessRunner`` over ``subprocess.Popen`` with reader threads.

    Parameters
    ----------
    stderrLines
        How many of the last stderr lines to keep for :meth:`errorOutput`.
    """

    def __init__(self, stderrLines: int = 200):
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=stderrLines)
        self._readers: list[threading.Thread] = []

    def start(self, command: Sequence[str]) -> None:
        if os.name == "nt":
            group = {"creationflags": subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP}
        else:
            group = {"start_new_session": True}  # its own process group, led by the child
        self._process = subprocess.Popen(
            list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            encoding="utf-8", errors="replace", bufsize=1, **group)
        self._readers = [
            threading.Thread(target=self._read, args=(self._process.stdout, self._lines.put), daemon=True,
                             name="ctv-worker-stdout"),
            threading.Thread(target=self._read, args=(self._process.stderr, self._keepError), daemon=True,
                             name="ctv-worker-stderr"),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, deliver) -> None:
        for line in stream:
            deliver(line.rstrip("\r\n"))
        stream.close()

    def _keepError(self, line: str) -> None:
        self._stderr.append(line)
        logger.debug("prediction process: %s", line)

    def send(self, line: str) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        try:
            self._process.stdin.write(line.rstrip("\n") + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the process has just ended; its exit status tells the rest

    def readLines(self) -> list[str]:
        lines = []
        while True:
            try:
                lines.append(self._lines.get_nowait())
            except queue.Empty:
                return lines

    def exitCode(self) -> int | None:
        if self._process is None or any(reader.is_alive() for reader in self._readers):
            return None
        code = self._process.poll()
        if code is not None and self._process.stdin and not self._process.stdin.closed:
            try:
                self._process.stdin.close()
            except OSError:
                pass
        return code

    def terminate(self) -> None:
        self._signalGroup(force=False)

    def kill(self) -> None:
        self._signalGroup(force=True)

    def _signalGroup(self, force: bool) -> None:
        """Signal the child's process group (POSIX) or end its process tree (Windows). The group
        outlives its leader: the interpreter a launcher started is reached after the launcher has gone."""
        if self._process is None:
            return
        if os.name == "nt":
            if self._process.poll() is None:
                subprocess.run(["taskkill", "/T", "/F", "/PID", str(self._process.pid)], capture_output=True,
                               creationflags=subprocess.CREATE_NO_WINDOW)
            return
        import signal

        try:
            os.killpg(self._process.pid, signal.SIGKILL if force else signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass  # the whole group has already ended

    def errorOutput(self) -> str:
        return "\n".join(self._stderr)


def pythonExecutable() -> str:
    """The Python that runs the worker: Slicer's ``PythonSlicer`` launcher inside Slicer, else this one.

    Inside the application ``sys.executable`` is the bare interpreter, which lacks the
    launcher's library paths; ``PythonSlicer`` beside it sets them up.
    """
    import slicer

    if hasattr(slicer, "app"):
        found = shutil.which("PythonSlicer", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                   os.environ.get("PATH", "")]))
        if found:
            return found
    return sys.executable


def workerCommand(requestPath: Path, python: str | None = None) -> list[str]:
    """The command line that runs ctv_core's worker on ``requestPath``: the prediction-process protocol's
    (``ctv_core.inference.process_protocol.process_command``, which runs the module's own ctv_core)."""
    return process_command(python or pythonExecutable(), "ctv_core.inference.worker", [str(requestPath)])
