"""Jobs decided by outcome: a service stop at each stage of a prediction leaves its job done with a complete
version, or queued with no version folder, and no prediction process alive.

The stop is driven on purpose at each stage, not left to timing: the prediction process is a real
process (``paused_ctv.py``: ``ctv``'s own parser, the output folder's way of writing, the JSON
lines) that waits at named stages until the test lets it go; "before launch" is held in the
workers' own ``prepare`` step; for "after exit" the process exits 0 with its report while a child
of it keeps its stdout open, so the stop begins after the process ended and before the worker has
seen the end. Each case takes seconds, so the file can be run many times in a row.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ctv_core.service.audit import AuditLog
from ctv_core.service.jobs import JobWorkers, Program
from ctv_core.service.records import DONE, QUEUED, RUNNING, Job
from ctv_core.service.store import CaseStore

PAUSED_CTV = Path(__file__).resolve().parent / "paused_ctv.py"
PAUSES = ("network", "writing", "finished")
#: Generous: the machine may be busy; every wait ends as soon as its condition holds.
WAIT_S = 120.0
QUEUE = "outcomes"


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {WAIT_S} s")
        time.sleep(0.005)


def _exited(pid: int) -> bool:
    """True when the process has ended (a zombie not yet reaped by its parent counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


class PausedRun:
    """The synchronisation folder of ``paused_ctv.py`` runs: where they stopped, and letting them go on."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        for stage in PAUSES:
            os.mkfifo(folder / f"go-{stage}")

    def pids(self) -> list[int]:
        """Every process that started (prestarted ones included)."""
        return [int(p.read_text()) for p in self.folder.glob("started-*")]

    def reached(self, stage: str) -> int:
        """Wait until a run is waiting at ``stage``; returns its pid."""
        _wait_for(lambda: (self.folder / stage).exists(), f"the prediction process reaching '{stage}'")
        return int((self.folder / stage).read_text())

    def go_on(self, stage: str) -> None:
        """Let the run waiting at ``stage`` go on."""
        self.reached(stage)
        descriptor: list[int] = []

        def opened() -> bool:  # the marker is written just before the run opens the FIFO to read
            try:
                descriptor.append(os.open(self.folder / f"go-{stage}", os.O_WRONLY | os.O_NONBLOCK))
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                return False
            return True

        _wait_for(opened, f"the prediction process listening at '{stage}'")
        os.write(descriptor[0], b"go\n")
        os.close(descriptor[0])


def _stop_while(workers: JobWorkers, held: Callable[[], None]) -> None:
    """Stop ``workers`` from another thread, then, once the stop has begun, call ``held`` (which lets the worker
    go on), and wait for the stop to end."""
    stopper = threading.Thread(target=workers.stop)
    stopper.start()
    _wait_for(lambda: workers.stopping, "the stop beginning")
    held()
    stopper.join(timeout=WAIT_S)
    assert not stopper.is_alive(), "stop() did not return"


@pytest.mark.parametrize("prestarted", [True, False], ids=["prestarted", "cold"])
@pytest.mark.parametrize("stage", ["before launch", "network", "writing", "after exit"])
def test_a_stop_at_each_stage_leaves_the_job_done_with_its_version_or_queued_without_one(stage, prestarted,
                                                                                           tmp_path):
    store = CaseStore(tmp_path / "data")
    run = PausedRun(tmp_path / "sync")
    paused = (sys.executable, str(PAUSED_CTV), f"--sync={run.folder}",
              *(["--exit-before-finished"] if stage == "after exit" else []))
    program = Program(ctv=(*paused, "--"), prestarted=(*paused, "--prestarted") if prestarted else None)
    in_prepare, leave_prepare = threading.Event(), threading.Event()

    def prepare(job: Job) -> None:
        if stage == "before launch":
            in_prepare.set()
            assert leave_prepare.wait(WAIT_S)

    finished: list[int] = []

    def on_done(job: Job, report: dict) -> None:
        store.finish_job(job, model=f"{report['model']['name']} {report['model']['version']}")
        finished.append(job.id)

    workers = JobWorkers(store, QUEUE, on_done, AuditLog(tmp_path / "audit.log"), prepare=prepare, poll_s=0.05,
                         program=program)
    workers.start()
    if prestarted:  # the job comes once the worker's next process is waiting for it
        _wait_for(lambda: bool(run.pids()), "the prestarted process starting")
    ct = tmp_path / "data" / "upload"
    ct.mkdir()
    (ct / "1.dcm").write_bytes(b"not read by this test")
    case_id, job = store.open_case("upload", ct, queue=QUEUE)
    workers.wake()
    version = store.version_dir(case_id, job.version)

    if stage == "before launch":
        _wait_for(in_prepare.is_set, "the worker preparing the job")
        _stop_while(workers, leave_prepare.set)
        assert not any((run.folder / pause).exists() for pause in PAUSES)  # nothing ran the job
    elif stage in ("network", "writing"):
        if stage == "writing":
            run.go_on("network")
        run.reached(stage)
        _wait_for(lambda: store.open_jobs()[case_id]["stage"] == stage, f"the store naming the stage '{stage}'")
        if stage == "writing":
            assert (version / "rtstruct.dcm").is_file() and not (version / "report.json").exists()
        workers.stop()
    else:
        run.go_on("network")
        pid = run.reached("writing")
        run.go_on("writing")
        helper = run.reached("finished")  # the run's child, which holds the run's stdout
        _wait_for(lambda: _exited(pid), "the prediction process exiting")
        assert finished == [] and store.job(job.id).status == RUNNING  # the worker has not seen the end yet
        _stop_while(workers, lambda: run.go_on("finished"))
        _wait_for(lambda: _exited(helper), "the test's helper exiting")  # it closed the stdout in its exit
    assert [pid for pid in run.pids() if not _exited(pid)] == []  # the stop ended every process that existed
    ended = store.job(job.id)
    case = store.case(case_id)
    if stage == "after exit":
        assert (ended.status, case["status"], finished) == (DONE, DONE, [job.id])
        assert [v["number"] for v in case["versions"]] == [job.version]
        assert sorted(p.name for p in version.iterdir()) == ["report.json", "rtstruct.dcm"]  # complete, alone
    else:
        assert (ended.status, case["status"], ended.attempts, finished) == (QUEUED, QUEUED, 0, [])
        assert case["versions"] == [] and not version.exists()
