"""The page's behaviour: the state the page shows (``ctv_*``) and what its buttons trigger, over one scene.

Everything here runs in the server's event loop (MRML is not thread-safe); reading a CT from disk
runs in a worker thread meanwhile. Once a second the case list and the open case are read from
the store, so the page follows the predictions (progress, done, failed) whatever started them:
the page, a script through the API, or a DICOM node on the same data folder. When the open
case's first result arrives it is shown at once; later versions wait for the user (the CTV on
screen never changes under a clinician's hands). Every browser connected sees the same state.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ...dicom.series import load_ct_series
from ...errors import CTVError, describe_os_error
from .access import PageUsers
from .autoplay import SPEEDS, Autoplay
from .desk import ReviewDesk
from .scene import WINDOWS, CaseScene

logger = logging.getLogger(__name__)

REFRESH_S = 1.0
#: Cases the page lists (the newest; the API lists them all).
PAGE_CASES = 300
#: Seconds between a CTV shown in the slice views and its 3D surface (computing it holds the event loop).
SURFACE_AFTER_S = 1.0
DEFAULTS = {"ctv_cases": [], "ctv_open_id": "", "ctv_open": None, "ctv_shown": "", "ctv_shown_version": 0,
            "ctv_warnings": [], "ctv_status": "", "ctv_position": "", "ctv_playing": False, "ctv_speed": 1.0,
            "ctv_window": "soft tissue", "ctv_upload_progress": -1, "ctv_upload_message": "",
            "ctv_series_choice": None, "ctv_confirm_open": None, "ctv_author": "", "ctv_note": "",
            "ctv_rerun_model": "", "ctv_uncertainty": True, "ctv_uncertainty_available": False,
            "ctv_least_certain_first": False}
#: The page's on/off switches: state name -> what it switches, for the message refusing a value that is not a bool.
SWITCHES = {"ctv_uncertainty": "the uncertainty overlay", "ctv_least_certain_first": "least certain slices first"}
#: The page's lists: state name -> (what it sets, the values it offers), for the message refusing any other value.
CHOICES = {"ctv_window": ("the window", tuple(WINDOWS)), "ctv_speed": ("the autoplay speed", SPEEDS)}


class ReviewApp:
    """The station's page logic (see the module docstring).

    Parameters
    ----------
    server
        The trame server.
    desk
        The station's cases.
    scene, autoplay
        The open case's scene and its autoplay.
    pages
        The identities of the pages connected now: the audit log records them for what is done on
        the page (every connected browser shares its state and buttons).
    """

    def __init__(self, server, desk: ReviewDesk, scene: CaseScene, pages: PageUsers | None = None) -> None:
        self.server, self.state, self.desk, self.scene = server, server.state, desk, scene
        self.pages = pages if pages is not None else PageUsers()
        self.autoplay = Autoplay(scene, self._on_position)
        self.state.update(DEFAULTS)
        self.state.ctv_models = list(desk.models)
        self.state.ctv_rerun_model = next(iter(desk.models))
        for name, handler in {"ctv_open_case": self.open_case, "ctv_open_confirmed": self.open_confirmed,
                              "ctv_uploaded": self.uploaded, "ctv_show_version": self.show_version,
                              "ctv_cancel": self.cancel, "ctv_rerun": self.rerun, "ctv_approve": self.approve,
                              "ctv_save": self.save, "ctv_step": self.step, "ctv_play": self.play}.items():
            server.trigger(name)(handler)
        self.state.change("ctv_window")(lambda ctv_window, **_: self._choose(
            "ctv_window", ctv_window, scene.set_window, lambda: scene.window))
        self.state.change("ctv_speed")(lambda ctv_speed, **_: self._choose(
            "ctv_speed", ctv_speed, self.autoplay.set_speed, lambda: self.autoplay.speed))
        self.state.change("ctv_uncertainty")(lambda ctv_uncertainty, **_: self._switch(
            "ctv_uncertainty", ctv_uncertainty, scene.set_uncertainty_visible, lambda: scene.uncertainty_visible))
        self.state.change("ctv_least_certain_first")(lambda ctv_least_certain_first, **_: self._switch(
            "ctv_least_certain_first", ctv_least_certain_first, self.autoplay.set_least_certain_first,
            lambda: self.autoplay.least_certain_first))
        self._refresher: asyncio.Task | None = None

    def start(self) -> None:
        """Start following the store (call from the running event loop)."""
        loop = asyncio.get_event_loop()
        self._wakeup = asyncio.Event()
        self.desk.on_version = lambda *_: loop.call_soon_threadsafe(self._wakeup.set)
        self._refresher = loop.create_task(self._follow())

    # --- cases ------------------------------------------------------------------------------------

    async def uploaded(self, case_id: str, note: str = "") -> None:
        """The page's upload became case ``case_id``: open it (its CT is shown while the prediction runs)."""
        await self.open_case(case_id)
        if note:
            self._say(note)

    async def open_case(self, case_id: str, version: int | None = None, confirmed: bool = False) -> None:
        """Show a case (its latest version, or ``version``); asks first when the CTV on screen has an unsaved edit."""
        open_case = self.scene.open
        if not confirmed and open_case is not None and self.scene.has_unsaved_edit():
            self.state.ctv_confirm_open = {"case": case_id, "version": version}
            return
        case = self.desk.case(case_id)
        if case is None:
            return self._say(f"No case {case_id}.")
        if open_case is None or open_case.case_id != case_id or version is None:
            self.autoplay.pause()
            self._set_playing()
            ct = self.desk.take_loaded_ct(case_id)
            if ct is None:
                self._say("Loading the CT...")
                try:
                    ct = await asyncio.get_running_loop().run_in_executor(
                        None, load_ct_series, self.desk.store.ct_dir(case_id), case["series_uid"] or None)
                except (CTVError, OSError) as exc:
                    return self._say(f"The CT of case {case_id} cannot be shown: {exc}")
            self.scene.show_ct(case_id, ct)
            self.autoplay.forget()
            self.state.update({"ctv_open_id": case_id, "ctv_shown": "No result yet: the CTV appears when the "
                               "prediction is done.", "ctv_shown_version": 0, "ctv_warnings": [],
                               "ctv_uncertainty_available": False,
                               "ctv_position": "", "ctv_window": "soft tissue"})
        self._update_open(case)
        numbers = [v["number"] for v in case["versions"]]
        if numbers:
            await self.show_version(version if version in numbers else numbers[-1], confirmed=True)
        self._say("")

    async def open_confirmed(self, target: dict[str, Any]) -> None:
        await self.open_case(target["case"], target.get("version"), confirmed=True)

    async def show_version(self, number: int, confirmed: bool = False) -> None:
        """Put a version of the open case into the CTV segment (asks first over an unsaved edit)."""
        case = self.scene.open
        if case is None:
            return
        if not confirmed and self.scene.has_unsaved_edit():
            self.state.ctv_confirm_open = {"case": case.case_id, "version": number}
            return
        info = self.desk.case(case.case_id)
        version = next((v for v in info["versions"] if v["number"] == number), None)
        if version is None:
            return self._say(f"Case {case.case_id} has no version {number}.")
        try:
            self.scene.show_version(number, version["kind"], self.desk.store.version_dir(case.case_id, number),
                                    self.desk.report(case.case_id, number))
        except (CTVError, OSError) as exc:
            return self._say(f"Version {number} cannot be shown: {exc}")
        self.autoplay.forget()
        who = version["author"] or version["model"] or "the model"
        self.state.update({"ctv_shown_version": number, "ctv_warnings": case.warnings,
                           "ctv_uncertainty_available": case.uncertainty is not None,
                           "ctv_shown": f"Shown: version {number} ({version['kind']} by {who}, {version['created']})"})
        await asyncio.sleep(SURFACE_AFTER_S)  # the slice views go out before the 3D surface is computed
        with self.state:
            self.scene.editor_logic.data.segment_display.show_3d = True
        self.scene.reset_3d()

    # --- actions --------------------------------------------------------------------------------

    def cancel(self) -> None:
        if self.scene.open is not None and not self.desk.cancel(self.scene.open.case_id, self._who()):
            self._say("Nothing to cancel: the prediction has ended.")

    def rerun(self) -> None:
        if self.scene.open is None:
            return
        job = self.desk.rerun(self.scene.open.case_id, self.state.ctv_rerun_model, self._who())
        self._say(f"Version {job.version} with {self.state.ctv_rerun_model} is queued.")

    async def approve(self, number: int) -> None:
        if self.scene.open is None:
            return
        self._say(f"Approving version {number} (measuring what was changed in the AI contour)...")
        try:  # reads the CT and both contours: off the event loop
            released = await asyncio.get_running_loop().run_in_executor(
                None, self.desk.approve, self.scene.open.case_id, int(number), self.state.ctv_author, self._who())
        except CTVError as exc:
            return self._say(f"Not approved: {exc} (the name field is in the Edit tab)")
        self._say(f"Version {number} approved" + (f"; sent to {', '.join(sorted({d for _, d in released}))}."
                                                  if released else "."))

    async def save(self) -> None:
        from .versions import save_edit

        if self.scene.open is None:
            return
        self._say("Saving...")
        await asyncio.sleep(0)
        try:
            saved = save_edit(self.desk, self.scene, self.state.ctv_author, self.state.ctv_note, self._who())
        except CTVError as exc:
            return self._say(f"Not saved: {exc}")
        except OSError as exc:
            return self._say(f"Not saved: {describe_os_error(exc, 'writing the new version')}")
        self.state.ctv_note = ""
        editor = self.scene.app.segmentation_editor
        effect = editor.active_effect_name
        await self.show_version(saved.version, confirmed=True)
        if effect:
            editor.set_active_effect_name(effect)  # go on editing with the same tool
        self._say(f"Saved as version {saved.version}.")

    def step(self, direction: int) -> None:
        self.autoplay.pause()
        self.autoplay.step(int(direction))
        self._set_playing()

    def play(self) -> None:
        if self.autoplay.playing:
            self.autoplay.pause()
        else:
            self.autoplay.play()
        self._set_playing()

    # --- following the store ---------------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            try:
                await self._refresh()
            except Exception:  # noqa: BLE001 - the page keeps following; the log has the reason
                logger.exception("refreshing the page failed")
            try:  # once a second, or at once when a prediction has stored its version
                await asyncio.wait_for(self._wakeup.wait(), REFRESH_S)
            except asyncio.TimeoutError:
                pass
            self._wakeup.clear()

    async def _refresh(self) -> None:
        cases = self.desk.cases()[:PAGE_CASES]
        with self.state:
            if cases != self.state.ctv_cases:
                self.state.ctv_cases = cases
            open_case = self.scene.open
            if open_case is None:
                return
            info = self.desk.case(open_case.case_id)
            self._update_open(info)
        if info["versions"] and open_case.version is None:  # the first result of the case on screen
            with self.state:
                await self.show_version(info["versions"][-1]["number"], confirmed=True)

    def _update_open(self, info: dict[str, Any]) -> None:
        if info != self.state.ctv_open:
            self.state.ctv_open = info

    def _on_position(self, text: str) -> None:
        with self.state:  # also from the autoplay's own task, outside any trigger
            self.state.ctv_position = text

    def _switch(self, name: str, value: Any, apply, current) -> None:
        """An on/off switch of the page changed: ``apply(value)`` for a bool; anything else (the page never sends
        it; a script on a connected page might) is refused and the switch set back to ``current()``."""
        if isinstance(value, bool):
            apply(value)
            return
        logger.warning("refused %s = %.80r from %s", name, value, self._who())
        self.state[name] = current()
        self._say(f"Refused a value for {SWITCHES[name]} that is not on or off.")

    def _choose(self, name: str, value: Any, apply, current) -> None:
        """A list of the page changed: ``apply(value)`` for one of the values it offers (:data:`CHOICES`); anything
        else (a script on a connected page might send it) is refused and the list set back to ``current()``."""
        what, offered = CHOICES[name]
        if not isinstance(value, bool) and isinstance(value, (str, int, float)) and value in offered:
            apply(value)
            return
        logger.warning("refused %s = %.80r from %s", name, value, self._who())
        self.state[name] = current()
        self._say(f"Refused a value for {what} that the page does not offer.")

    def _set_playing(self) -> None:
        self.state.ctv_playing = self.autoplay.playing

    def _who(self) -> str:
        return f"the page ({self.pages.describe()})"

    def _say(self, text: str) -> None:
        self.state.ctv_status = text
