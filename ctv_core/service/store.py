"""The case store: one folder per case, a durable SQLite index, versions of results, jobs and an outbox.

Shared by the DICOM node and the review station (a CT that arrives by DICOM shows up in the
station's case list). Layout under the data folder::

    DATA/index.sqlite                 the index (WAL journal: readers never block the writer)
    DATA/incoming/<folder>/<name>.dcm instances as the node receives them (folder and name made here, never
                                      from the wire; the index maps SOPInstanceUID -> file)
    DATA/quarantine/<time>/           what a restart found under incoming/ and did not understand
    DATA/cases/<case id>/ct/          the case's CT files
    DATA/cases/<case id>/versions/<n>/  one version of the result: a complete ``ctv predict`` set
                                      (rtstruct.dcm, qa.png, report.json, ...), or an edit

Durability follows Orthanc's habits: an instance is written (temporary name, fsync, rename) and
indexed before it is acknowledged; a job is recorded before it starts and marked done only after
its version is stored; an outgoing file is an outbox row until the peer has stored it. A process
killed at any point and restarted resumes from the index (:meth:`CaseStore.recover`): jobs that
were running are queued again, their partial version folders removed, and write the same
version number again (so nothing is duplicated), unsent files are sent.

Every method opens its own short transaction on a connection of the calling thread, so the store
may be used from the DICOM association threads, the job workers and the web server at once. The
store's parts in other modules (the inbox, the outbox, the series records) use its public
:meth:`CaseStore.transaction` and :meth:`CaseStore.query`, never its connection; a new case, a new
job and a case's status are written in one place each (:class:`.store_transaction.Transaction`).

Every path the store hands out for writing is resolved and checked to lie inside the data folder
(:meth:`CaseStore.inside`); case ids are only ever the store's own (:data:`records.CASE_ID`).
An index of an earlier schema is upgraded in place, step by step: schema 1 to 2 (series folders,
transfer and completeness states), 2 to 3 (approvals with their edit records, :mod:`.approvals`).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .inbox import Inbox
from .outbox import Outbox
from .records import (CASE_ID, DONE, FAILED, HELD, MAX_JOB_ATTEMPTS, PENDING, QUEUED, RECEIVING, RUNNING,
                      SUPERSEDED, Job, new_case_id, now_iso)
from .series_records import SeriesRecords
from .store_schema import SCHEMA, SCHEMA_VERSION, UPGRADES
from .store_transaction import Transaction

class CaseStore(SeriesRecords):
    """The case store in ``data_dir`` (created when missing); see the module docstring."""

    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir)
        try:
            for sub in ("cases", "incoming"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"The data folder '{self.root}' cannot be created or written ({exc.strerror}); give a "
                             "folder the service may write to.") from exc
        self._local = threading.local()
        self.inbox = Inbox(self)
        self.outbox = Outbox(self)
        try:
            with self.transaction() as db:
                row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() \
                    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() else None
                while row is not None and row[0] in UPGRADES:
                    for statement in UPGRADES[row[0]]:
                        db.execute(statement)
                    row = (str(int(row[0]) + 1),)
            self._connection().executescript(SCHEMA)  # idempotent; executescript commits on its own
            with self.transaction() as db:
                if row is None:
                    db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"The case index '{self.root / 'index.sqlite'}' is damaged or not an index ({exc}). "
                             "Use another --data folder, or restore the index from a backup.") from exc
        if row is not None and int(row[0]) != SCHEMA_VERSION:
            raise StoreError(f"'{self.root}' holds a case index of schema {row[0]}; this ctv_core reads schema "
                             f"{SCHEMA_VERSION}. Use another --data folder.")

    # --- connections ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.root / "index.sqlite", timeout=60, isolation_level=None)
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = FULL")
            except sqlite3.Error as exc:
                raise StoreError(f"The case index '{self.root / 'index.sqlite'}' cannot be opened ({exc}).") from exc
            db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction on this thread's connection (``BEGIN IMMEDIATE``: one writer at a time, waiting
        for the other), committed when the block ends, rolled back when it raises."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield Transaction(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one reading statement on this thread's connection (WAL: it never waits for the writer)."""
        return self._connection().execute(sql, tuple(parameters))

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # --- paths --------------------------------------------------------------------------------

    def inside(self, path: Path) -> Path:
        """``path``, resolved, after checking that it lies inside the data folder (symbolic links followed).

        Raises
        ------
        StoreError
            It does not: nothing is written there.
        """
        resolved = Path(os.path.realpath(path))
        if not resolved.is_relative_to(Path(os.path.realpath(self.root))):
            raise StoreError(f"Refused to write '{path}': it resolves to '{resolved}', outside the data folder "
                             f"'{self.root}'. The data folder and the folders in it must be real folders, not links "
                             "to elsewhere.")
        return resolved

    def case_dir(self, case_id: str) -> Path:
        """The case's folder (checked to lie inside the data folder)."""
        if not CASE_ID.fullmatch(case_id):
            raise StoreError(f"'{case_id[:80]}' is not a case id of this store.")
        return self.inside(self.root / "cases" / case_id)

    def ct_dir(self, case_id: str) -> Path:
        return self.inside(self.case_dir(case_id) / "ct")

    def version_dir(self, case_id: str, version: int) -> Path:
        return self.inside(self.case_dir(case_id) / "versions" / str(int(version)))

    # --- cases --------------------------------------------------------------------------------

    def new_case(self, source: str, *, sender: str = "", study_uid: str = "", series_uid: str = "",
                 description: str = "") -> str:
        """Record a new case (status ``queued`` until its job starts) and make its folder; returns its id."""
        case_id = new_case_id()
        self.ct_dir(case_id).mkdir(parents=True)
        with self.transaction() as db:
            db.insert_case(case_id, source, sender=sender, study_uid=study_uid, series_uid=series_uid,
                           description=description)
        return case_id

    def open_case(self, source: str, ct_files: Path, *, queue: str, model: str = "", device: str = "auto",
                  formats: Sequence[str] = ("rtstruct",), sender: str = "", study_uid: str = "",
                  series_uid: str = "", description: str = "") -> tuple[str, Job]:
        """A case for the CT files in the folder ``ct_files`` (moved, not copied, into the case), with its
        prediction job queued: the files are in place before the case and its job are recorded, in one
        transaction (never a case without its job). ``ct_files`` must be on the data folder's file system."""
        case_id = new_case_id()
        self.case_dir(case_id).mkdir(parents=True)
        try:
            ct_files.rename(self.ct_dir(case_id))
        except OSError:
            self.case_dir(case_id).rmdir()  # no case folder without its files
            raise
        _sync_folder(self.case_dir(case_id))  # the rename reaches the disk before the case is recorded
        with self.transaction() as db:
            db.insert_case(case_id, source, sender=sender, study_uid=study_uid, series_uid=series_uid,
                           description=description)
            job_id = db.insert_job(case_id, 1, "prediction", queue, model, device, formats)
        return case_id, self.job(job_id)

    def case(self, case_id: str) -> dict[str, Any] | None:
        """A case with its versions and jobs, as plain values (None when unknown)."""
        db = self._connection()
        row = db.execute("SELECT * FROM cases WHERE id = ?", (case_id,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["versions"] = [dict(v) for v in db.execute(
            "SELECT number, kind, created, author, model, note FROM versions WHERE case_id = ? ORDER BY number",
            (case_id,))]
        out["jobs"] = [dict(j) for j in db.execute("SELECT * FROM jobs WHERE case_id = ? ORDER BY id", (case_id,))]
        return out

    def cases(self) -> list[dict[str, Any]]:
        """Every case, newest first (without versions)."""
        return [dict(r) for r in self.query("SELECT * FROM cases ORDER BY created DESC, id DESC")]

    # --- versions and jobs --------------------------------------------------------------------

    def next_version(self, case_id: str) -> int:
        """The number the next version of the case gets (versions and jobs both reserve numbers)."""
        db = self._connection()
        used = db.execute("SELECT MAX(n) FROM (SELECT MAX(number) AS n FROM versions WHERE case_id = ? "
                          "UNION ALL SELECT MAX(version) FROM jobs WHERE case_id = ?)", (case_id, case_id)).fetchone()
        return int(used[0] or 0) + 1

    def queue_job(self, case_id: str, *, queue: str = "station", kind: str = "prediction", model: str = "",
                  device: str = "auto", formats: Sequence[str] = ("rtstruct",)) -> Job:
        """Record a job (before it starts) for the workers of ``queue``, reserving its version number."""
        with self.transaction() as db:
            job_id = db.insert_job(case_id, self.next_version(case_id), kind, queue, model, device, formats)
            db.set_case_status(case_id, QUEUED)
        return self.job(job_id)

    def job(self, job_id: int) -> Job:
        row = self.query("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job(**{k: row[k] for k in Job.__dataclass_fields__})

    def claim_job(self, queue: str = "station") -> Job | None:
        """The oldest queued job of ``queue``, marked running (its attempts counted), or None.

        The node and the review station may share one store; each runs only its own queue's jobs
        (a node's job ends by queuing its results for sending, which only the node does).
        """
        with self.transaction() as db:
            row = db.execute("SELECT id, case_id FROM jobs WHERE status = ? AND queue = ? ORDER BY id LIMIT 1",
                             (QUEUED, queue)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = ?, started = ?, attempts = attempts + 1 WHERE id = ?",
                       (RUNNING, now_iso(), row["id"]))
            db.set_case_status(row["case_id"], RUNNING)
        return self.job(row["id"])

    def finish_job(self, job: Job, *, model: str, outbox: Sequence[tuple[str, str]] = (), hold: bool = False,
                   author: str = "", supersede_earlier: bool = False) -> int:
        """Mark ``job`` done with its version stored, and queue ``(file, destination)`` pairs to send.

        One transaction: the version, the job's end and the outbox rows exist together or not at
        all. ``hold`` keeps the outbox rows until the case is approved (:meth:`approve`).
        ``supersede_earlier``: the files of earlier versions of the case that have not gone out yet
        (held, pending or failed) never will (status superseded): this version replaces them.
        Returns how many outbox rows were superseded.
        """
        superseded = 0
        with self.transaction() as db:
            if supersede_earlier:
                superseded = db.execute(
                    "UPDATE outbox SET status = ?, last_error = ? WHERE case_id = ? AND version < ? AND status IN "
                    "(?, ?, ?)", (SUPERSEDED, f"replaced by version {job.version}", job.case_id, job.version, HELD,
                                  PENDING, FAILED)).rowcount
            db.execute("INSERT OR REPLACE INTO versions (case_id, number, kind, created, author, model) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (job.case_id, job.version, job.kind, now_iso(), author, model))
            db.execute("UPDATE jobs SET status = ?, finished = ?, message = '' WHERE id = ?", (DONE, now_iso(), job.id))
            db.set_case_status(job.case_id, DONE)
            for file, destination in outbox:
                db.execute("INSERT OR IGNORE INTO outbox (case_id, version, file, destination, status, created) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           (job.case_id, job.version, file, destination, HELD if hold else PENDING, now_iso()))
        return superseded

    def set_progress(self, job: Job, stage: str, fraction: float) -> None:
        """Where a running job stands (for the station's progress bar)."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET stage = ?, progress = ? WHERE id = ?", (stage, float(fraction), job.id))

    def request_cancel(self, case_id: str) -> bool:
        """Cancel the case's queued or running job (a running one is stopped by its worker); False when none."""
        with self.transaction() as db:
            row = db.execute("SELECT id, status FROM jobs WHERE case_id = ? AND status IN (?, ?) ORDER BY id DESC "
                             "LIMIT 1", (case_id, QUEUED, RUNNING)).fetchone()
            if row is None:
                return False
            if row["status"] == QUEUED:
                message = "Cancelled by the user before it started."
                db.execute("UPDATE jobs SET status = ?, message = ?, finished = ? WHERE id = ?",
                           (FAILED, message, now_iso(), row["id"]))
                db.set_case_status(case_id, FAILED, message)
            else:
                db.execute("UPDATE jobs SET cancel = 1 WHERE id = ?", (row["id"],))
        return True

    def open_jobs(self) -> dict[str, dict[str, Any]]:
        """Each case's latest queued or running job: case id -> its status, stage and progress."""
        rows = self.query("SELECT case_id, status, stage, progress FROM jobs WHERE status IN (?, ?) "
                                          "ORDER BY id", (QUEUED, RUNNING))
        return {r["case_id"]: dict(r) for r in rows}

    def cancel_requested(self, job: Job) -> bool:
        row = self.query("SELECT cancel FROM jobs WHERE id = ?", (job.id,)).fetchone()
        return bool(row and row["cancel"])

    def fail_job(self, job: Job, message: str) -> None:
        """Mark ``job`` (and its case) failed with the message users see."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET status = ?, finished = ?, message = ? WHERE id = ?",
                       (FAILED, now_iso(), message, job.id))
            db.set_case_status(job.case_id, FAILED, message)

    def requeue(self, job: Job) -> None:
        """Put a job stopped on purpose (the service shut down) back in the queue, the attempt not counted."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET status = ?, attempts = MAX(attempts - 1, 0) WHERE id = ?", (QUEUED, job.id))
            db.set_case_status(job.case_id, QUEUED)

    def reserve_version(self, case_id: str) -> int:
        """A version number for a folder about to be written (record it with :meth:`record_version`)."""
        with self.transaction() as db:
            number = self.next_version(case_id)
            db.execute("INSERT INTO versions (case_id, number, kind, created) VALUES (?, ?, 'reserved', ?)",
                       (case_id, number, now_iso()))
        return number

    def record_version(self, case_id: str, number: int, kind: str, *, author: str = "", model: str = "",
                       note: str = "") -> None:
        with self.transaction() as db:
            db.execute("UPDATE versions SET kind = ?, author = ?, model = ?, note = ?, created = ? "
                       "WHERE case_id = ? AND number = ?", (kind, author, model, note, now_iso(), case_id, number))

    def release_version(self, case_id: str, number: int) -> None:
        """Give back a reserved number whose folder was not written (the numbers after it stay as they are)."""
        with self.transaction() as db:
            db.execute("DELETE FROM versions WHERE case_id = ? AND number = ? AND kind = 'reserved'",
                       (case_id, number))

    # --- restart --------------------------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """After a restart: running jobs are queued again (or failed after ``MAX_JOB_ATTEMPTS``), their partial
        version folders removed (a job not done has no version folder), files left half-received are removed, instances filed but not indexed are dropped (never acknowledged), and
        whatever else lies under incoming/ is quarantined (:meth:`Inbox.recover`): a restart never fails
        on what it finds on disk.

        Returns counts of what was done, for the log.
        """
        requeued = failed = 0
        with self.transaction() as db:
            for row in db.execute("SELECT id, case_id, version, attempts FROM jobs WHERE status = ?",
                                  (RUNNING,)).fetchall():
                shutil.rmtree(self.version_dir(row["case_id"], row["version"]), ignore_errors=True)
                if row["attempts"] >= MAX_JOB_ATTEMPTS:
                    message = (f"The service stopped {row['attempts']} times while this job ran; it is not tried "
                               "again. Check the CT and the log, then queue it again.")
                    db.execute("UPDATE jobs SET status = ?, message = ? WHERE id = ?", (FAILED, message, row["id"]))
                    db.set_case_status(row["case_id"], FAILED, message)
                    failed += 1
                else:
                    db.execute("UPDATE jobs SET status = ? WHERE id = ?", (QUEUED, row["id"]))
                    db.set_case_status(row["case_id"], QUEUED)
                    requeued += 1
        return {"requeued": requeued, "failed": failed, **self.inbox.recover()}

    def summary(self) -> dict[str, Any]:
        """Counts for ``ctv node status``."""
        db = self._connection()
        count = {r["status"]: r["n"] for r in db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")}
        out = {r["status"]: r["n"] for r in db.execute("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")}
        series = {r["state"]: r["n"] for r in db.execute("SELECT state, COUNT(*) AS n FROM series GROUP BY state")}
        return {"jobs": count, "outbox": out, "series": series, "series_receiving": series.get(RECEIVING, 0),
                "cases": db.execute("SELECT COUNT(*) FROM cases").fetchone()[0]}


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that the entries just renamed into it survive a power cut (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
