"""What an upload may put on disk: a zip of a DICOM folder, or DICOM files, inside one folder and within limits.

The station receives an upload into a folder of its own (``DATA/uploads/<id>/files``) and this
module decides what lands there:

* a zip is unpacked member by member, never with ``extractall``: a member whose path is absolute,
  climbs out with ``..``, is a symbolic link or is encrypted refuses the whole upload (a hostile
  or broken archive), as does a name given twice; every file is created new (``O_EXCL``), owner
  only, and synced to disk;
* a member name that is not valid UTF-8 (though flagged so), or a name or path component longer
  than the file system takes, refuses the upload with a message naming the member (never a path
  on the server);
* a plain file keeps only its base name;
* the limits (:class:`UploadLimits`) count what is unpacked, not what the archive claims: bytes
  beyond the limit stop the unpacking, and the upload is refused;
* the CPU time spent examining the upload (unpacking, reading headers, decoding slices) is
  counted against a budget (:class:`CPUBudget`), checked between files and chunks: past it the
  upload is refused.

Which files are DICOM is the loader's call (:func:`ctv_core.dicom.files.scan_folder`), after a
cheap look at each file's first bytes (:func:`ctv_core.dicom.files.looks_like_dicom`: files that
do not start as DICOM are never parsed); the ones it passes over as not DICOM are removed
afterwards and named in the upload's note (:meth:`UploadContents.drop`).
"""

from __future__ import annotations

import os
import stat
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ...errors import UploadError, UploadTooCostlyError, UploadTooLargeError, describe_os_error

#: Bytes copied at a time.
CHUNK = 1 << 20
MB = 1 << 20
#: Longest file name and path a member may have once unpacked (bytes; Linux's NAME_MAX, and well below PATH_MAX).
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024


@dataclass(frozen=True)
class UploadLimits:
    """Limits of one upload: bytes received (the request), bytes and files once unpacked, CPU seconds examining it."""

    max_upload_bytes: int = 2048 * MB
    max_unpacked_bytes: int = 4096 * MB
    max_files: int = 20000
    max_cpu_seconds: float = 120.0

    def __post_init__(self) -> None:
        if min(self.max_upload_bytes, self.max_unpacked_bytes, self.max_files, self.max_cpu_seconds) <= 0:
            raise ValueError("upload limits must be positive")


class CPUBudget:
    """CPU seconds the examination of one upload may take, summed over the threads doing it.

    :meth:`checkpoint` is called by the work between its steps (a chunk unpacked, a file read, a
    slice decoded), in whichever thread does the step: it adds that thread's CPU time since its
    previous checkpoint, and raises once the total is past the budget. One step is never cut
    short; steps are small (a chunk, one file), and files that do not look like DICOM are never
    parsed.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.spent = 0.0
        self._marks: dict[int, float] = {}
        self._lock = threading.Lock()

    def checkpoint(self) -> None:
        """Count this thread's CPU time since its last checkpoint; raise past the budget.

        Raises
        ------
        UploadTooCostlyError
            The budget is spent.
        """
        now = time.thread_time()
        with self._lock:
            self.spent += now - self._marks.get(threading.get_ident(), now)
            self._marks[threading.get_ident()] = now
            spent = self.spent
        if spent > self.seconds:
            raise UploadTooCostlyError(
                f"Examining the upload took more than {self.seconds:g} s of CPU, the station's limit; it is refused. "
                "Upload the CT series alone, uncompressed or with ordinary compression (or ask for a larger limit: "
                "ctv review --max-upload-cpu-seconds).")


@dataclass
class UploadContents:
    """What one upload put into its folder so far, checked against the limits as it grows."""

    folder: Path
    limits: UploadLimits
    files: int = 0
    bytes: int = 0
    ignored: list[str] = field(default_factory=list)
    budget: CPUBudget = field(init=False)

    def __post_init__(self) -> None:
        self.budget = CPUBudget(self.limits.max_cpu_seconds)

    def count(self, size: int, new_file: bool) -> None:
        """Account for ``size`` more bytes (and a new file); refuse the upload beyond the limits."""
        self.bytes += size
        self.files += int(new_file)
        if self.bytes > self.limits.max_unpacked_bytes:
            raise UploadTooLargeError(
                f"The upload unpacks to more than {self.limits.max_unpacked_bytes // MB} MB, the station's limit. "
                "Upload the CT series alone (without other series or studies), or ask for a larger limit "
                "(ctv review --max-unpacked-mb).")
        if self.files > self.limits.max_files:
            raise UploadError(
                f"The upload holds more than {self.limits.max_files} files, the station's limit. Upload the CT series "
                "alone, or ask for a larger limit (ctv review --max-files).")

    def drop(self, paths: list[Path]) -> None:
        """Remove files the loader passed over as not DICOM, noting their names."""
        for path in paths:
            path.unlink(missing_ok=True)
            self.ignored.append(path.relative_to(self.folder).as_posix())

    def note(self) -> str:
        """A sentence for the user about what was ignored ('' when nothing was)."""
        if not self.ignored:
            return ""
        shown = ", ".join(self.ignored[:5]) + (f" and {len(self.ignored) - 5} more" if len(self.ignored) > 5 else "")
        return f"{len(self.ignored)} file(s) of the upload are not DICOM and were ignored: {shown}."


def add_received(received: Path, name: str, contents: UploadContents) -> None:
    """Put a received file into the upload's folder: unpacked when it is (or claims to be) a zip, else under
    its base name.

    ``received`` (spooled by the caller) is consumed: unpacked then removed, or moved.
    """
    try:
        with open(received, "rb") as head:
            looks_zipped = head.read(4) == b"PK\x03\x04"
        if looks_zipped or zipfile.is_zipfile(received):
            try:
                unpack_zip(received, contents, prefix=_safe_base_name(name, "upload.zip").rsplit(".", 1)[0])
            finally:
                received.unlink(missing_ok=True)
            return
        target = contents.folder / _safe_base_name(name, f"file{contents.files + 1:05d}")
        if target.exists():
            target = target.with_name(f"{target.name}.{contents.files + 1}")
        contents.count(received.stat().st_size, new_file=True)
        os.replace(received, target)
    except OSError as exc:  # the message names no path of the server
        exc.filename = exc.filename2 = None
        raise UploadError(describe_os_error(exc, "storing the upload")) from exc


def unpack_zip(archive: Path, contents: UploadContents, prefix: str = "") -> None:
    """Unpack a zip into the upload's folder (under ``prefix``), member by member (see the module docstring).

    Raises
    ------
    UploadError
        Not a readable zip, an unsafe or duplicate member, too many files.
    UploadTooLargeError
        More bytes than the limit once unpacked.
    """
    try:
        contents.budget.checkpoint()
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir()]
            for member in members:
                _check_member(member)
            if len(members) + contents.files > contents.limits.max_files:
                raise UploadError(f"The zip holds {len(members)} files; the station takes at most "
                                  f"{contents.limits.max_files}. Upload the CT series alone.")
            base = contents.folder / prefix if prefix else contents.folder
            for member in members:
                _extract(zipped, member, base / PurePosixPath(member.filename.replace("\\", "/")), contents)
    except zipfile.BadZipFile as exc:
        raise UploadError(f"The upload is not a readable zip file ({exc}). Upload a zip of the CT's DICOM folder "
                          "(or the DICOM files themselves).") from exc
    except UnicodeDecodeError as exc:  # a name flagged UTF-8 that is not
        raise UploadError(f"A member name of the zip is not valid UTF-8 although the zip says it is "
                          f"({exc.object[:40]!r}...). Make the zip again with a current zip program.") from exc
    except (zipfile.LargeZipFile, NotImplementedError, RuntimeError) as exc:  # unsupported compression, password
        raise UploadError(f"A member of the zip cannot be unpacked ({exc}). Make the zip again with ordinary "
                          "(deflate) compression and no password.") from exc


def _check_member(member: zipfile.ZipInfo) -> None:
    name = member.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    unsafe = (name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts or "\0" in name
              or not parts)
    if unsafe:
        raise UploadError(f"The zip member '{member.filename}' has a path that leaves the upload's folder; the upload "
                          "is refused. Make the zip again from the CT's folder (relative paths only).")
    if stat.S_ISLNK(member.external_attr >> 16):
        raise UploadError(f"The zip member '{member.filename}' is a symbolic link; the upload is refused. Make the "
                          "zip again without links (the files themselves).")
    if member.flag_bits & 0x1:
        raise UploadError(f"The zip member '{member.filename}' is encrypted; upload a zip without a password.")
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_PATH_BYTES or any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES
                                            for part in parts):
        raise UploadError(f"The zip member '{member.filename[:80]}...' has a name longer than {MAX_NAME_BYTES} bytes "
                          f"(or a path longer than {MAX_PATH_BYTES}); make the zip again with shorter names.")


def _extract(zipped: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, contents: UploadContents) -> None:
    root = contents.folder.resolve()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not target.parent.resolve().is_relative_to(root):  # a checked name can still meet a planted link
        raise UploadError(f"The zip member '{member.filename}' would be written outside the upload's folder; the "
                          "upload is refused.")
    try:
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError as exc:
        raise UploadError(f"The zip holds '{member.filename}' twice; make the zip again.") from exc
    contents.count(0, new_file=True)
    with os.fdopen(descriptor, "wb") as out, zipped.open(member) as source:
        while chunk := source.read(CHUNK):
            contents.count(len(chunk), new_file=False)
            contents.budget.checkpoint()
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())


def _safe_base_name(name: str, fallback: str) -> str:
    """The last component of a client's file name, or ``fallback`` when nothing usable is left."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].replace("\0", "").strip()
    return base if base not in ("", ".", "..") and not base.startswith(".") else fallback
