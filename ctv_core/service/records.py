"""What the case store records: job and outbox statuses, and the rows it hands out."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time
from dataclasses import dataclass

#: Job statuses; a case's status is its latest job's.
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
#: Outbox statuses: waiting for approval in the station, to send, sent, given up (``ctv node resend``), and
#: replaced by a later version of the case before it went out (never sent).
HELD, PENDING, SENT, SUPERSEDED = "held", "pending", "sent", "superseded"
#: States of a series at the DICOM node: instances arriving; a case made from it (up to date); judged
#: incomplete (waiting for its missing instances or an operator); released incomplete by an operator.
RECEIVING, COMPLETE, INCOMPLETE, RELEASED = "receiving", "complete", "incomplete", "released"
#: A job that was running when its process stopped this many times is failed, not retried again.
MAX_JOB_ATTEMPTS = 3


#: What :func:`new_case_id` makes; nothing else is a case id (it names a folder).
CASE_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")


def new_case_id() -> str:
    """A new case id: the local time to the second, then six random hex digits (sortable, unguessable enough
    not to collide)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def now_iso() -> str:
    """Local time, ISO 8601 to the second."""
    return dt.datetime.now().isoformat(timespec="seconds")


@dataclass(frozen=True)
class Job:
    """A prediction (or other) job of a case, writing version ``version``."""

    id: int
    case_id: str
    version: int
    kind: str
    queue: str
    model: str
    device: str
    formats: str
    status: str
    message: str
    attempts: int


@dataclass(frozen=True)
class OutboxItem:
    """A file of a case's version to send to one destination (``AE@HOST:PORT``)."""

    id: int
    case_id: str
    version: int
    file: str
    destination: str
    status: str
    attempts: int
    last_error: str
