"""One transaction of the case index, and the writes that are written in one place only: a new case, a new
job, and a case's status.

:meth:`CaseStore.transaction <ctv_core.service.store.CaseStore.transaction>` hands one out; the
store, its inbox, outbox and series records, and the job workers write through it, so a case's
status (the one the station and ``ctv node status`` show) is changed by one statement only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from .records import QUEUED, now_iso


class Transaction:
    """An open ``BEGIN IMMEDIATE`` transaction on the calling thread's connection (committed by its store when
    the ``with`` block ends without an error, rolled back otherwise)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one SQL statement in the transaction."""
        return self._db.execute(sql, tuple(parameters))

    def insert_case(self, case_id: str, source: str, *, sender: str = "", study_uid: str = "", series_uid: str = "",
                    description: str = "") -> None:
        """Record a new case, queued (its job is recorded in the same transaction)."""
        self._db.execute("INSERT INTO cases (id, created, source, sender, study_uid, series_uid, description, status) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (case_id, now_iso(), source, sender, study_uid, series_uid, description, QUEUED))

    def insert_job(self, case_id: str, version: int, kind: str, queue: str, model: str, device: str,
                   formats: Sequence[str]) -> int:
        """Record a queued job writing version ``version`` of the case; returns its id."""
        return self._db.execute(
            "INSERT INTO jobs (case_id, version, kind, queue, model, device, formats, status, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (case_id, version, kind, queue, model, device, ",".join(formats), QUEUED, now_iso())).lastrowid

    def set_case_status(self, case_id: str, status: str, message: str = "") -> None:
        """A case's status (its latest job's, :mod:`.records`) and the message users see with it."""
        self._db.execute("UPDATE cases SET status = ?, message = ? WHERE id = ?", (status, message, case_id))
