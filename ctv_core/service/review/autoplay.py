"""Autoplay through the CTV's axial slices, as the thesis' web system reviewed its contours (250 ms a slice).

The slices come from the stepping the Slicer module uses too (:mod:`ctv_core.scene.review_steps`:
the offsets of the CT planes holding the segment, edits included, along the axial view's
normal); this module moves trame-slicer's axial view along them, one step at a time or on a timer in the
server's event loop, at 0.5x to 4x the original pace. The list is made again when the segment
changes. With :attr:`Autoplay.least_certain_first` the version's least certain CT slices (its
``report.json`` ``uncertainty``) come first, then the CTV's other slices.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .scene import CaseScene

logger = logging.getLogger(__name__)

SPEEDS = (0.5, 1.0, 2.0, 4.0)
#: Seconds after a single step before the other slice views render again.
RELEASE_AFTER_S = 1.0


class Autoplay:
    """Stepping and playing the open case's CTV slices in the axial view.

    Parameters
    ----------
    scene
        The station's scene (the open case's CTV segment and the axial view).
    on_position
        Told the position ("CTV slice 3 of 41") after every step.
    """

    def __init__(self, scene: CaseScene, on_position: Callable[[str], None]) -> None:
        from ...scene.review_steps import AUTOPLAY_INTERVAL_MS

        self.scene = scene
        self.on_position = on_position
        self.interval_s = AUTOPLAY_INTERVAL_MS / 1000.0
        self.speed = 1.0
        #: Visit the version's least certain CT slices first, then the CTV's others (off: the CTV's slices in
        #: anatomical order, as the thesis' system reviewed them).
        self.least_certain_first = False
        self._player = None
        self._task: asyncio.Task | None = None
        self._held: list = []
        self._release: asyncio.TimerHandle | None = None
        self.step_seconds: list[float] = []  # time each step took on the server (step and view update)
        scene.app.segmentation_editor.segmentation_modified.connect(self.forget)

    @property
    def playing(self) -> bool:
        return self._task is not None and not self._task.done()

    def forget(self, *_args) -> None:
        """The segment changed (or another case opened): make the slice list again at the next step."""
        self._player = None

    def step(self, direction: int = 1) -> float | None:
        """Move the axial view ``direction`` CTV slices on (round at either end); the new offset, or None."""
        started = time.perf_counter()
        if not self.playing:
            self._hold_other_views()
            self._release = asyncio.get_event_loop().call_later(RELEASE_AFTER_S, self._release_other_views)
        player = self._ensure_player()
        if player is None:
            self.on_position("No CTV to step through")
            return None
        offset = player.step(direction)
        if offset is not None:
            self.scene.axial_view().set_slice_value(offset)
        self.on_position(player.position())
        self.step_seconds.append(time.perf_counter() - started)
        return offset

    def play(self) -> None:
        if not self.playing:
            self._hold_other_views()
            self._task = asyncio.get_event_loop().create_task(self._run())

    def pause(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
            self._release_other_views()

    def _hold_other_views(self) -> None:
        """While stepping, the other slice views do not render: every axial step asks them to (for slice
        intersections they do not show), which would triple the work of each frame. They render once when
        the stepping stops (:data:`RELEASE_AFTER_S` after a single step)."""
        if self._release is not None:
            self._release.cancel()
            self._release = None
        if not self._held:
            axial = self.scene.axial_view()
            self._held = [v for v in self.scene.app.view_manager.get_slice_views() if v is not axial]
            for view in self._held:
                view.set_render_blocked(True)

    def _release_other_views(self) -> None:
        self._release = None
        held, self._held = self._held, []
        for view in held:
            view.set_render_blocked(False)  # and render what changed meanwhile (an edit shows there too)

    def set_least_certain_first(self, on: bool) -> None:
        """Switch the order of the slices (see :attr:`least_certain_first`); the list is made again at the next step,
        from its start, and the position line says which order is on."""
        self.least_certain_first = bool(on)
        self.forget()
        self.on_position("Next: the least certain slices first" if on else "Next: the CTV's slices in order")

    def set_speed(self, speed: float) -> None:
        self.speed = min(SPEEDS, key=lambda s: abs(s - float(speed)))

    async def _run(self) -> None:
        """Step on a fixed beat (the time a frame takes is not added to the interval)."""
        beat = time.monotonic()
        try:
            while True:
                if self.step(1) is None:
                    return
                beat = max(beat + self.interval_s / self.speed, time.monotonic())
                await asyncio.sleep(beat - time.monotonic())
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - autoplay stops; the page keeps working and the log has the reason
            logger.exception("autoplay stopped")
        finally:
            if self._task is not None and self._task is asyncio.current_task():  # ended by itself, not paused
                self._task = None
                self._release_other_views()

    def _ensure_player(self):
        from ...scene.review_steps import ReviewPlayer

        case = self.scene.open
        if case is None or case.segmentation is None:
            return None
        if self._player is None:
            view = self.scene.axial_view()
            slice_node = view.get_view_node()
            self._player = ReviewPlayer.forSegment(case.segmentation, case.segment_id, case.volume,
                                                   slice_node.GetSliceToRAS(), view.get_slice_value())
            if self.least_certain_first and case.least_certain:
                from ...scene.uncertainty import leastCertainFirst

                self._player = ReviewPlayer(leastCertainFirst(self._player.offsets, case.ct.grid, case.least_certain,
                                                              slice_node.GetSliceToRAS()))
        return self._player if len(self._player) else None
