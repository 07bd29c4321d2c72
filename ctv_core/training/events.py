"""What a training run tells its caller as it goes: the start-up summary, the expected time, progress.

The loop never prints; it calls a :class:`TrainingEvents` object (the command line's shows bars
and prints the summary). :class:`RunSummary` is what is known before the first step;
:func:`changed_settings` names the settings that differ from the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .config import TrainingConfig, config_differences

#: Steps not timed for the expected time (the first ones are slower: allocation, caches) ...
WARM_UP_SKIP = 2
#: ... and the steps after them that are timed.
WARM_UP_STEPS = 5


@dataclass(frozen=True)
class RunSummary:
    """A run as it starts.

    Attributes
    ----------
    train_cases, validation_cases
        Cases in the run's training and validation parts of the split.
    device
        Where the network trains ("cpu", "cuda:0", ...).
    world_size
        Processes training together (torchrun).
    parameters
        Trainable parameters of the network (the QAM's not counted).
    start_step, steps
        The step the run starts (or resumes) from and the run's total.
    changed
        ``"dotted.name=value"`` for every setting that differs from the defaults.
    """

    train_cases: int
    validation_cases: int
    device: str
    world_size: int
    parameters: int
    start_step: int
    steps: int
    changed: tuple[str, ...]

    def lines(self) -> list[str]:
        """The summary as lines of text."""
        start = f"resuming at step {self.start_step} of {self.steps}" if self.start_step else \
            f"{self.steps} steps from scratch"
        procs = f" x {self.world_size} processes" if self.world_size > 1 else ""
        lines = [f"{self.train_cases} training case(s), {self.validation_cases} validation case(s); {start}",
                 f"device {self.device}{procs}; network of {self.parameters:,} parameters"]
        if self.changed:
            lines.append("settings other than the defaults: " + ", ".join(self.changed))
        else:
            lines.append("the default settings")
        return lines


def changed_settings(config: TrainingConfig) -> tuple[str, ...]:
    """``"name=value"`` for each setting of ``config`` that differs from :class:`TrainingConfig`'s defaults."""
    current = config.to_dict()
    return tuple(f"{name}={_value(current, name)}" for name in config_differences(TrainingConfig().to_dict(), current))


def _value(data: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data


class TrainingEvents(Protocol):
    """Callbacks of a run (rank 0 only); every one is optional in spirit: implement them as no-ops."""

    def started(self, summary: RunSummary) -> None:
        """Before the first step."""

    def step(self, step: int, steps: int, loss: float | None) -> None:
        """After every step (first with ``loss`` None, at the step the run starts from)."""

    def expected(self, seconds_per_step: float, remaining_seconds: float, validations: int) -> None:
        """Once, after the warm-up steps: the measured time per step and the time left for the steps."""

    def preparing(self, done: int, total: int) -> None:
        """Cases prepared into the disk cache so far."""

    def validating(self, done: int, total: int) -> None:
        """Validation cases predicted so far."""

    def stopping(self, signal_name: str, step: int) -> None:
        """A stop was asked for; the run finishes the step after ``step`` and saves."""
