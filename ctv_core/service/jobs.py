"""Prediction jobs of the case store, run as ``ctv predict`` processes by worker threads.

One job, one process: ``ctv predict CT_DIR VERSION_DIR --progress json`` (the same job as the
command line), in a process of its own so a crash or a kill never takes the service down, started
so that it dies with the service (Linux). The conversation is the prediction-process protocol
(:mod:`ctv_core.inference.process_protocol`, the Slicer module's too). Each worker starts its next
process while it waits for a job (:mod:`ctv_core.cli.prestarted`: the interpreter and its imports
are ready when the job comes, then ``go`` hands it exactly that command line), so a job does not wait
for Python and torch to load. The worker reads its events into the store (the station's progress
bar), stops it when the user cancels (a ``cancel`` line: the job removes its staging and writes
nothing; SIGTERM if it has not stopped within the protocol's grace period), and records the
outcome.

The outcome decides, not the moment: a process that exited 0 with its report is done
(``on_done(job, report)``, for the service to store the version and, for the node, its outgoing
files in one transaction), even when the service is shutting down; a job the user cancelled, or
whose process failed on its own, fails with the one-paragraph message ``ctv predict`` gave (its
``error`` event, or what its exit status means); a job
stopped because the service shuts down is queued again, its partial version folder removed, so a
queued job never leaves files that look like a version. A process is launched and registered
under the lock that :meth:`JobWorkers.stop` takes to stop, so no process escapes a stop: once
stop has begun, no job is launched (it is queued again).
"""

from __future__ import annotations

import logging
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import PredictionProtocolError
from ..inference.process_protocol import CANCEL, CANCEL_GRACE_S, GO, EventReader, command_line, conclude, \
    process_command
from .audit import AuditLog
from .records import Job
from .store import CaseStore

logger = logging.getLogger(__name__)

#: How often a job's progress within one stage is written to the store, at most (seconds); a new stage is
#: written at once (the store always names the stage the process is in).
PROGRESS_EVERY_S = 0.3
#: After a prestarted process ended on its own, jobs start their process cold for this long (seconds).
PRESTART_RETRY_S = 60.0

OnDone = Callable[[Job, dict[str, Any]], None]
Prepare = Callable[[Job], None]
Arguments = Callable[[Job], Sequence[str]]


@dataclass(frozen=True)
class Program:
    """How a worker runs ``ctv``: the command line of ``ctv`` itself (the job's arguments follow), and of a
    ``ctv`` started before its arguments are known, which takes them from the protocol's ``go`` line
    (:mod:`ctv_core.cli.prestarted`; None: every job starts its process cold)."""

    ctv: tuple[str, ...] = tuple(process_command(sys.executable, "ctv_core.cli.main"))
    prestarted: tuple[str, ...] | None = tuple(process_command(sys.executable, "ctv_core.cli.prestarted"))


def _die_with_parent() -> None:
    """In the child before exec: on Linux, be killed when the service dies (no orphan holding a folder)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def prediction_arguments(store: CaseStore, job: Job, extra: Sequence[str] = ()) -> list[str]:
    """The ``ctv`` arguments of ``job``'s ``ctv predict`` (with ``--series`` when the case names its CT series:
    an upload may hold several), then ``extra``. Values are given as ``--option=value``: none is ever read as
    an option of its own."""
    arguments = ["predict", str(store.ct_dir(job.case_id)), str(store.version_dir(job.case_id, job.version)),
                 f"--device={job.device}", f"--formats={job.formats}", "--progress=json", "-q"]
    series = (store.case(job.case_id) or {}).get("series_uid", "")
    return arguments + ([f"--model={job.model}"] if job.model else []) + ([f"--series={series}"] if series else []) \
        + list(extra)


def _start(command: Sequence[str]) -> subprocess.Popen:
    return subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, encoding="utf-8", errors="replace", preexec_fn=_die_with_parent)


def _send(process: subprocess.Popen, line: str) -> bool:
    """Write one protocol command to ``process``'s stdin; False when it has ended (its stdin is closed)."""
    try:
        process.stdin.write(line + "\n")
        process.stdin.flush()
        return True
    except (OSError, ValueError):
        return False


class JobWorkers:
    """``count`` threads running the store's queued jobs of ``queue`` (see the module docstring).

    ``prepare(job)`` runs in the worker before the job's process is launched; ``arguments(job)``
    adds to its ``ctv predict`` arguments; ``program`` says how ``ctv`` is started.
    """

    def __init__(self, store: CaseStore, queue_name: str, on_done: OnDone, audit: AuditLog, *, count: int = 1,
                 prepare: Prepare | None = None, arguments: Arguments | None = None, poll_s: float = 0.5,
                 program: Program = Program()) -> None:
        self.store, self.queue_name, self.on_done, self.audit = store, queue_name, on_done, audit
        self.count, self.prepare, self.arguments, self.poll_s = count, prepare, arguments, poll_s
        self.program = program
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._processes: dict[int, subprocess.Popen] = {}  # job id -> its process, from launch to end
        self._waiting: dict[int, subprocess.Popen] = {}  # per worker thread, its next prestarted process
        self._prestart_after: dict[int, float] = {}
        self._lock = threading.Lock()  # guards the stop flag's setting, launching and both process tables

    def start(self) -> None:
        for n in range(self.count):
            thread = threading.Thread(target=self._loop, args=(n,), name=f"ctv-{self.queue_name}-job-{n}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` has begun: no process is launched any more."""
        return self._stop.is_set()

    def wake(self) -> None:
        """A job was queued: look for it now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Stop every process that exists and the threads; each job ends by its outcome (module docstring)."""
        with self._lock:  # a launch holds this lock: it happened before (and is stopped here) or sees the flag
            self._stop.set()
            for process in [*self._processes.values(), *self._waiting.values()]:
                process.terminate()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _loop(self, n: int = 0) -> None:
        try:
            while not self._stop.is_set():
                job = self.store.claim_job(self.queue_name)
                if job is None:
                    self._prestart(n)
                    self._wake.wait(self.poll_s)
                    self._wake.clear()
                    continue
                try:
                    self.run(job, n)
                except Exception as exc:  # noqa: BLE001 - a claimed job never stays "running": it fails with the reason
                    logger.exception("job %d failed unexpectedly", job.id)
                    self.store.fail_job(job, f"The service could not run the job ({type(exc).__name__}: {exc}).")
                    self.audit("job-failed", f"job {job.id} case {job.case_id}: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                waiting = self._waiting.pop(n, None)
            if waiting is not None:  # it holds no job and has written nothing: killed, and gone when stop returns
                waiting.kill()
                waiting.wait()
            self.store.close()

    def _prestart(self, n: int) -> None:
        """Have worker ``n``'s next process importing (``ctv_core.cli.prestarted``) while no job waits."""
        if self.program.prestarted is None:
            return
        with self._lock:
            waiting = self._waiting.get(n)
            if self._stop.is_set() or (waiting is not None and waiting.poll() is None) or \
                    time.monotonic() < self._prestart_after.get(n, 0.0):
                return
            if waiting is not None:  # it ended by itself: the next jobs start cold for a while
                logger.warning("the prestarted ctv process ended with status %s: %s", waiting.returncode,
                               waiting.stderr.read()[-500:])
                self._waiting.pop(n)
                self._prestart_after[n] = time.monotonic() + PRESTART_RETRY_S
                return
            self._waiting[n] = _start(self.program.prestarted)

    def _launch(self, job: Job, n: int) -> subprocess.Popen | None:
        """``ctv predict`` for ``job``, in worker ``n``'s prestarted process when it is alive, else a new one,
        registered as the job's process; None when the workers are stopping (nothing was launched)."""
        arguments = prediction_arguments(self.store, job, self.arguments(job) if self.arguments is not None else ())
        with self._lock:
            if self._stop.is_set():
                return None
            process = self._waiting.pop(n, None)
            if process is not None and (process.poll() is not None or not _send(process, command_line(GO, arguments))):
                process.kill()  # it died meanwhile
                process.wait()
                process = None
            if process is None:
                process = _start([*self.program.ctv, *arguments])
            self._processes[job.id] = process
        return process

    def run(self, job: Job, n: int = 0) -> None:
        """Run one claimed job to its end: done, failed, cancelled, or queued again on shutdown."""
        if self.prepare is not None:
            self.prepare(job)
        process = self._launch(job, n)
        if process is None:
            self._requeue(job, "the service stopped before its process started")
            return
        self.audit("job-start", f"job {job.id} case {job.case_id} version {job.version} (attempt {job.attempts})")
        try:
            final, refused, cancelled, stderr = self._follow(job, process)
        finally:
            with self._lock:
                self._processes.pop(job.id, None)
        ending = conclude(final, process.returncode, stderr, details="the service's log")
        if cancelled:
            shutil.rmtree(self.store.version_dir(job.case_id, job.version), ignore_errors=True)
            self.store.fail_job(job, "Cancelled by the user; nothing was written.")
            self.audit("job-cancelled", f"job {job.id} case {job.case_id} (exit status {process.returncode})")
        elif refused is None and ending.state == "done":
            self.on_done(job, ending.report)
        elif self._stop.is_set():
            self._requeue(job, f"the service stopped it (exit status {process.returncode})")
        else:
            message = refused or ending.message
            if final is None or final["event"] != "error":
                logger.warning("job %d: the prediction process ended with status %s; its last messages:\n%s", job.id,
                               process.returncode, stderr[-2000:])
            self.store.fail_job(job, message)
            self.audit("job-failed", f"job {job.id} case {job.case_id}: {message}")

    def _requeue(self, job: Job, why: str) -> None:
        """Queue a job stopped by the shutdown again, its partial version folder removed first (a queued job
        never leaves files that look like a version; a kill between the two is resumed by the index)."""
        shutil.rmtree(self.store.version_dir(job.case_id, job.version), ignore_errors=True)
        self.store.requeue(job)
        self.audit("job-requeued", f"job {job.id} case {job.case_id}: {why}")

    def _follow(self, job: Job, process: subprocess.Popen) -> tuple[dict | None, str | None, bool, str]:
        """Relay progress until the process ends; stop it when the job is cancelled (a ``cancel`` line, then
        SIGTERM after the protocol's grace period) or when it breaks the protocol (SIGTERM at once).

        Returns its final event (None if none came), the message of a protocol breach (None if none), whether
        the job was cancelled, and stderr.
        """
        lines: queue.Queue[str | None] = queue.Queue()
        errors: list[str] = []
        threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
        reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
        reader.start()
        events, refused = EventReader(), None
        cancelled_at, terminated, written, stage = None, False, 0.0, None
        while True:
            try:
                line = lines.get(timeout=self.poll_s)
            except queue.Empty:
                line = ""
            if line is None:
                break
            try:
                event = events.read(line) if refused is None else None
            except PredictionProtocolError as exc:
                refused, event, terminated = str(exc), None, True
                logger.error("job %d: %s", job.id, exc)
                process.terminate()
            if event is not None and event["event"] == "progress" and (
                    event["stage"] != stage or time.monotonic() - written >= PROGRESS_EVERY_S):
                stage = event["stage"]
                self.store.set_progress(job, stage, float(event["fraction"]))
                written = time.monotonic()
            if cancelled_at is None and self.store.cancel_requested(job):
                cancelled_at = time.monotonic()
                _send(process, command_line(CANCEL))
            elif cancelled_at is not None and not terminated and time.monotonic() - cancelled_at > CANCEL_GRACE_S:
                terminated = True
                process.terminate()  # it has not stopped by itself (a stage that cannot stop midway)
        process.wait()
        try:
            process.stdin.close()
        except OSError:
            pass
        reader.join(timeout=5)  # stderr ends with the process, unless a child of it still holds the pipe
        return events.final, refused, cancelled_at is not None, errors[0] if errors else ""


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)
