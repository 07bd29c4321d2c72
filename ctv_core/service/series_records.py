"""The node's series and instances in the case store: what :class:`~ctv_core.service.store.CaseStore` records of
them (a part of the store's class, kept in a module of its own).

A series row holds its folder under incoming/ (random, never its UID), its state (receiving,
complete, incomplete, released; :mod:`.records`), whether an association sending it ended without
release, why it is incomplete, and when its current round of receiving began. Every change of
state is guarded by the instance count and state the caller judged, so instances arriving between
a verdict and its record are never lost: the series is judged again.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .records import COMPLETE, INCOMPLETE, QUEUED, RECEIVING, RELEASED, Job, new_case_id
from .store_transaction import Transaction


class SeriesRecords:
    """The series and instances methods of :class:`~ctv_core.service.store.CaseStore`."""

    def instance_known(self, sop_uid: str) -> bool:
        """True when an instance with this SOPInstanceUID is filed already."""
        return self.query("SELECT 1 FROM instances WHERE sop_uid = ?", (sop_uid,)).fetchone() \
            is not None

    def series_folder(self, series_uid: str) -> str:
        """The folder name under incoming/ of a series: its own when known, else a new random one."""
        row = self.query("SELECT folder FROM series WHERE uid = ?", (series_uid,)).fetchone()
        return row["folder"] if row is not None and row["folder"] else secrets.token_hex(8)

    def record_instance(self, sop_uid: str, series_uid: str, study_uid: str, sop_class: str, path: Path, folder: str,
                        sender: str, host: str) -> bool:
        """Index an instance filed at ``path`` (inside the data folder); False when it was indexed already.

        Its series is created, or (after a case or a verdict) opened again for a new round of
        receiving that keeps its case.
        """
        received = time.time()
        relative = str(self.inside(path).relative_to(Path(os.path.realpath(self.root))))
        with self.transaction() as db:
            inserted = db.execute("INSERT OR IGNORE INTO instances VALUES (?, ?, ?, ?, ?)",
                                  (sop_uid, series_uid, sop_class, relative, received)).rowcount
            if inserted:
                db.execute(
                    "INSERT INTO series (uid, study_uid, sender, host, first_received, last_received, instances, "
                    "state, folder, opened) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?) ON CONFLICT (uid) DO UPDATE SET "
                    "last_received = excluded.last_received, instances = instances + 1, "
                    "opened = CASE WHEN state = ? THEN opened ELSE excluded.opened END, state = ?",
                    (series_uid, study_uid, sender, host, received, received, RECEIVING, folder, received,
                     RECEIVING, RECEIVING))
        return bool(inserted)

    def instance_files(self, series_uid: str) -> list[Path]:
        """The files of a series' instances (in SOPInstanceUID order)."""
        return [self.root / r["path"] for r in self.query(
            "SELECT path FROM instances WHERE series_uid = ? ORDER BY sop_uid", (series_uid,))]

    def indexed_instances(self) -> dict[str, tuple[str, str]]:
        """Every indexed instance: its file's path relative to the data folder -> (SOPInstanceUID, series UID)."""
        return {r["path"]: (r["sop_uid"], r["series_uid"])
                for r in self.query("SELECT path, sop_uid, series_uid FROM instances")}

    def forget_instances(self, sop_uids: Sequence[str]) -> None:
        """Drop instances from the index (their files were quarantined), and series left without instances."""
        with self.transaction() as db:
            for sop_uid in sop_uids:
                db.execute("DELETE FROM instances WHERE sop_uid = ?", (sop_uid,))
            db.execute("UPDATE series SET instances = (SELECT COUNT(*) FROM instances WHERE series_uid = series.uid)")
            db.execute("DELETE FROM series WHERE instances = 0 AND case_id IS NULL")

    def transfer_ended(self, series_uids: Sequence[str], *, interrupted: bool) -> None:
        """An association that stored instances of these series ended: by release (``interrupted`` False, the
        series' earlier interruptions are made good), or by abort, lost connection or an instance refused."""
        with self.transaction() as db:
            for uid in series_uids:
                db.execute("UPDATE series SET interrupted = ? WHERE uid = ?", (int(interrupted), uid))

    def series_due(self, quiet_s: float, max_open_s: float) -> list[dict[str, Any]]:
        """Series to judge now: receiving, and quiet for ``quiet_s`` seconds or open for ``max_open_s``
        (a slow trickle cannot keep a series open for ever); and series an operator released."""
        now = time.time()
        return [dict(r) for r in self.query(
            "SELECT * FROM series WHERE (state = ? AND (last_received <= ? OR opened <= ?)) OR state = ? "
            "ORDER BY first_received", (RECEIVING, now - quiet_s, now - max_open_s, RELEASED))]

    def series(self, states: Sequence[str] = (RECEIVING, COMPLETE, INCOMPLETE, RELEASED)) -> list[dict[str, Any]]:
        """Series in the given states, oldest first."""
        marks = ",".join("?" * len(states))
        return [dict(r) for r in self.query(
            f"SELECT * FROM series WHERE state IN ({marks}) ORDER BY first_received", tuple(states))]

    def open_series_case(self, series: dict[str, Any], *, model: str, device: str, formats: Sequence[str],
                         description: str) -> tuple[str, Job] | None:
        """A series judged whole (or released) becomes a case with a queued job and the series points to it,
        in one transaction; None when more instances arrived since it was judged (judged again later)."""
        case_id = new_case_id()
        self.ct_dir(case_id).mkdir(parents=True)
        with self.transaction() as db:
            if not self._series_unchanged(db, series):
                return None
            db.insert_case(case_id, "dicom", sender=series["sender"], study_uid=series["study_uid"],
                           series_uid=series["uid"], description=description)
            job_id = db.insert_job(case_id, 1, "prediction", "node", model, device, formats)
            db.execute("UPDATE series SET state = ?, case_id = ?, note = '' WHERE uid = ?",
                       (COMPLETE, case_id, series["uid"]))
        return case_id, self.job(job_id)

    def update_series_case(self, series: dict[str, Any], *, model: str, device: str,
                           formats: Sequence[str]) -> Job | None | bool:
        """A series that has a case grew and is judged whole again (or released): its case gets a new version.

        Returns the job queued; None when the case's queued job, not yet started, will see the new
        instances anyway; False when more instances arrived since the series was judged.
        """
        with self.transaction() as db:
            if not self._series_unchanged(db, series):
                return False
            db.execute("UPDATE series SET state = ?, note = '' WHERE uid = ?", (COMPLETE, series["uid"]))
            waiting = db.execute("SELECT id FROM jobs WHERE case_id = ? AND status = ? AND queue = 'node'",
                                 (series["case_id"], QUEUED)).fetchone()
            if waiting is not None:
                return None
            job_id = db.insert_job(series["case_id"], self.next_version(series["case_id"]), "update", "node", model,
                                   device, formats)
            db.set_case_status(series["case_id"], QUEUED)
            db.execute("UPDATE cases SET description = ? WHERE id = ?",
                       (f"{series['instances']} CT instance(s) from {series['sender']}", series["case_id"]))
        return self.job(job_id)

    def mark_series_incomplete(self, series: dict[str, Any], note: str) -> bool:
        """Record that a series is not whole (``note`` says why); False when more instances arrived since."""
        with self.transaction() as db:
            if not self._series_unchanged(db, series):
                return False
            db.execute("UPDATE series SET state = ?, note = ? WHERE uid = ?", (INCOMPLETE, note, series["uid"]))
        return True

    def release_series(self, series_uid: str) -> dict[str, Any] | None:
        """An operator's release of an incomplete series: the node delineates it as it is. Returns the series,
        or None when no incomplete series has this UID."""
        with self.transaction() as db:
            changed = db.execute("UPDATE series SET state = ? WHERE uid = ? AND state = ?",
                                 (RELEASED, series_uid, INCOMPLETE)).rowcount
            row = db.execute("SELECT * FROM series WHERE uid = ?", (series_uid,)).fetchone()
        return dict(row) if changed and row is not None else None

    @staticmethod
    def _series_unchanged(db: Transaction, series: dict[str, Any]) -> bool:
        row = db.execute("SELECT instances, state FROM series WHERE uid = ?", (series["uid"],)).fetchone()
        return row is not None and row["instances"] == series["instances"] and row["state"] == series["state"]
