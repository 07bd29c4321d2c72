"""A folder that always holds one run's complete set of outputs: staged inside it, locked, committed as a whole.

A run's files (e.g. ``rtstruct.dcm``, ``qa.png``, ``report.json``) are written into a hidden
staging folder *inside* the output folder (so the final renames never cross a file system,
whatever is mounted where, and a read-only parent does not matter), then committed:

1. a journal (``.ctv-commit``) naming the staging folder is written atomically;
2. the previous set's files are moved aside, the marker file (``report.json``) first;
3. the new files are moved in, the marker file last;
4. the moved-aside files, the staging folder and the journal are removed.

The marker is present only when a set is complete: a reader that finds it finds one run's files.
A run killed during step 2 or 3 leaves the journal, and the next run in the folder rolls the
commit forward before anything else; a run killed before step 1 leaves a hidden staging folder,
which the next run removes (it may hold patient data). Files of the previous set that the new
run does not write are removed with it, so the folder never mixes two patients. One run at a
time: the folder is locked (``flock`` on the folder itself, released by the kernel even when the
process is killed; an exclusive lock file where ``fcntl`` does not exist).

A folder that holds anything but a previous set (files with other names, or known names
without the marker) is refused: it is not ours to replace.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .atomic_files import atomic_file, mode_of_new_files
from .errors import OutputFolderError, describe_os_error

STAGING_PREFIX = ".ctv-staging-"
ASIDE_PREFIX = ".ctv-old-"
JOURNAL = ".ctv-commit"
LOCK_FILE = ".ctv-lock"


class _Lock:
    """An exclusive, non-blocking lock on a folder for the life of one run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None
        self._file: Path | None = None

    def acquire(self, owner: str) -> None:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): an exclusive lock file
            self._file = self.folder / LOCK_FILE
            try:
                self._fd = os.open(self._file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError as exc:
                self._file = None
                raise self._busy(owner) from exc
            return
        self._fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._fd)
            self._fd = None
            raise self._busy(owner) from exc

    def _busy(self, owner: str) -> OutputFolderError:
        return OutputFolderError(
            f"Another {owner} is writing into '{self.folder}' right now. Wait for it to finish, or choose another "
            "output folder; two runs never share one.")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._file is not None:
            self._file.unlink(missing_ok=True)
            self._file = None


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _roll_forward(folder: Path, journal: dict, marker: str) -> None:
    """Finish (or redo) the commit a journal describes; every step tolerates having been done already."""
    staging, aside = folder / journal["staging"], folder / journal["aside"]
    new_files = list(journal["files"])
    aside.mkdir(exist_ok=True)
    # A name whose new file has left the staging folder was already moved in (all old files went aside first).
    moved_in = {n for n in new_files if not (staging / n).exists()}
    old = [n for n in journal["replace"] if (folder / n).exists() and n not in moved_in]
    for name in sorted(old, key=lambda n: n != marker):  # the marker leaves first
        os.replace(folder / name, aside / name)
    for name in sorted(new_files, key=lambda n: n == marker):  # and comes back last
        if (staging / name).exists():
            os.replace(staging / name, folder / name)
    shutil.rmtree(aside, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    (folder / JOURNAL).unlink(missing_ok=True)


def _recover(folder: Path, marker: str) -> None:
    """Roll an interrupted commit forward, then remove what killed runs left behind."""
    journal_path = folder / JOURNAL
    if journal_path.exists():
        try:
            journal = json.loads(journal_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            journal = None  # written atomically, so a damaged one was never a commit
        if journal and (folder / journal.get("staging", "\0")).is_dir():
            _roll_forward(folder, journal, marker)
        journal_path.unlink(missing_ok=True)
    for leftover in folder.iterdir():
        if leftover.name.startswith((STAGING_PREFIX, ASIDE_PREFIX)):
            shutil.rmtree(leftover, ignore_errors=True)
        elif leftover.name.startswith(f".{JOURNAL}."):  # a journal killed before its rename: never a commit
            leftover.unlink(missing_ok=True)


def _check_ours(folder: Path, known: Sequence[str], marker: str, owner: str) -> None:
    visible = _visible(folder)
    foreign = [n for n in visible if n not in known]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputFolderError(
            f"The output folder '{folder}' holds files that are not a {owner} output ({shown}). Give an empty or new "
            f"folder, or the folder of an earlier {owner} run (it is then replaced as a whole).")
    if visible and marker not in visible:
        raise OutputFolderError(
            f"The output folder '{folder}' holds {', '.join(visible)} but no {marker}, so it is not the output of a "
            f"complete {owner} run. Give an empty or new folder.")


@contextmanager
def output_set(folder: str | Path, known: Sequence[str], *, marker: str, owner: str) -> Iterator[Path]:
    """Open ``folder`` for a new output set and yield the staging folder to write it into.

    Everything that can be checked is checked before the caller starts its work: the folder can
    be created and written, no other run holds it, it holds nothing but an earlier set (names
    among ``known``, with ``marker``). When the block ends without an error, every file in the
    staging folder replaces the earlier set as a whole (see the module docstring); on an error
    the staging folder is removed, the earlier set stays, and a folder this call created is
    removed again.

    Raises
    ------
    OutputFolderError
        With what is wrong and what to do: the path is a file, a parent is a file, no
        permission, read-only, in use by another run, foreign content, disk full.
    """
    folder = Path(folder)
    created = not folder.exists()
    lock = _Lock(folder)
    try:
        if folder.exists() and not folder.is_dir():
            raise OutputFolderError(f"The output folder '{folder}' is a file. Give the path of a folder (new or "
                                    "empty, or an earlier output folder).")
        folder.mkdir(parents=True, exist_ok=True)
        lock.acquire(owner)
        _recover(folder, marker)
        _check_ours(folder, known, marker, owner)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    except OSError as exc:
        lock.release()
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise OutputFolderError(describe_os_error(exc, f"preparing the output folder '{folder}'")) from exc
    except BaseException:
        lock.release()
        raise
    try:
        try:
            yield staging
        except BaseException:
            _abandon(folder, staging, created)
            raise
        try:
            _commit(folder, staging, known, marker)
        except OSError as exc:
            if not (folder / JOURNAL).exists():  # nothing was moved yet: the earlier set stands
                _abandon(folder, staging, created)
                raise OutputFolderError(describe_os_error(exc, f"writing the outputs into '{folder}'") +
                                        " Nothing in the folder was replaced.") from exc
            raise OutputFolderError(describe_os_error(exc, f"moving the outputs into place in '{folder}'") +
                                    " The folder holds no complete set now; the next run in it completes this "
                                    "one's.") from exc
    finally:
        lock.release()


def _abandon(folder: Path, staging: Path, created: bool) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    if created and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _commit(folder: Path, staging: Path, known: Sequence[str], marker: str) -> None:
    files = sorted(p.name for p in staging.iterdir())
    if marker not in files:
        raise RuntimeError(f"an output set must hold {marker}")  # a programming error, not a user's
    mode = mode_of_new_files()
    for name in files:
        os.chmod(staging / name, mode)
    journal = {"staging": staging.name, "aside": ASIDE_PREFIX + staging.name[len(STAGING_PREFIX):],
               "files": files, "replace": [n for n in _visible(folder) if n in known]}
    with atomic_file(folder / JOURNAL) as tmp:
        tmp.write_text(json.dumps(journal), encoding="utf-8")
    _roll_forward(folder, journal, marker)
