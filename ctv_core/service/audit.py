"""The audit log: one line per association, job and send, appended to ``DATA/audit.log``.

A record for the department (who sent what, what was computed, where it went), kept apart from
the program's diagnostic logging. Lines are ``<ISO time> <event> <details>``, flushed at once.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from .store import now_iso

logger = logging.getLogger(__name__)


class AuditLog:
    """Appends audit lines to a file (thread-safe); each line also goes to the module's logger."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def __call__(self, event: str, details: str) -> None:
        line = f"{now_iso()} {event} {details}".replace("\n", " ")
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        logger.info("%s", line)

    def lines(self) -> list[str]:
        """Every line so far."""
        return self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []
