"""The DICOM node: CT in by C-STORE, the CTV delineated by the ``ctv predict`` job, RTSTRUCT out by C-STORE.

Threads, each with one job (nothing slow runs inside an association):

* the Storage SCP (:mod:`.dicom_io`) checks, files and indexes every CT instance before
  acknowledging it, within its limits (:class:`~.dicom_io.ReceiveLimits`);
* the series watcher judges a series from which no instance has arrived for ``series_timeout_s``
  (or that has been open for ``series_max_wait_s``): whole by what its images say and sent by
  associations that ended by release, it becomes a case with a queued prediction job (one
  transaction), or, when it has a case already (instances came after it was delineated), a new
  version of that case whose RTSTRUCT replaces the earlier one in the same series
  (``ctv predict --supersedes``), earlier files not yet sent never being sent; otherwise it is
  recorded incomplete, with the reason, and is not delineated unless an operator releases it
  (``ctv node release``);
* ``workers`` job workers (:mod:`.jobs`) each run one job at a time: ``ctv predict`` in its own
  process writing the case's version folder, then, in one transaction, the version, the job's end
  and the outbox rows;
* the sender sends due outbox rows, with exponential back-off (``retry_s``, doubling, at most
  10 minutes) until ``max_attempts``, after which a row stays failed until ``ctv node resend``.

Where results go: to every ``send_to`` destination, except that a series sent by one of them
(the calling AE title matches a destination's) goes back to that one only. With
``review_before_send`` results wait (held) until the case is approved in the review station.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CTVError
from .audit import AuditLog
from .dicom_io import ReceiveLimits, StorageSCP, send_file
from .jobs import JobWorkers
from .peers import AllowedPeer, Destination
from .records import RELEASED
from .store import CaseStore, Job

logger = logging.getLogger(__name__)

#: Longest wait between two attempts to send one file, seconds.
MAX_BACKOFF_S = 600.0


@dataclass(frozen=True)
class NodeConfig:
    """How the node runs (``ctv node`` options)."""

    ae_title: str
    port: int
    data: Path
    host: str = "127.0.0.1"
    send_to: tuple[Destination, ...] = ()
    allow: tuple[AllowedPeer, ...] = ()
    model: Path | None = None
    device: str = "auto"
    engine: str = "auto"
    series_timeout_s: float = 30.0
    series_max_wait_s: float = 600.0
    limits: ReceiveLimits = field(default_factory=ReceiveLimits)
    workers: int = 1
    formats: tuple[str, ...] = ("rtstruct",)
    review_before_send: bool = False
    retry_s: float = 10.0
    max_attempts: int = 8
    poll_s: float = 0.5
    files: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.series_timeout_s <= 0 or self.workers < 1 or self.max_attempts < 1 or self.retry_s <= 0:
            raise CTVError("--series-timeout and --retry-seconds must be positive, --workers and --max-attempts at "
                           "least 1.")
        if self.series_max_wait_s < self.series_timeout_s:
            raise CTVError(f"--series-max-wait ({self.series_max_wait_s:g} s) must be at least --series-timeout "
                           f"({self.series_timeout_s:g} s).")
        names = {"rtstruct": "rtstruct.dcm", "seg": "seg.dcm"}
        unknown = [f for f in self.formats if f not in names]
        if unknown or not self.formats:
            raise CTVError(f"The node sends rtstruct and optionally seg; not {', '.join(unknown) or 'nothing'}.")
        object.__setattr__(self, "files", tuple(names[f] for f in self.formats))

    def destinations_for(self, sender: str) -> tuple[Destination, ...]:
        """Where a case sent by ``sender`` goes (see the module docstring)."""
        back = tuple(d for d in self.send_to if d.ae_title == sender.strip())
        return back or self.send_to


class DicomNode:
    """The node's threads around one case store (see the module docstring)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.store = CaseStore(config.data)
        self.audit = AuditLog(config.data / "audit.log")
        self.scp = StorageSCP(config.ae_title, self.store, self.audit, config.allow, config.limits)
        self.workers = JobWorkers(self.store, "node", self._finish, self.audit, count=config.workers,
                                  prepare=self._prepare, arguments=self._arguments, poll_s=config.poll_s)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Resume what was pending, then serve and work in background threads."""
        resumed = self.store.recover()
        self.audit("start", f"{self.config.ae_title} on {self.config.host}:{self.config.port}, data {self.config.data}"
                            f" (resumed: {resumed})")
        if resumed["quarantined"] or resumed["dropped_index_entries"] or resumed["not_quarantined"]:
            self.audit("quarantine", f"{resumed['quarantined']} thing(s) under incoming/ the node did not write were "
                                     f"moved to {self.config.data / 'quarantine'}; {resumed['dropped_index_entries']} "
                                     "index entr(y/ies) with a path or UID it would not have written were dropped"
                                     + (f"; {resumed['not_quarantined']} could not be moved (see the log)"
                                        if resumed["not_quarantined"] else "") + ". Nothing of them is used.")
        self.scp.start(self.config.host, self.config.port)
        self.workers.start()
        for n, loop in enumerate((self._watch_series, self._send)):
            thread = threading.Thread(target=self._guarded, args=(loop,), name=f"ctv-node-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop serving; running predictions are ended and their jobs queued again for the next start."""
        self._stop.set()
        self.scp.stop()
        self.workers.stop()
        for thread in self._threads:
            thread.join(timeout=30)
        self.audit("stop", self.config.ae_title)

    def wait(self) -> None:
        """Block until :meth:`stop` is called (from a signal handler or another thread)."""
        while not self._stop.wait(1.0):
            pass

    def _guarded(self, loop) -> None:
        try:
            while not self._stop.is_set():
                try:
                    busy = loop()
                except Exception:  # noqa: BLE001 - one bad turn must not stop the node; logged with its traceback
                    logger.exception("node loop %s failed; continuing", loop.__name__)
                    busy = False
                if not busy:
                    self._stop.wait(self.config.poll_s)
        finally:
            self.store.close()

    # --- series -> cases ------------------------------------------------------------------------

    def _watch_series(self) -> bool:
        due = self.store.inbox.due_series(self.config.series_timeout_s, self.config.series_max_wait_s)
        for series in due:
            self._judge(series)
        return bool(due)

    def _judge(self, series: dict) -> None:
        """Make a due series a case, a new version of its case, or record it incomplete (module docstring)."""
        released = series["state"] == RELEASED
        if not released:
            verdict = self.store.inbox.assess(series)
            if not verdict.complete:
                if self.store.mark_series_incomplete(series, verdict.describe()):
                    self.audit("series-incomplete", f"{series['uid']} from {series['sender']}: {verdict.describe()}. "
                                                    "Not delineated: send the missing instances, or release it as it "
                                                    f"is with 'ctv node release {series['uid']} --data DIR'")
                return
        job_settings = {"model": str(self.config.model or ""), "device": self.config.device,
                        "formats": self.config.formats}
        how = "released by an operator" if released else "complete"
        if series["case_id"]:
            job = self.store.update_series_case(series, **job_settings)
            if job is False:
                return  # more instances came meanwhile: judged again later
            self.audit("series-updated", f"{series['uid']} from {series['sender']} {how} with {series['instances']} "
                                         f"instance(s) -> case {series['case_id']} "
                                         + (f"version {job.version}, job {job.id}" if job else
                                            "(its queued job will see them)"))
        else:
            opened = self.store.inbox.open_series_case(series, released=released, **job_settings)
            if opened is None:
                return
            case_id, job = opened
            self.audit("series-complete", f"{series['uid']} from {series['sender']} {how}: {series['instances']} "
                                          f"instance(s) -> case {case_id}, job {job.id}")
        self.workers.wake()

    # --- jobs ---------------------------------------------------------------------------------------

    def _prepare(self, job: Job) -> None:
        """The series' files, linked into the case (again after a kill: idempotent)."""
        case = self.store.case(job.case_id)
        _link_files(self.store.inbox.series_files(case["series_uid"]), self.store.ct_dir(job.case_id))

    def _arguments(self, job: Job) -> list[str]:
        """The node's ``--engine``, and ``--supersedes`` the case's latest earlier version with an RTSTRUCT (its
        series is continued)."""
        case = self.store.case(job.case_id) or {"versions": []}
        earlier = [v["number"] for v in case["versions"] if v["number"] < job.version
                   and (self.store.version_dir(job.case_id, v["number"]) / "rtstruct.dcm").is_file()]
        supersedes = [f"--supersedes={self.store.version_dir(job.case_id, max(earlier))}"] if earlier else []
        return [f"--engine={self.config.engine}"] + supersedes

    def _finish(self, job: Job, report: dict) -> None:
        sender = self.store.case(job.case_id)["sender"]
        model = f"{report['model']['name']} {report['model']['version']}"
        outbox = [(file, str(d)) for d in self.config.destinations_for(sender) for file in self.config.files]
        superseded = self.store.finish_job(job, model=model, outbox=outbox, hold=self.config.review_before_send,
                                           supersede_earlier=True)
        self.audit("job-done", f"job {job.id} case {job.case_id} version {job.version}: CTV "
                               f"{report['ctv']['volume_cc']} cc by {model}; "
                               f"{'held for review' if self.config.review_before_send else 'queued'} for "
                               f"{', '.join(sorted({d for _, d in outbox})) or 'no destination'}"
                               + (f"; {superseded} unsent file(s) of earlier versions will not be sent"
                                  if superseded else ""))

    # --- sending ----------------------------------------------------------------------------------

    def _send(self) -> bool:
        items = self.store.outbox.due()
        for item in items:
            if self._stop.is_set():
                break
            path = self.store.version_dir(item.case_id, item.version) / item.file
            try:
                send_file(path, Destination.parse(item.destination), self.config.ae_title)
            except OSError as exc:
                attempts = item.attempts + 1
                retry = None if attempts >= self.config.max_attempts else \
                    min(self.config.retry_s * 2 ** (attempts - 1), MAX_BACKOFF_S)
                self.store.outbox.send_failed(item, str(exc), retry)
                self.audit("send-failed", f"{item.file} of case {item.case_id} v{item.version} to {item.destination} "
                                          f"(attempt {attempts}): {exc}; "
                                          + (f"retry in {retry:g} s" if retry is not None else "given up"))
            else:
                self.store.outbox.sent(item)
                self.audit("sent", f"{item.file} of case {item.case_id} v{item.version} to {item.destination}")
        return bool(items)


def _link_files(files: list[Path], folder: Path) -> None:
    """Hard-link (copy where links are impossible) ``files`` into ``folder``; files already there are kept."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for source in files:
        target = folder / source.name
        if target.exists():
            continue
        try:
            os.link(source, target)
        except FileExistsError:
            continue
        except OSError:  # no hard links here (another file system, or not supported): a copy, atomically
            partial = folder / f".{source.name}.part"
            shutil.copy2(source, partial)
            os.replace(partial, target)

