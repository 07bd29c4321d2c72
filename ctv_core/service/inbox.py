"""The node's inbox in the case store: received instances filed and indexed, series that are complete.

Each instance is written under ``DATA/incoming/<series UID>/<SOPInstanceUID>.dcm`` (temporary
name, fsync, rename) and indexed before it is acknowledged. A series from which nothing has
arrived for the series timeout becomes a case with a queued job, in one transaction.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .records import Job, new_case_id


class Inbox:
    """Received instances and series of a :class:`~ctv_core.service.store.CaseStore`."""

    def __init__(self, store) -> None:
        self.store = store

    def incoming_dir(self, series_uid: str) -> Path:
        """Where the instances of a series are filed."""
        return self.store.root / "incoming" / series_uid

    def add_instance(self, sop_uid: str, series_uid: str, study_uid: str, sop_class: str, data: bytes,
                     sender: str, host: str) -> bool:
        """File one received instance (atomically, fsynced) and index it; False when it was already here.

        Called before the instance is acknowledged, so an acknowledged instance is never lost.
        """
        folder = self.incoming_dir(series_uid)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{sop_uid}.dcm"
        if self.store._connection().execute("SELECT 1 FROM instances WHERE sop_uid = ?", (sop_uid,)).fetchone():
            return False
        tmp = folder / f".{sop_uid}.{secrets.token_hex(4)}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        received = time.time()
        with self.store._transaction() as db:
            relative = str(path.relative_to(self.store.root))
            inserted = db.execute("INSERT OR IGNORE INTO instances VALUES (?, ?, ?, ?, ?)",
                                  (sop_uid, series_uid, sop_class, relative, received)).rowcount
            if inserted:
                db.execute(
                    "INSERT INTO series (uid, study_uid, sender, host, first_received, last_received, instances, "
                    "state) VALUES (?, ?, ?, ?, ?, ?, 1, 'receiving') ON CONFLICT (uid) DO UPDATE SET "
                    "last_received = excluded.last_received, instances = instances + 1, state = 'receiving'",
                    (series_uid, study_uid, sender, host, received, received))
        return bool(inserted)

    def quiet_series(self, timeout_s: float) -> list[dict[str, Any]]:
        """Series still receiving whose last instance came more than ``timeout_s`` seconds ago."""
        limit = time.time() - timeout_s
        return [dict(r) for r in self.store._connection().execute(
            "SELECT * FROM series WHERE state = 'receiving' AND last_received <= ?", (limit,))]

    def open_series_case(self, series: dict[str, Any], *, model: str, device: str,
                         formats: Sequence[str]) -> tuple[str, Job]:
        """A complete series becomes a case with a queued job, in one transaction (never half of it)."""
        case_id = new_case_id()
        self.store.ct_dir(case_id).mkdir(parents=True)
        with self.store._transaction() as db:
            self.store._insert_case(db, case_id, "dicom", sender=series["sender"], study_uid=series["study_uid"],
                                    series_uid=series["uid"],
                                    description=f"{series['instances']} CT instance(s) from {series['sender']}")
            job_id = self.store._insert_job(db, case_id, 1, "prediction", "node", model, device, formats)
            db.execute("UPDATE series SET state = 'complete', case_id = ? WHERE uid = ?", (case_id, series["uid"]))
        return case_id, self.store.job(job_id)

    def series_files(self, series_uid: str) -> list[Path]:
        return [self.store.root / r["path"] for r in self.store._connection().execute(
            "SELECT path FROM instances WHERE series_uid = ? ORDER BY sop_uid", (series_uid,))]

    def remove_unindexed(self) -> int:
        """Remove files never acknowledged (half-written, or filed but not indexed); returns how many."""
        removed = 0
        indexed = {r["path"] for r in self.store._connection().execute("SELECT path FROM instances")}
        for path in (self.store.root / "incoming").glob("*/*"):
            relative = str(path.relative_to(self.store.root))
            if path.name.startswith(".") or (path.suffix == ".dcm" and relative not in indexed):
                path.unlink(missing_ok=True)
                removed += 1
        return removed
