"""One run of the prediction process: its folder, its request, the conversation and how it ended.

The conversation is ctv_core's prediction-process protocol
(``ctv_core.inference.process_protocol``, the services' too): ``start`` writes the request, launches
the worker (which imports torch and loads the model meanwhile), writes the CT image and says
``go``; ``poll`` reads what the worker printed since the last call with the protocol's reader into
progress and, once it has ended, into the protocol's ending: done (the mask is read back), failed
(a message for the user) or cancelled. ``cancel`` sends ``cancel`` (the worker stops between
windows); if it has not stopped after ``gracePeriod`` seconds it is terminated, then killed.
The job's folder (CT image, mask, request, result) is removed when the job is closed.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import SimpleITK as sitk
from ctv_core.errors import PredictionProtocolError
from ctv_core.inference.process_protocol import CANCEL, CANCEL_GRACE_S, GO, EventReader, command_line, conclude
from ctv_core.inference.worker import uncertainty_file

from .PredictionProcess import ProcessRunner, workerCommand

logger = logging.getLogger(__name__)

#: (start %, end %) of each worker stage on the Apply progress bar; the rest is ours.
STAGES = {"ready": (5, 15), "preprocessing": (15, 20), "network": (20, 90), "resampling to the CT": (90, 93),
          "post-processing": (93, 97), "checking the anatomy": (97, 97), "done": (97, 97)}
STAGE_TEXT = {"preprocessing": "Preparing the CT for the network", "network": "Running the network",
              "resampling to the CT": "Resampling the CTV onto the CT", "post-processing": "Cleaning up the CTV",
              "checking the anatomy": "Checking the CTV's anatomy",
              "done": "Reading the CTV"}
#: Where the details of a failed run are, for the user.
DETAILS = "Slicer's log (Help > Report a bug shows it)"


@dataclass(frozen=True)
class PredictionOptions:
    """What the user chose for a run.

    Attributes
    ----------
    model
        A model package folder, or None for the bundled demo model.
    device
        "auto" (GPU when there is one), "cpu" or "cuda".
    engine
        "auto" (OpenVINO on the CPU, PyTorch on a GPU), "openvino" or "torch".
    passes
        Recurrent refinement passes (1-8), None for the model's own.
    testTimeFlips
        Average with the left-right mirrored prediction; None for the model's own setting.
    postprocessing
        Keep the model's post-processing (largest components, holes filled); False keeps every
        voxel above the threshold.
    uncertainty
        Also compute the uncertainty map (written beside the mask) and its figures.
    """

    model: str | None = None
    device: str = "auto"
    engine: str = "auto"
    passes: int | None = None
    testTimeFlips: bool | None = None
    postprocessing: bool = True
    uncertainty: bool = True

    def request(self, folder: Path) -> dict[str, Any]:
        """The worker's request for a run whose files live in ``folder``."""
        return {"protocol": 1, "task": "predict", "image": str(folder / "ct.nrrd"), "mask": str(folder / "ctv.nrrd"),
                "result": str(folder / "result.json"), "model": self.model or None, "device": self.device,
                "engine": self.engine,
                "passes": self.passes, "test_time_flips": self.testTimeFlips, "postprocessing": self.postprocessing,
                "uncertainty": self.uncertainty}


@dataclass
class Progress:
    """Where a run is: ``percent`` of the whole Apply and a line for the status bar."""

    percent: int
    message: str


@dataclass
class Outcome:
    """How a run ended: ``state`` is "done", "failed" or "cancelled"."""

    state: str
    message: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    mask: sitk.Image | None = None
    uncertainty: sitk.Image | None = None


class PredictionJob:
    """One prediction in the worker process (see the module docstring).

    Parameters
    ----------
    runner
        The process runner (a fresh one per job).
    options
        The user's choices.
    temporaryDirectory
        Where the job's folder is made (Slicer's temporary folder in the application).
    python
        The interpreter that runs the worker (default: :func:`.PredictionProcess.pythonExecutable`).
    gracePeriod
        Seconds a cancelled worker gets to stop by itself before it is terminated (and as many
        again before it is killed).
    """

    def __init__(self, runner: ProcessRunner, options: PredictionOptions, temporaryDirectory: str | None = None,
                 python: str | None = None, gracePeriod: float = CANCEL_GRACE_S):
        self.runner = runner
        self.options = options
        self.gracePeriod = gracePeriod
        self.folder = Path(tempfile.mkdtemp(prefix="CTVDelineation-", dir=temporaryDirectory))
        self._python = python
        self._reader = EventReader()
        self._refused: str | None = None
        self._cancelRequested: float | None = None
        self._terminated = False
        self.ready: dict[str, Any] = {}
        self.outcome: Outcome | None = None

    def start(self, image: sitk.Image) -> None:
        """Launch the worker and hand it ``image`` (HU, LPS); returns as soon as the image is written."""
        request = self.folder / "request.json"
        request.write_text(json.dumps(self.options.request(self.folder), indent=2), encoding="utf-8")
        self.runner.start(workerCommand(request, self._python))
        try:
            sitk.WriteImage(image, str(self.folder / "ct.nrrd"), useCompression=False)
        except BaseException:
            self.runner.send(command_line(CANCEL))
            raise
        self.runner.send(command_line(GO))

    @property
    def events(self) -> list[dict[str, Any]]:
        """The protocol events read so far, in order (the last is the final one once the worker has ended)."""
        return list(self._reader.events)

    @property
    def cancelRequested(self) -> bool:
        return self._cancelRequested is not None

    def cancel(self) -> None:
        """Ask the worker to stop; nothing of this run reaches the scene."""
        if self.outcome is None and self._cancelRequested is None:
            self._cancelRequested = time.monotonic()
            self.runner.send(command_line(CANCEL))

    def poll(self) -> list[Progress]:
        """Progress since the last call; sets :attr:`outcome` once the worker has ended."""
        updates = []
        for line in self.runner.readLines():
            event = self._read(line)
            if event is None:
                continue
            if event["event"] == "ready":
                self.ready = event
                updates.append(Progress(STAGES["ready"][1], f"Model loaded ({event.get('device', '?')})"))
            elif event["event"] == "progress":
                updates.append(self._progress(event))
        if self.outcome is None:
            self._escalateCancel()
            code = self.runner.exitCode()
            if code is not None:
                self.outcome = self._outcome(code)
        return updates

    def _read(self, line: str) -> dict[str, Any] | None:
        """The event on ``line`` (None for none); a breach of the protocol stops the worker and fails the run."""
        if self._refused is not None:
            return None
        try:
            return self._reader.read(line)
        except PredictionProtocolError as exc:
            logger.error("%s", exc)
            self._refused = str(exc)
            self.runner.kill()
            return None

    @staticmethod
    def _progress(event: dict[str, Any]) -> Progress:
        stage = event["stage"]
        low, high = STAGES.get(stage, (20, 90))
        fraction = float(event["fraction"])
        return Progress(int(round(low + (high - low) * fraction)), STAGE_TEXT.get(stage, stage.capitalize()))

    def _escalateCancel(self) -> None:
        if self._cancelRequested is None:
            return
        waited = time.monotonic() - self._cancelRequested
        if waited > 2 * self.gracePeriod:
            self.runner.kill()
        elif waited > self.gracePeriod and not self._terminated:
            self._terminated = True
            self.runner.terminate()

    def _outcome(self, code: int) -> Outcome:
        if self._cancelRequested is not None:
            return Outcome("cancelled", "Prediction cancelled; the scene was not changed.")
        if self._refused is not None:
            return Outcome("failed", self._refused)
        final = self._reader.final
        ending = conclude(final, code, self.runner.errorOutput(), details=DETAILS)
        if ending.state == "done":
            return self._readResult(ending.report)
        if final is None or final["event"] != "error":
            logger.warning("prediction process ended with status %s; its last messages:\n%s", code,
                           self.runner.errorOutput())
        return Outcome(ending.state, ending.message)

    def _readResult(self, announced: dict[str, Any]) -> Outcome:
        try:
            result = json.loads((self.folder / "result.json").read_text(encoding="utf-8"))
            mask = sitk.ReadImage(str(self.folder / "ctv.nrrd"))
        except (OSError, ValueError, RuntimeError) as exc:
            return Outcome("failed", f"The prediction finished but its result cannot be read ({exc}). Check that the "
                                     f"temporary folder {self.folder.parent} has free space, then try again.")
        if announced and announced.get("model") != result.get("model"):
            return Outcome("failed", "The prediction's result file does not match its report; try again.")
        return Outcome("done", result=result, mask=mask, uncertainty=self._readUncertainty())

    def _readUncertainty(self) -> sitk.Image | None:
        """The uncertainty map the worker wrote beside the mask; None when it was not asked for or not written
        (the CTV is still good: the logic says the map is missing)."""
        path = uncertainty_file(self.options.request(self.folder))
        if not self.options.uncertainty or not path.is_file():
            return None
        try:
            return sitk.ReadImage(str(path))
        except RuntimeError as exc:
            logger.warning("the uncertainty map %s cannot be read: %s", path, exc)
            return None

    def close(self) -> None:
        """Stop the worker if it still runs and remove the job's folder."""
        if self.runner.exitCode() is None:
            self.runner.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


class DeviceProbe:
    """A short run of the worker that reports torch's version, CUDA and the GPUs (``poll`` until it
    answers: a dict with ``event`` "probe", or "error" and a ``message``)."""

    def __init__(self, runner: ProcessRunner, temporaryDirectory: str | None = None, python: str | None = None):
        self.runner = runner
        self.folder = Path(tempfile.mkdtemp(prefix="CTVDelineation-probe-", dir=temporaryDirectory))
        request = self.folder / "probe.json"
        request.write_text(json.dumps({"protocol": 1, "task": "probe"}), encoding="utf-8")
        self.answer: dict[str, Any] | None = None
        self._reader = EventReader()
        try:
            runner.start(workerCommand(request, python))
        except OSError as exc:
            self.answer = {"event": "error", "message": f"The prediction process cannot be started ({exc})."}

    def poll(self) -> dict[str, Any] | None:
        """The answer once there is one, else None."""
        if self.answer is not None:
            return self.answer
        for line in self.runner.readLines():
            try:
                event = self._reader.read(line)
            except PredictionProtocolError as exc:
                event = {"event": "error", "message": str(exc)}
            if event is not None and event["event"] in ("probe", "error"):
                self.answer = event
        if self.answer is None and self.runner.exitCode() is not None:
            self.answer = {"event": "error", "message": "The prediction process ended without answering; the "
                                                        "details are in Slicer's log."}
            logger.warning("device probe failed:\n%s", self.runner.errorOutput())
        return self.answer

    def close(self) -> None:
        if self.runner.exitCode() is None:
            self.runner.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
