"""The outbox of the case store: files of a case's version to send, with attempts, back-off and approval."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .records import FAILED, HELD, PENDING, SENT, OutboxItem, now_iso

if TYPE_CHECKING:  # the store makes its outbox: a type only, no import at run time
    from .store import CaseStore


class Outbox:
    """Outgoing files of a :class:`~ctv_core.service.store.CaseStore`."""

    def __init__(self, store: CaseStore) -> None:
        self.store = store

    def approve(self, case_id: str, version: int, destinations: Sequence[str] | None = None,
                file: str = "rtstruct.dcm", record: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
        """Approve a version: its files go out, and files held for the case (of any version) are dropped.

        With ``destinations`` None (the review station, which does not know the node's peers) the
        approved version's files go where the held rows were going, each file to its destination;
        otherwise ``file`` goes to each of ``destinations``. Returns the ``(file, destination)``
        pairs queued to send (none when nothing was held and no destination was given). ``record``: the approval's
        edit record (:mod:`.approvals`), kept in the approvals table in the same transaction.
        """
        with self.store.transaction() as db:
            db.execute("UPDATE cases SET approved_version = ? WHERE id = ?", (version, case_id))
            if record is not None:
                ai = record["ai"]
                db.execute("INSERT INTO approvals (case_id, version, approved, approved_by, model, model_sha256, "
                           "record) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (case_id, version, now_iso(), record.get("approved_by", ""),
                            f"{ai['model_name']} {ai['model_version']}", ai["model_sha256"],
                            json.dumps(record, allow_nan=False)))
            if destinations is None:
                pairs = [(r["file"], r["destination"]) for r in db.execute(
                    "SELECT DISTINCT file, destination FROM outbox WHERE case_id = ? AND status = ? ORDER BY id",
                    (case_id, HELD))]
            else:
                pairs = [(file, destination) for destination in destinations]
            db.execute("DELETE FROM outbox WHERE case_id = ? AND status = ?", (case_id, HELD))
            for item_file, destination in pairs:
                db.execute("INSERT OR IGNORE INTO outbox (case_id, version, file, destination, status, created) "
                           "VALUES (?, ?, ?, ?, ?, ?)", (case_id, version, item_file, destination, PENDING, now_iso()))
        return pairs

    def due(self, limit: int = 20) -> list[OutboxItem]:
        """Outbox items to send now (pending, their back-off elapsed), oldest first."""
        rows = self.store.query(
            "SELECT * FROM outbox WHERE status = ? AND next_attempt <= ? ORDER BY id LIMIT ?",
            (PENDING, time.time(), limit))
        return [OutboxItem(**{k: r[k] for k in OutboxItem.__dataclass_fields__}) for r in rows]

    def sent(self, item: OutboxItem) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE outbox SET status = ?, sent = ?, attempts = attempts + 1, last_error = '' WHERE id = ?",
                       (SENT, now_iso(), item.id))

    def send_failed(self, item: OutboxItem, error: str, retry_in_s: float | None) -> None:
        """Record a failed attempt: retry after ``retry_in_s`` seconds, or give up (None)."""
        with self.store.transaction() as db:
            db.execute("UPDATE outbox SET status = ?, attempts = attempts + 1, last_error = ?, next_attempt = ? "
                       "WHERE id = ?", (PENDING if retry_in_s is not None else FAILED, error,
                                        time.time() + (retry_in_s or 0), item.id))

    def items(self, statuses: Sequence[str] = (HELD, PENDING, FAILED)) -> list[OutboxItem]:
        marks = ",".join("?" * len(statuses))
        rows = self.store.query(f"SELECT * FROM outbox WHERE status IN ({marks}) ORDER BY id", statuses)
        return [OutboxItem(**{k: r[k] for k in OutboxItem.__dataclass_fields__}) for r in rows]

    def resend(self, item_ids: Sequence[int] | None = None) -> int:
        """Put failed items (all, or those given) back to pending with a fresh count; returns how many."""
        with self.store.transaction() as db:
            if item_ids is None:
                return db.execute("UPDATE outbox SET status = ?, attempts = 0, next_attempt = 0 WHERE status = ?",
                                  (PENDING, FAILED)).rowcount
            marks = ",".join("?" * len(item_ids))
            return db.execute(f"UPDATE outbox SET status = ?, attempts = 0, next_attempt = 0 "
                              f"WHERE status = ? AND id IN ({marks})", (PENDING, FAILED, *item_ids)).rowcount

