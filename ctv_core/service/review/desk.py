"""The station's cases, without the viewer: an upload becomes a case with its prediction queued, and every
case offers its versions, their files, re-runs, cancelling and approval.

An upload is received into ``DATA/uploads/<id>/files`` (:mod:`.uploads`), examined as the loader
examines a folder (non-DICOM files are dropped with a note; several CT series wait for the user's
choice, the upload kept meanwhile; MR, gaps and corrupt files are refused with the loader's
message) and loaded. Only then is it acknowledged: its files are moved into a new case and the
case is recorded with its prediction job in one transaction (:meth:`CaseStore.open_case`). The
prediction runs as ``ctv predict`` in a worker process (:mod:`ctv_core.service.jobs`, queue
``station``); its version is recorded after its folder is complete. An upload answered with a
series choice is kept (marked so) for a day, for its choice; a choice takes the upload for itself
first (a rename: two choices at once cannot both use it), and a choice the loader refuses leaves
it kept for another. Every other upload folder is removed when its request ends, and, should the
station have been killed meanwhile, at the next start.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...dicom.ct_series import CTSeries
from ...dicom.files import scan_folder
from ...dicom.series import load_ct_series
from ...dicom.uids import uid_problem
from ...errors import CTVError, SeriesNotFoundError, UploadError
from ...inference.predict_job import KNOWN_FILES, REPORT, UNCERTAINTY_FILE
from ..approvals import approval_record, write_sidecar
from ..audit import AuditLog
from ..jobs import JobWorkers
from ..records import DONE, FAILED, QUEUED, RUNNING, Job
from ..store import CaseStore
from .config import StationConfig
from .uploads import UploadContents

logger = logging.getLogger(__name__)

QUEUE = "station"
#: What a station prediction writes: the viewer reads ctv.nii.gz; every format downloads.
PREDICTION_FORMATS = ("rtstruct", "seg", "nifti")
#: Files of a version that download, in the order the page lists them (the uncertainty map, shown over the CT,
#: downloads too).
VERSION_FILES = tuple(name for name in ("rtstruct.dcm", "seg.dcm", "ctv.nii.gz", UNCERTAINTY_FILE, "qa.png", REPORT)
                      if name in KNOWN_FILES)
UPLOAD_TTL_S = 24 * 3600.0
#: The file that marks an upload kept for its series choice.
KEPT = "kept"
#: Reasons of the loader's scan for files that are not DICOM at all (dropped from an upload).
NOT_DICOM = ("not a DICOM file", "DICOMDIR")


@dataclass(frozen=True)
class SeriesChoice:
    """An upload holding several CT series: the user picks one (``series``: uid, number, description,
    date, files per series)."""

    upload: str
    series: list[dict[str, Any]]
    message: str


@dataclass(frozen=True)
class Received:
    """An upload that became a case: its id, its queued job, the CT as loaded and a note for the user."""

    case_id: str
    job: Job
    ct: CTSeries
    note: str


def describe_ct(ct: CTSeries) -> str:
    """The line the case list shows: whose CT it is, when, which series."""
    patient = ct.reference.patient_study
    name = patient.patient_name.replace("^", " ").strip() or "(no name)"
    parts = [f"{name} ({patient.patient_id or 'no ID'})", patient.study_date or "no date",
             ct.reference.series_description or "CT", f"{len(ct.reference.slices)} slices"]
    return " · ".join(parts)


class ReviewDesk:
    """The station's case work around one :class:`CaseStore` (see the module docstring).

    Parameters
    ----------
    config
        The station's settings.
    models
        Model choices for re-runs: name shown -> package path ('' for the bundled model); the
        first is the default.
    """

    def __init__(self, config: StationConfig, models: Mapping[str, str]) -> None:
        self.config = config
        self.models = dict(models)
        self.store = CaseStore(config.data)
        self.audit = AuditLog(config.data / "audit.log")
        self.uploads = config.data / "uploads"
        self.workers = JobWorkers(self.store, QUEUE, self.finish, self.audit, count=config.workers,
                                  arguments=lambda job: [f"--engine={config.engine}"], poll_s=config.poll_s)
        self._recent: Received | None = None
        #: Told ``(case_id, version)`` when a prediction's version is recorded (the page shows it at once).
        self.on_version: Callable[[str, int], None] | None = None

    # --- life -------------------------------------------------------------------------------

    def start(self) -> dict[str, int]:
        """Resume what was pending, remove uploads no choice waits for, start the workers; returns what was
        resumed."""
        os.chmod(self.config.data, 0o700)  # every case folder below is the station user's only
        self.uploads.mkdir(mode=0o700, exist_ok=True)
        resumed = self.store.recover()
        resumed["removed_uploads"] = self._remove_stale_uploads()
        self.workers.start()
        self.audit("start", f"review station on {self.config.host}:{self.config.port}, data {self.config.data} "
                            f"(resumed: {resumed})")
        return resumed

    def stop(self) -> None:
        """Stop the workers; running predictions are queued again for the next start."""
        self.workers.stop()
        self.audit("stop", "review station")

    # --- uploads ------------------------------------------------------------------------------

    def new_upload(self) -> tuple[str, UploadContents]:
        """A new, empty upload folder and the tally of what goes into it."""
        upload = secrets.token_hex(8)
        folder = self.store.inside(self.uploads / upload / "files")
        folder.mkdir(parents=True, mode=0o700)
        return upload, UploadContents(folder, self.config.limits)

    def keep(self, upload: str) -> None:
        """Keep an upload for its series choice (see the module docstring)."""
        (self.uploads / upload / KEPT).touch()

    def claim(self, upload: str) -> tuple[str, UploadContents] | None:
        """Take a kept upload for one series choice: its new name and contents, or None when it is not kept (used,
        removed, or taken by another choice now: :meth:`in_use` tells). Give it back with :meth:`unclaim`."""
        if len(upload) != 16 or not upload.isalnum():
            return None
        claimed = f"{upload}.{secrets.token_hex(4)}"
        try:
            if not (self.uploads / upload / KEPT).is_file():
                return None
            os.rename(self.uploads / upload, self.store.inside(self.uploads / claimed))
        except FileNotFoundError:
            return None
        return claimed, UploadContents(self.uploads / claimed / "files", self.config.limits)

    def in_use(self, upload: str) -> bool:
        """True when a kept upload is taken by a series choice being examined now."""
        return len(upload) == 16 and upload.isalnum() and any(self.uploads.glob(f"{upload}.*"))

    def unclaim(self, claimed: str) -> None:
        """Give a claimed upload back (the choice was refused: the upload stays kept for another)."""
        upload = claimed.split(".", 1)[0]
        os.rename(self.uploads / claimed, self.store.inside(self.uploads / upload))

    def discard(self, upload: str) -> None:
        shutil.rmtree(self.store.inside(self.uploads / upload), ignore_errors=True)

    def receive(self, upload: str, contents: UploadContents, series_uid: str | None = None,
                who: str = "") -> Received | SeriesChoice:
        """Examine a received upload and make it a case (see the module docstring). Blocks (reads every file),
        within the upload's CPU budget. ``who``: the identity of the request, for the audit log.

        Raises
        ------
        DicomInputError
            The loader's refusal (no CT, MR, gaps, corrupt files, ...); the upload is left as it is.
        UploadError
            ``series_uid`` or the CT's own series UID is not a UID; the examination took too long.
        """
        if series_uid is not None and uid_problem(series_uid, "The series asked for"):
            raise UploadError(f"{uid_problem(series_uid, 'The series asked for')}; give one of the series the upload "
                              "was answered with.")
        checkpoint = contents.budget.checkpoint
        series_list, skipped = scan_folder(contents.folder, checkpoint)
        contents.drop([s.path for s in skipped if s.reason.startswith(NOT_DICOM)])
        candidates = [s for s in series_list if s.is_ct_volume_candidate]
        if series_uid is None and len(candidates) > 1:
            choices = [{"uid": s.key, "number": s.number, "description": s.description, "date": s.date,
                        "files": len(s.headers), "summary": s.summary()} for s in candidates]
            return SeriesChoice(upload, choices, f"The upload holds {len(candidates)} CT series; choose the "
                                                 "planning CT to delineate.")
        ct = load_ct_series(contents.folder, series_uid=series_uid, checkpoint=checkpoint)
        reference = ct.reference
        problem = uid_problem(reference.series_instance_uid, "The CT's SeriesInstanceUID")
        if problem:
            raise SeriesNotFoundError(f"{problem}; the files are damaged or forged. Export the series again.")
        case_id, job = self.store.open_case(
            "upload", contents.folder, queue=QUEUE, model=self.models[next(iter(self.models))],
            device=self.config.device, formats=PREDICTION_FORMATS, study_uid=reference.study_instance_uid,
            series_uid=reference.series_instance_uid, description=describe_ct(ct))
        self.discard(upload)
        self.workers.wake()
        note = contents.note()
        self.audit("upload", f"case {case_id}: {len(reference.slices)} CT slices of series "
                             f"{reference.series_instance_uid}, {contents.bytes} bytes, "
                             f"{contents.budget.spent:.1f} s of CPU to examine; job {job.id}; by {who or 'the page'}"
                             + (f"; {note}" if note else ""))
        received = Received(case_id, job, _moved(ct, contents.folder, self.store.ct_dir(case_id)), note)
        self._recent = received  # the viewer opens an upload at once: it need not load the CT again
        return received

    def take_loaded_ct(self, case_id: str) -> CTSeries | None:
        """The CT of the case just received, as loaded when it was examined (once; None otherwise)."""
        recent, self._recent = self._recent, None
        return recent.ct if recent is not None and recent.case_id == case_id else None

    def _remove_stale_uploads(self) -> int:
        """Remove every upload folder except those kept for a choice less than a day ago (a station killed in
        the middle of an upload leaves its folder: removed here). Returns how many were removed."""
        limit = time.time() - UPLOAD_TTL_S
        removed = 0
        for folder in self.uploads.iterdir():
            kept = folder / KEPT
            if kept.is_file() and kept.stat().st_mtime >= limit and "." not in folder.name:
                continue
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)
            else:
                folder.unlink()
            removed += 1
        return removed

    # --- jobs -----------------------------------------------------------------------------------

    def finish(self, job: Job, report: dict[str, Any]) -> None:
        """A prediction's version folder is complete: record the version (the job's end), then tell
        :attr:`on_version` (from the worker's thread)."""
        model = f"{report['model']['name']} {report['model']['version']}"
        self.store.finish_job(job, model=model)
        if self.on_version is not None:
            self.on_version(job.case_id, job.version)
        self.audit("job-done", f"job {job.id} case {job.case_id} version {job.version}: CTV "
                               f"{report['ctv']['volume_cc']} cc by {model}")

    def rerun(self, case_id: str, model_name: str, who: str = "") -> Job:
        """Queue another prediction of the case with one of the station's models (a new version)."""
        job = self.store.queue_job(case_id, queue=QUEUE, kind="rerun", model=self.models[model_name],
                                   device=self.config.device, formats=PREDICTION_FORMATS)
        self.workers.wake()
        self.audit("rerun", f"case {case_id} version {job.version} with {model_name}, job {job.id}; by "
                            f"{who or 'the page'}")
        return job

    def cancel(self, case_id: str, who: str = "") -> bool:
        cancelled = self.store.request_cancel(case_id)
        if cancelled:
            self.audit("cancel", f"case {case_id} by {who or 'the page'}")
        return cancelled

    def approve(self, case_id: str, version: int, signed: str, who: str) -> list[tuple[str, str]]:
        """Approve a version; files a DICOM node held for review go out (that version's, to the node's peers).

        ``signed``: the name the approver gives (required: an approval is someone's); ``who``: the
        authenticated identity of the request (:func:`.access.identity`), which the audit log records
        as who approved, the given name beside it. What the clinician changed in the AI contour is
        measured first and recorded with the approval (:mod:`ctv_core.service.approvals`): beside the
        version's RTSTRUCT and in the index, in the approval's transaction.

        Raises
        ------
        CTVError
            No name given; the version cannot be compared with the prediction it started from
            (another CT, files missing): nothing is approved, released or recorded then.
        """
        signed = " ".join(signed.split())
        if not signed:
            raise CTVError("Give your name to approve a version: every approval records who made it.")
        record = approval_record(self.store, case_id, version, signed)
        sidecar = write_sidecar(self.store, case_id, version, record)
        try:
            pairs = self.store.outbox.approve(case_id, version, record=record)
        except BaseException:
            sidecar.unlink(missing_ok=True)
            raise
        figures = record["figures"]
        self.audit("approve", f"case {case_id} version {version} by {who} (signed {signed!r}); AI contour of "
                              f"version {record['context']['ai_version']}: Dice {figures['dice']}, added "
                              f"{figures['added_cc']} cc, removed {figures['removed_cc']} cc; released "
                              f"{', '.join(f'{f} to {d}' for f, d in pairs) or 'nothing (no held files)'}")
        return pairs

    # --- reading ----------------------------------------------------------------------------------

    def cases(self) -> list[dict[str, Any]]:
        """Every case, newest first, with where its latest job stands."""
        progress = self.store.open_jobs()
        return [_case_row(case, progress.get(case["id"])) for case in self.store.cases()]

    def case(self, case_id: str) -> dict[str, Any] | None:
        """A case with its complete versions (their files) and its latest job's progress; None when unknown."""
        case = self.store.case(case_id) if _plain(case_id) else None
        if case is None:
            return None
        jobs = [j for j in case["jobs"] if j["status"] in (QUEUED, RUNNING)]
        out = _case_row(case, jobs[-1] if jobs else None)
        out["versions"] = [dict(v, files=files) for v in case["versions"]
                           if (files := self.version_files(case_id, v["number"])) and v["kind"] != "reserved"]
        return out

    def version_files(self, case_id: str, number: int) -> list[str]:
        """The files of a complete version folder (none while it is written or when it failed)."""
        folder = self.store.version_dir(case_id, number)
        if not (folder / REPORT).is_file() or (folder / ".ctv-commit").exists():
            return []
        return [name for name in VERSION_FILES if (folder / name).is_file()]

    def latest_version(self, case_id: str) -> int | None:
        case = self.case(case_id)
        return case["versions"][-1]["number"] if case and case["versions"] else None

    def report(self, case_id: str, number: int) -> dict[str, Any]:
        """A version's report.json ({} when unreadable)."""
        try:
            return json.loads((self.store.version_dir(case_id, number) / REPORT).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}


def _moved(ct: CTSeries, old: Path, new: Path) -> CTSeries:
    """The CT as loaded from ``old``, its files now in ``new`` (writers read the slices' files again)."""
    slices = tuple(dataclasses.replace(s, path=new / Path(s.path).relative_to(old)) for s in ct.reference.slices)
    return dataclasses.replace(ct, folder=new, reference=dataclasses.replace(ct.reference, slices=slices))


def _plain(case_id: str) -> bool:
    return bool(case_id) and all(c.isalnum() or c == "-" for c in case_id)


def _case_row(case: dict[str, Any], job: dict[str, Any] | None) -> dict[str, Any]:
    row = {key: case[key] for key in ("id", "created", "source", "sender", "description", "status", "message",
                                      "study_uid", "series_uid", "approved_version")}
    if job is not None and case["status"] not in (DONE, FAILED):
        row["progress"] = {"stage": job.get("stage", ""), "fraction": round(float(job.get("progress", 0.0)), 3)}
    return row
