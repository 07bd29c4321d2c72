"""What the case store records: job and outbox statuses, and the rows it hands out."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import dataclass

#: Job statuses; a case's status is its latest job's.
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
#: Outbox statuses: waiting for approval in the station, to send, sent, given up (``ctv node resend``).
HELD, PENDING, SENT = "held", "pending", "sent"
#: A job that was running when its process stopped this many times is failed, not retried again.
MAX_JOB_ATTEMPTS = 3


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
