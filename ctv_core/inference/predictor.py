"""``CTVPredictor``: a CT image in, the CTV mask on that CT's grid out.

The stages, each timed: preprocessing (resample to the model grid, crop to the body,
normalise), the network (sliding window where the volume exceeds the patch; optional
left-right flip averaging), resampling the probability back onto the CT grid and
thresholding it there, post-processing, the anatomy check of the result (no truth needed:
:mod:`.plausibility`) and, unless turned off, the uncertainty map and slice scores from the same
probability (:mod:`.uncertainty`, no extra network pass). A progress callback gets ``(stage, fraction)``; a
cancel callback is polled between windows and stages and stops the run with
``PredictionCancelled``. The network runs on an engine (:mod:`ctv_core.model.engines`):
OpenVINO on the CPU, where nothing here imports torch, or PyTorch (CUDA, with autocast).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import PredictionCancelled
from ..geometry import Grid
from ..heap import return_free_memory
from ..model.engines import open_engine
from ..model.package import ModelPackage, load_model_package
from .plausibility import anatomy_check, volume_warnings
from .postprocessing import postprocess
from .preprocessing import prepare_input, probability_to_mask
from .sliding_window import sliding_window_probability
from .uncertainty import Uncertainty, uncertainty_of

Progress = Callable[[str, float], None]
Cancelled = Callable[[], bool]


@dataclass
class Prediction:
    """A prediction and how it was made.

    Attributes
    ----------
    mask
        uint8 CTV mask (1 inside) on the input image's grid.
    seconds
        Wall time per stage: preprocessing, network, inverse, postprocessing.
    volume_cc
        CTV volume, cc.
    device
        The device used ("cpu" or "cuda").
    engine
        The engine that ran the network ("openvino" or "torch").
    warnings
        What the reviewer should know about the result: an empty CTV or an unusual volume
        (:func:`~.plausibility.volume_warnings`), and a CTV not shaped like one
        (:func:`~.plausibility.anatomy_check`).
    anatomy
        The figures of the anatomy check (parts, bone around the CTV, left and right volumes).
    uncertainty
        The voxel uncertainty map on the input image's grid and the per-slice scores
        (:class:`~.uncertainty.Uncertainty`); None when not asked for.
    """

    mask: sitk.Image
    seconds: dict[str, float] = field(default_factory=dict)
    volume_cc: float = 0.0
    device: str = "cpu"
    engine: str = "openvino"
    warnings: list[str] = field(default_factory=list)
    anatomy: dict = field(default_factory=dict)
    uncertainty: Uncertainty | None = None


class CTVPredictor:
    """CTV auto-delineation with a model package.

    Parameters
    ----------
    model
        A model package folder, a loaded ``ModelPackage``, or None for the bundled model.
    device
        "auto" (CUDA when available, else CPU), "cpu" or "cuda".
    engine
        "auto" (OpenVINO on the CPU when the package has a graph, else PyTorch), "openvino" or
        "torch" (:func:`~ctv_core.model.engines.open_engine`).
    """

    def __init__(self, model: str | Path | ModelPackage | None = None, device: str = "auto", engine: str = "auto"):
        self.package = model if isinstance(model, ModelPackage) else load_model_package(model)
        self.engine = open_engine(self.package, engine, device)
        self.device = self.engine.device

    def predict(self, image: sitk.Image, progress: Progress | None = None,
                cancelled: Cancelled | None = None) -> sitk.Image:
        """The CTV mask (uint8, 1 inside) on ``image``'s grid; ``image`` in HU, LPS geometry."""
        return self.run(image, progress=progress, cancelled=cancelled).mask

    def run(self, image: sitk.Image, progress: Progress | None = None,
            cancelled: Cancelled | None = None, uncertainty: bool = True) -> Prediction:
        """``predict`` with per-stage timings, the CTV volume, the device and (``uncertainty``) the uncertainty."""
        settings = self.package.settings
        report = progress or (lambda stage, fraction: None)
        seconds: dict[str, float] = {}
        ct_grid = Grid.of_image(image)

        start = time.perf_counter()
        report("preprocessing", 0.0)
        model_input = prepare_input(image, settings.preprocessing, self.package.divisor)
        seconds["preprocessing"] = time.perf_counter() - start
        return_free_memory()  # what resampling freed, before the network stage's peak
        _stop_if(cancelled)

        start = time.perf_counter()
        report("network", 0.0)  # the stage starts now, also when the volume is one window (reported only when done)
        probability = self._probability(model_input.array, settings.inference, report, cancelled)
        self.engine.release_memory()  # the rest of the run needs the memory more than the compiled network
        seconds["network"] = time.perf_counter() - start

        start = time.perf_counter()
        report("resampling to the CT", 0.0)
        mask = probability_to_mask(probability, model_input.grid, ct_grid, settings.inference.threshold)
        seconds["inverse"] = time.perf_counter() - start
        _stop_if(cancelled)

        start = time.perf_counter()
        report("post-processing", 0.0)
        voxel_cc = ct_grid.voxel_cc
        mask = postprocess(mask, voxel_cc, settings.postprocessing)
        seconds["postprocessing"] = time.perf_counter() - start

        start = time.perf_counter()
        report("checking the anatomy", 0.0)
        volume_cc = float(mask.sum()) * voxel_cc
        check = anatomy_check(image, mask)
        seconds["anatomy_check"] = time.perf_counter() - start
        measured = None
        if uncertainty:
            measured = uncertainty_of(probability, model_input.grid, ct_grid, mask)
            seconds["uncertainty"] = measured.seconds
        report("done", 1.0)
        warnings = volume_warnings(volume_cc, self.package.training_volumes_cc) + check.warnings
        return Prediction(mask=ct_grid.image(mask), seconds=seconds, volume_cc=volume_cc, device=self.device,
                          engine=self.engine.name,
                          warnings=warnings, anatomy=check.to_dict(), uncertainty=measured)

    def _probability(self, volume: np.ndarray, inference, report: Progress, cancelled: Cancelled | None) -> np.ndarray:
        passes = [volume, volume[:, :, ::-1]] if inference.test_time_flips else [volume]
        total = None
        for n, array in enumerate(passes):
            def step(fraction: float, n: int = n) -> None:
                report("network", (n + fraction) / len(passes))

            prob = sliding_window_probability(
                array, self.engine.logits, inference.patch_zyx, overlap=inference.overlap,
                progress=step, cancelled=cancelled,
            )
            prob = prob[:, :, ::-1] if n == 1 else prob
            total = prob if total is None else total + prob
        return np.ascontiguousarray(total / len(passes), dtype=np.float32)


def _stop_if(cancelled: Cancelled | None) -> None:
    if cancelled is not None and cancelled():
        raise PredictionCancelled("Prediction cancelled; nothing was written.")
