"""Stopping a training run cleanly: Ctrl+C or SIGTERM asks the loop to stop after the step under way.

The first SIGINT or SIGTERM only sets a flag; the loop finishes the step (and a validation
that is running), writes ``checkpoints/last.pt`` at that step and raises
:class:`TrainingInterrupted`. A second signal restores the previous handlers and interrupts at
once, as Ctrl+C always does (the work since the last checkpoint is then lost). Handlers can be
installed only on the main thread; elsewhere (a training started from a worker thread) the
signals keep their usual effect. DataLoader workers ignore SIGINT (:func:`ignore_stop_in_worker`):
Ctrl+C in a terminal reaches the whole process group, and a worker that stopped would leave the
step under way without its batch.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from ..errors import TrainingError

logger = logging.getLogger(__name__)

#: The signals that stop a run after its current step.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ignore_stop_in_worker(worker_id: int) -> None:
    """``worker_init_fn`` of the training DataLoader: the worker leaves SIGINT to the training process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class TrainingInterrupted(TrainingError):
    """The run stopped on request after writing a checkpoint.

    Attributes
    ----------
    step
        Optimiser steps done, and the step ``checkpoint`` holds (a resumed run starts there).
    checkpoint
        ``RUN_DIR/checkpoints/last.pt``.
    """

    def __init__(self, step: int, checkpoint: Path) -> None:
        self.step, self.checkpoint = step, checkpoint
        super().__init__(f"interrupted at step {step}; step {step} is saved in {checkpoint}")


class StopRequest:
    """A context in which the first SIGINT/SIGTERM sets :attr:`requested` instead of interrupting.

    Parameters
    ----------
    on_request
        Called (from the signal handler) with the signal's name when the first signal arrives,
        so the caller can say that the run is finishing its step.
    """

    def __init__(self, on_request: Callable[[str], None] | None = None) -> None:
        self.requested = False
        self._on_request = on_request
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self._restore()  # a second signal interrupts at once
        name = signal.Signals(signum).name
        logger.info("%s received: stopping after the current step", name)
        if self._on_request is not None:
            self._on_request(name)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()
