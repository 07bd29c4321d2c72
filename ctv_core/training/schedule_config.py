"""The ``schedule`` section of the training configuration: when to log, validate and checkpoint.

Kept apart from :mod:`.config` to keep both small; imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..strict_config import is_finite_number, is_int


@dataclass(frozen=True)
class ScheduleConfig:
    """When things happen, in optimiser steps.

    Attributes
    ----------
    checkpoint_every
        Write ``RUN_DIR/checkpoints/last.pt`` every this many steps (and at the end).
    checkpoint_minutes
        Also write it when this many minutes have passed since the last one (0: by steps
        only), so a slow run never has much to lose; a stop by Ctrl+C or SIGTERM writes it too.
    validate_every
        Validate on the held-out fold every this many steps (and at the end).
    log_every
        Log the training loss every this many steps.
    sample_images
        Validation cases whose axial slice (image, prediction, target) goes to TensorBoard.
    """

    checkpoint_every: int = 500
    checkpoint_minutes: float = 10.0
    validate_every: int = 1000
    log_every: int = 50
    sample_images: int = 2

    def __post_init__(self) -> None:
        if not is_finite_number(self.checkpoint_minutes) or self.checkpoint_minutes < 0:
            raise ValueError(f"schedule.checkpoint_minutes must be a number >= 0, not {self.checkpoint_minutes!r}")
        for name in ("checkpoint_every", "validate_every", "log_every"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"schedule.{name} must be an integer >= 1, not {value!r}")
        if not is_int(self.sample_images) or self.sample_images < 0:
            raise ValueError(f"schedule.sample_images must be an integer >= 0, not {self.sample_images!r}")
