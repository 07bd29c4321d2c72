"""The node's inbox in the case store: received instances filed and indexed, series judged whole or not.

Each instance is filed under ``DATA/incoming/<folder>/<name>.dcm``, the folder the series' own
(random, recorded in the index) and the name random: no value from the wire ever becomes a
path. The file is renamed into place (or copied, fsynced and renamed when it was received on
another file system) and indexed before the instance is acknowledged.

A series is judged when nothing has arrived for the series timeout, or when it has been open for
the longest wait (a slow trickle cannot keep it open): it is whole when the images say so
(:func:`~ctv_core.dicom.completeness.assess_completeness`) and no association that sent it ended
without release, and only then becomes a case (or, when it has one already, a new version of
that case). Otherwise it is recorded incomplete with the reason, and waits for its missing
instances or for an operator's release (``ctv node release``).

At a restart, :meth:`Inbox.recover` removes what was half-received or never acknowledged, and
moves everything else it does not understand (folders where files belong, links, files of no
series, index entries pointing outside incoming/) to ``DATA/quarantine/<time>/``, saying so.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..dicom.completeness import SeriesCompleteness, assess_completeness
from ..dicom.files import read_dicom_header
from ..dicom.uids import is_uid
from .records import Job

if TYPE_CHECKING:  # the store makes its inbox: a type only, no import at run time
    from .store import CaseStore

logger = logging.getLogger(__name__)

#: The folder, under incoming/, where instances are written while they arrive.
RECEIVING_FOLDER = ".receiving"


class Inbox:
    """Received instances and series of a :class:`~ctv_core.service.store.CaseStore`."""

    def __init__(self, store: CaseStore) -> None:
        self.store = store
        self.root = store.root / "incoming"

    def receiving_dir(self) -> Path:
        """Where instances are written while they arrive (on the data folder's file system)."""
        folder = self.store.inside(self.root / RECEIVING_FOLDER)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # --- filing ---------------------------------------------------------------------------------

    def file_instance(self, received: Path, sop_uid: str, series_uid: str, study_uid: str, sop_class: str,
                      sender: str, host: str) -> bool:
        """File a received instance (the file ``received`` is moved in) and index it; False when an instance
        with this SOPInstanceUID was filed already (``received`` is then left alone).

        The UIDs must have been checked (:func:`~ctv_core.dicom.uids.is_uid`); they are index keys only.
        Called before the instance is acknowledged, so an acknowledged instance is never lost.
        """
        for uid in (sop_uid, series_uid, study_uid, sop_class):
            if not is_uid(uid):
                raise ValueError(f"{uid!r} is not a checked UID")
        if self.store.instance_known(sop_uid):
            return False
        folder = self.store.series_folder(series_uid)
        target = self.store.inside(self.root / folder / f"{secrets.token_hex(8)}.dcm")
        target.parent.mkdir(parents=True, exist_ok=True)
        _move_durably(received, target)
        stored = self.store.record_instance(sop_uid, series_uid, study_uid, sop_class, target, folder, sender, host)
        if not stored:  # the same instance came twice at once on two associations: keep the first
            target.unlink(missing_ok=True)
        return stored

    def add_instance(self, sop_uid: str, series_uid: str, study_uid: str, sop_class: str, data: bytes, sender: str,
                     host: str) -> bool:
        """:meth:`file_instance` for an instance held in memory (``data``: the file's bytes)."""
        partial = self.receiving_dir() / f".{secrets.token_hex(8)}.part"
        with open(partial, "wb") as handle:
            handle.write(data)
        try:
            return self.file_instance(partial, sop_uid, series_uid, study_uid, sop_class, sender, host)
        finally:
            partial.unlink(missing_ok=True)

    def series_files(self, series_uid: str) -> list[Path]:
        return self.store.instance_files(series_uid)

    # --- judging series -------------------------------------------------------------------------

    def due_series(self, quiet_s: float, max_open_s: float) -> list[dict[str, Any]]:
        """Series to judge now (see :meth:`CaseStore.series_due`)."""
        return self.store.series_due(quiet_s, max_open_s)

    def assess(self, series: dict[str, Any]) -> SeriesCompleteness:
        """Whether a series is whole: by its images' headers, and by how its transfers ended."""
        headers, unreadable = [], 0
        for path in self.series_files(series["uid"]):
            try:
                headers.append(read_dicom_header(path))
            except Exception:  # noqa: BLE001 - a damaged file is one problem of the series, counted below
                unreadable += 1
        verdict = assess_completeness(headers)
        problems = list(verdict.problems)
        if unreadable:
            problems.append(f"{unreadable} instance file(s) cannot be read")
        if series["interrupted"]:
            problems.append("an association sending it ended without release (aborted, connection lost, or an "
                            "instance refused), so instances may be missing at either end")
        return SeriesCompleteness(verdict.slices, tuple(problems))

    def open_series_case(self, series: dict[str, Any], *, model: str, device: str, formats: Sequence[str],
                         released: bool = False) -> tuple[str, Job] | None:
        """A series judged whole (or ``released`` by an operator) becomes a case with a queued job (see
        :meth:`CaseStore.open_series_case`)."""
        description = f"{series['instances']} CT instance(s) from {series['sender']}" + \
            (" (released incomplete by an operator)" if released else "")
        return self.store.open_series_case(series, model=model, device=device, formats=formats,
                                           description=description)

    # --- restart ----------------------------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """Remove half-received and never acknowledged files; quarantine what is not understood (see the module
        docstring). Never raises for what it finds on disk; returns counts for the log."""
        data = Path(os.path.realpath(self.store.root))
        indexed = self.store.indexed_instances()
        unsound = {path: sop for path, (sop, series) in indexed.items()
                   if not (is_uid(sop) and is_uid(series) and _indexed_path_is_sound(data, path))}
        if unsound:
            logger.warning("%d index entr(y/ies) with a path or UID the node would not have written; dropped",
                           len(unsound))
            self.store.forget_instances(list(unsound.values()))
        removed, strange = 0, []
        if self.root.is_dir() and not self.root.is_symlink():
            for entry in sorted(self.root.iterdir()):
                if entry.name == RECEIVING_FOLDER and entry.is_dir() and not entry.is_symlink():
                    removed += _clear(entry)
                elif not entry.is_dir() or entry.is_symlink():
                    strange.append(entry)
                else:
                    for item in sorted(entry.iterdir()):
                        relative = str(item.relative_to(self.store.root))
                        plain = item.is_file() and not item.is_symlink()
                        if relative in unsound or not plain or not (item.suffix == ".dcm" or item.name[0] == "."):
                            strange.append(item)
                        elif item.name.startswith(".") or relative not in indexed:  # never acknowledged
                            item.unlink()
                            removed += 1
        moved = self._quarantine(strange) if strange else 0
        for entry in self.root.iterdir() if self.root.is_dir() and not self.root.is_symlink() else ():
            empty = entry.is_dir() and not entry.is_symlink() and not any(entry.iterdir())
            if entry.name != RECEIVING_FOLDER and empty:
                entry.rmdir()  # a series folder left empty
        return {"removed_partial_files": removed, "dropped_index_entries": len(unsound), "quarantined": moved,
                "not_quarantined": len(strange) - moved}

    def _quarantine(self, entries: list[Path]) -> int:
        """Move ``entries`` (under incoming/) to a new folder under quarantine/; returns how many moved (one
        that cannot be moved is logged as an error and left: the node starts all the same)."""
        target = self.store.inside(self.store.root / "quarantine" / f"{time.strftime('%Y%m%d-%H%M%S')}-"
                                                                    f"{secrets.token_hex(3)}")
        moved = 0
        for entry in entries:
            place = target / entry.relative_to(self.root)
            try:
                place.parent.mkdir(parents=True, exist_ok=True)
                os.replace(entry, place)  # a link is moved as a link, never followed
            except OSError as exc:
                logger.error("could not quarantine %s (%s); it stays where it is and is not used", entry, exc)
                continue
            logger.warning("quarantined %s to %s: not something the node wrote", entry, place)
            moved += 1
        return moved


def _indexed_path_is_sound(data: Path, relative: str) -> bool:
    """True when an index entry names a regular file inside incoming/ (not reached through a link)."""
    path = data / relative
    resolved = Path(os.path.realpath(path))
    return (resolved == path and resolved.is_relative_to(data / "incoming") and path.is_file()
            and len(Path(relative).parts) == 3)


def _clear(folder: Path) -> int:
    """Remove everything in ``folder`` (instances that were arriving when the node stopped); returns how many."""
    count = 0
    for item in folder.iterdir():
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink()
        count += 1
    return count


def _move_durably(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` so that its bytes are on disk before its name: fsync and rename on one file
    system; copy to a temporary name, fsync and rename across file systems (``source`` is then left)."""
    import errno

    _fsync(source)
    try:
        os.replace(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    partial = target.with_name(f".{target.name}.part")
    shutil.copyfile(source, partial)
    _fsync(partial)
    os.replace(partial, target)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
