"""Terminal progress bars for the command line: one tqdm bar per stage of a long job."""

from __future__ import annotations

from typing import Any


class StageBars:
    """A callable ``(stage, done, total)`` that shows one bar per stage, opened on the stage's
    first report and closed when the next stage starts or the ``with`` block ends.

    Parameters
    ----------
    quiet
        Show nothing.
    units
        Unit shown per stage name (default "it").
    """

    def __init__(self, quiet: bool = False, units: dict[str, str] | None = None) -> None:
        self.quiet = quiet
        self.units = units or {}
        self._stage: str | None = None
        self._bar: Any = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if stage != self._stage:
            from tqdm import tqdm

            self.close()
            self._stage = stage
            self._bar = tqdm(total=total, desc=stage, unit=self.units.get(stage, "it"), leave=False)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        """Close the open bar, if any."""
        if self._bar is not None:
            self._bar.close()
        self._stage, self._bar = None, None

    def __enter__(self) -> StageBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StepBar:
    """A callable ``(step, total, loss)`` showing training steps in one bar with the last loss.

    The first call (``loss`` None) opens the bar at the step a run starts or resumes from.
    """

    def __init__(self, desc: str = "training") -> None:
        self.desc = desc
        self._bar: Any = None

    def __call__(self, step: int, total: int, loss: float | None) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=step, desc=self.desc, unit="step")
            return
        self._bar.update(step - self._bar.n)
        if loss is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> StepBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
