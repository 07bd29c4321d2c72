"""A plain-Python signal: how the logic reports progress, results and errors without touching Qt.

The widget connects its slots; tests connect lists. Slots run in the thread that calls
``emit`` (the logic emits only from the thread that drives it, Slicer's main thread).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Signal:
    """A list of callbacks called in order by ``emit``.

    Parameters
    ----------
    name
        What the signal reports, for ``repr`` and logs.
    """

    def __init__(self, name: str = "signal"):
        self.name = name
        self._slots: list[Callable[..., Any]] = []

    def connect(self, slot: Callable[..., Any]) -> None:
        """Call ``slot`` on every ``emit`` (once, however often it is connected)."""
        if slot not in self._slots:
            self._slots.append(slot)

    def disconnect(self, slot: Callable[..., Any] | None = None) -> None:
        """Stop calling ``slot`` (every slot when None)."""
        if slot is None:
            self._slots.clear()
        elif slot in self._slots:
            self._slots.remove(slot)

    def emit(self, *args: Any) -> None:
        """Call every connected slot with ``args``."""
        for slot in list(self._slots):
            slot(*args)

    def __repr__(self) -> str:
        return f"Signal({self.name!r}, {len(self._slots)} slot(s))"
