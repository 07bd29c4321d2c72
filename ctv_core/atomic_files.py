"""Writing outputs so that a failure never leaves a half-written file or folder behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def mode_of_new_files() -> int:
    """The permission bits the user's umask gives a new file (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


def mode_of_new_folders() -> int:
    """The permission bits the user's umask gives a new folder (``0o777 & ~umask``)."""
    return 0o777 & ~_umask()


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    On any exception the temporary file is removed and an existing ``path`` is left untouched.
    The file gets the permissions of any new file (the umask's), not the temporary file's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if Path(tmp).exists():
            os.chmod(tmp, mode_of_new_files())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it to ``path`` when the block succeeds.

    ``path`` must not exist or be an empty folder. The folder and the files in it get the permissions of any new
    folder and file (the umask's), whatever wrote them (mkdtemp makes 0700, safetensors writes 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield staging
        file_mode = mode_of_new_files()
        for written in staging.rglob("*"):
            if written.is_file() and not written.is_symlink():
                os.chmod(written, file_mode)
        os.chmod(staging, mode_of_new_folders())
        if path.exists():
            path.rmdir()
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
