"""The prediction-process protocol: one conversation between a caller and a prediction in a process of its own.

Every door uses it: the Slicer module (``CTVDelineation/Logic``: :mod:`ctv_core.inference.worker`,
polled from Slicer's main thread), and the services (:mod:`ctv_core.service.jobs`: ``ctv predict
--progress json``, warm-started by :mod:`ctv_core.cli.prestarted`).

Start and warm start
    :func:`process_command` is the command line (``PYTHON -u -c BOOTSTRAP ARGS...``; the bootstrap
    puts the caller's own ctv_core first on the child's ``sys.path``, so both sides always run the
    same protocol). The process imports what its run needs (the worker also loads the model and
    says ``ready``) while the caller prepares the input, then waits for ``go``.
Commands, caller to process: one line each on stdin (:func:`command_line`, :class:`Commands`)
    ``go`` (the worker: the CT image file is complete), or ``go`` followed by a JSON list (a
    prestarted ``ctv``: the command's arguments); ``cancel``.
Events, process to caller: one JSON object per line on stdout (:func:`write_event`, :class:`EventReader`)
    ``{"event": KIND, ...}`` with the fields of :data:`EVENT_FIELDS`: ``ready`` (model loaded),
    ``progress`` (``stage``, ``fraction`` 0-1), then one final event: ``done`` (``report``: the
    run's report; ``files``: what it wrote), ``cancelled``, ``error`` (``kind``, ``message``: one
    paragraph saying what was wrong and what to do, never a traceback), or ``probe`` (a device
    probe's answer). A line that is not a JSON object is not protocol (a library writing to the
    stdout file descriptor behind Python's back): the reader keeps it for the log. A line that is a
    JSON object but not a valid event is refused (:class:`~ctv_core.errors.PredictionProtocolError`):
    the two sides come from different versions.
Exit status (:data:`EXIT_MEANINGS`, :func:`conclude`)
    0 done, 1 an unexpected failure (traceback on stderr for the log), 2 an error the user can fix,
    3 cancelled, 130 interrupted (SIGTERM or SIGINT); negative (POSIX) or 128+N statuses are
    signals. Any other status is not this protocol's and is reported as such.

Why cancel is a line on stdin, for every door: on Windows, where Slicer runs, a signal cannot ask a
console-less process to stop (``terminate`` is TerminateProcess, which gives the process no
chance to remove what it half wrote), and in Slicer the interpreter runs under the
``PythonSlicer`` launcher, which a signal to the launcher's pid does not reach. A stdin line reaches
the interpreter on every system and lets it stop between sliding windows and clean up. A closed
stdin stops the worker too (its caller, Slicer, is gone). SIGTERM and SIGINT still end a ``ctv``
command cleanly (:mod:`ctv_core.cli.main`): that is how a service stops its jobs when it shuts down,
and the caller's last resort when a cancelled process does not stop in time.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import PredictionCancelled, PredictionProtocolError

logger = logging.getLogger(__name__)

GO, CANCEL = "go", "cancel"
#: Seconds a process asked to cancel gets to stop by itself before its caller terminates it (a stage
#: that cannot stop midway, such as reading the CT, finishes first).
CANCEL_GRACE_S = 3.0
EXIT_DONE, EXIT_UNEXPECTED, EXIT_USER_ERROR, EXIT_CANCELLED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
_KILLED = "killed, most often because the computer ran out of memory"
_CRASHED = "crashed (segmentation fault)"
_TERMINATED = "terminated"
#: Every exit status a prediction process may end with, and what it means for the user.
EXIT_MEANINGS: dict[int, str] = {
    EXIT_DONE: "done", EXIT_UNEXPECTED: "an unexpected failure", EXIT_USER_ERROR: "an error to fix",
    EXIT_CANCELLED: "cancelled", EXIT_INTERRUPTED: "interrupted",
    -9: _KILLED, 137: _KILLED, -11: _CRASHED, 139: _CRASHED, -15: _TERMINATED, 143: _TERMINATED,
    -6: "aborted", 134: "aborted", -2: "interrupted",
}
_NUMBER = (int, float)
#: Event kind -> (required fields, optional fields), each with its JSON type.
EVENT_FIELDS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "ready": ({}, {"device": str, "model": dict, "seconds": _NUMBER}),
    "progress": ({"stage": str, "fraction": _NUMBER}, {}),
    "done": ({"report": dict}, {"files": dict}),
    "cancelled": ({}, {"message": str}),
    "error": ({"message": str}, {"kind": str}),
    "probe": ({}, {"ctv_core": str, "torch": str, "cuda": bool, "gpus": list, "python": str}),
}
#: The events that end a conversation: exactly one of them, last.
FINAL = ("done", "cancelled", "error", "probe")


def process_command(python: str, module: str, arguments: Sequence[str] = ()) -> list[str]:
    """The command line that runs ``module``'s ``main()`` in ``python`` with ``arguments``.

    The folder holding this ``ctv_core`` goes first on the child's ``sys.path``, so the child runs
    the same ctv_core as its caller whatever else is installed (no ``PYTHONPATH``: Slicer's launcher
    sets its own). ``-u``: every event reaches the caller when it is written.
    """
    root = str(Path(__file__).resolve().parents[2])
    bootstrap = f"import sys; sys.path.insert(0, {root!r}); from {module} import main; sys.exit(main())"
    return [python, "-u", "-c", bootstrap, *arguments]


def command_line(command: str, payload: Any = None) -> str:
    """One command for the process's stdin (without the line end): ``go``, ``go [JSON]`` or ``cancel``."""
    if command not in (GO, CANCEL) or (payload is not None and command != GO):
        raise ValueError(f"not a prediction-process command: {command!r} with {payload!r}")
    return command if payload is None else f"{command} {json.dumps(payload)}"


class Commands:
    """The caller's commands, read from ``stream`` (the process's stdin) on a thread of its own.

    :attr:`cancel` is set by ``cancel``, and, when ``eof_cancels``, by the end of the stream (the
    caller is gone). :attr:`go` is set by the first ``go`` (its JSON payload, if any, in
    :attr:`payload`) and also by a cancel or the end of the stream, so nothing waits for a ``go``
    that will not come (:meth:`wait_for_go` tells them apart). Other lines are ignored.
    """

    def __init__(self, stream: IO[str], eof_cancels: bool = True) -> None:
        self.go = threading.Event()
        self.cancel = threading.Event()
        self.payload: Any = None
        self.eof_cancels = eof_cancels
        self._went = False
        self._stream = stream
        threading.Thread(target=self._read, name="ctv-process-stdin", daemon=True).start()

    def _read(self) -> None:
        try:
            self._follow()
        except (OSError, ValueError):  # no readable stdin (closed, or none at all): as its end
            pass
        if self.eof_cancels:
            self.cancel.set()
        self.go.set()

    def _follow(self) -> None:
        for line in self._stream:
            command, _, payload = line.strip().partition(" ")
            if command.lower() == GO and not self._went:
                try:
                    self.payload = json.loads(payload) if payload else None
                except ValueError:
                    logger.warning("'go' with a payload that is not JSON ignored: %.80s", payload)
                    continue
                self._went = True
                self.go.set()
            elif command.lower() == CANCEL:
                self.cancel.set()
                return

    def wait_for_go(self) -> Any:
        """Block until ``go``; returns its payload. Raises ``PredictionCancelled`` when the run was
        cancelled, or the stream ended, before a ``go``."""
        self.go.wait()
        if self.cancel.is_set() or not self._went:
            raise PredictionCancelled("Prediction cancelled before it started; nothing was written.")
        return self.payload


_stdin_commands: Commands | None = None
_stdin_lock = threading.Lock()


def stdin_commands(eof_cancels: bool = False) -> Commands:
    """The commands of this process's stdin: one reader per process (a prestarted ``ctv`` reads its ``go``
    and the command it runs reads ``cancel`` from the same reader). ``eof_cancels`` applies when it is made."""
    global _stdin_commands
    with _stdin_lock:
        if _stdin_commands is None:
            _stdin_commands = Commands(sys.stdin, eof_cancels=eof_cancels)
        return _stdin_commands


def check_event(event: Any) -> str:
    """The kind of ``event`` (a decoded JSON value) if it is a valid event, else PredictionProtocolError."""
    if not isinstance(event, dict) or event.get("event") not in EVENT_FIELDS:
        kind = event.get("event") if isinstance(event, dict) else None
        raise PredictionProtocolError(
            f"The prediction process sent an unknown message ({json.dumps(event)[:120]}): "
            f"{'no event' if kind is None else f'event {kind!r}'} is not among {', '.join(EVENT_FIELDS)}. The "
            "prediction process and its caller come from different versions of ctv_core; reinstall the extension "
            "(or the ctv_core package) so both are one version.")
    kind = event["event"]
    required, optional = EVENT_FIELDS[kind]
    for name, types in {**optional, **required}.items():
        present = name in event
        if (not present and name in required) or (present and (not isinstance(event[name], types) or
                                                                (types is _NUMBER and isinstance(event[name], bool)))):
            raise PredictionProtocolError(
                f"The prediction process sent a '{kind}' event with {'no' if not present else 'a malformed'} field "
                f"'{name}' ({json.dumps(event)[:120]}). The prediction process and its caller come from different "
                "versions of ctv_core; reinstall the extension (or the ctv_core package) so both are one version.")
    if kind == "progress" and not 0.0 <= event["fraction"] <= 1.0:
        raise PredictionProtocolError(f"The prediction process reported progress {event['fraction']!r} outside 0-1 "
                                      f"in stage '{event['stage']}'; this is a bug, please report it.")
    return kind


def write_event(event: dict[str, Any], stream: IO[str] | None = None) -> None:
    """Send one event to the caller: a JSON object on one line of ``stream`` (default: stdout), flushed.

    The one place in ctv_core outside the command line's printing that writes to stdout: stdout *is*
    the prediction process's channel to its caller (``Testing/test_architecture.py`` allows exactly
    this function). An event the reader would refuse is refused here first.
    """
    check_event(event)
    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(event, allow_nan=False) + "\n")
    out.flush()


@dataclass
class EventReader:
    """Reads one prediction process's stdout, line by line, into checked events.

    Attributes
    ----------
    events
        Every event read, in order.
    final
        The final event (:data:`FINAL`) once read, else None.
    other
        The last lines that were not protocol, for the log.
    """

    events: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    other: deque = field(default_factory=lambda: deque(maxlen=50))

    def read(self, line: str) -> dict[str, Any] | None:
        """The event on ``line``, or None for an empty line or one that is not protocol (kept in :attr:`other`).

        Raises
        ------
        PredictionProtocolError
            A JSON object that is not a valid event, or any event after the final one.
        """
        text = line.strip()
        if not text:
            return None
        if not text.startswith("{"):
            self.other.append(text)
            logger.info("prediction process: %s", text)
            return None
        try:
            event = json.loads(text)
        except ValueError as exc:
            raise PredictionProtocolError(
                f"The prediction process sent a malformed message ({exc}): {text[:120]}. This is a bug or the two "
                "sides come from different versions of ctv_core; reinstall, and report it if it stays.") from exc
        kind = check_event(event)
        if self.final is not None:
            raise PredictionProtocolError(f"The prediction process sent '{kind}' after its final '"
                                          f"{self.final['event']}' event; this is a bug, please report it.")
        self.events.append(event)
        if kind in FINAL:
            self.final = event
        return event


@dataclass(frozen=True)
class Ending:
    """How a prediction process ended, for the user.

    Attributes
    ----------
    state
        "done", "cancelled" or "failed".
    message
        For "failed" and "cancelled": one paragraph for the user.
    report
        For "done": the ``report`` of the ``done`` event.
    """

    state: str
    message: str = ""
    report: dict[str, Any] | None = None


def exit_meaning(code: int) -> str:
    """What exit status ``code`` means, for the user; a status outside :data:`EXIT_MEANINGS` says so."""
    if code in EXIT_MEANINGS:
        return f"{EXIT_MEANINGS[code]}, exit status {code}"
    return (f"exit status {code}, which a ctv prediction process never gives: another program ran in its place or "
            "stopped it")


def failure_message(code: int, stderr: str = "", details: str = "the log") -> str:
    """The one-paragraph message of a process that ended with ``code`` without an ``error`` event.

    A ``ctv`` command refusing its arguments exits 2 with its message as the last line of
    ``stderr``; anything else is what the exit status says and where the ``details`` are (the
    caller logs ``stderr`` there: a user is never shown a traceback).
    """
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    if code == EXIT_USER_ERROR and lines and ": error: " in lines[-1]:
        return lines[-1].split(": error: ", 1)[1]
    return (f"The prediction process stopped without a result ({exit_meaning(code)}). The details are in "
            f"{details}; try again, or with the CPU device if a GPU was used.")


def conclude(final: dict[str, Any] | None, code: int, stderr: str = "", details: str = "the log") -> Ending:
    """The ending of a process whose final event was ``final`` (None: none came) and exit status ``code``.

    Done needs both a ``done`` event and exit status 0. An ``error`` event gives its own message, a
    ``cancelled`` event a cancellation; anything else is a failure saying what the exit status
    means (:func:`failure_message`), exit status 3 without a ``cancelled`` event included: nobody knows
    what the process left behind.
    """
    kind = final["event"] if final is not None else None
    if kind == "done" and code == EXIT_DONE:
        return Ending("done", report=final["report"])
    if kind == "error":
        return Ending("failed", str(final["message"]))
    if kind == "cancelled":
        return Ending("cancelled", str(final.get("message") or "Prediction cancelled; nothing was written."))
    return Ending("failed", failure_message(code, stderr, details))
