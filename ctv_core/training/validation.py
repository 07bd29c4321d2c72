"""Validation during training: whole held-out cases predicted as ``CTVPredictor`` predicts, scored by Dice."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..evaluation.metrics import dice
from ..inference.sliding_window import sliding_window_probability
from ..model.engines import TorchEngine
from ..model.unet3d import UNet3D
from .cases import CaseStore
from .config import TrainingConfig


def overlay(image: np.ndarray, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """An axial slice as RGB float [0, 1] ``[y, x, 3]``: grey image, prediction in red, target in green."""
    grey = (np.clip(image, -1, 1) + 1) / 2
    rgb = np.stack([grey, grey, grey], axis=-1) * 0.7
    rgb[..., 0] += 0.3 * prediction
    rgb[..., 1] += 0.3 * target
    return np.clip(rgb, 0, 1).astype(np.float32)


def validate(network: nn.Module, store: CaseStore, case_ids: list[str], config: TrainingConfig,
             device: torch.device, progress: Callable[[int, int], None] | None = None
             ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Dice per validation case on the model grid, and one RGB sample slice per case.

    Whole-case prediction as in :class:`~ctv_core.inference.predictor.CTVPredictor` (batch norms
    folded, sliding window with the package's inference settings), thresholded on the model
    grid and compared with the resampled mask by :func:`ctv_core.evaluation.metrics.dice`.
    ``network`` is left as it was (a copy is prepared). ``progress(done, total)`` is called
    after each case.
    """
    clean = UNet3D(config.network)
    clean.load_state_dict({k: v.detach().cpu() for k, v in network.state_dict().items()})
    engine = TorchEngine(clean, str(device))
    inference = config.settings.inference
    scores: dict[str, float] = {}
    samples: dict[str, np.ndarray] = {}
    for n, case_id in enumerate(case_ids):
        case = store.get(case_id)
        probability = sliding_window_probability(case.image, engine.logits, inference.patch_zyx,
                                                 overlap=inference.overlap)
        prediction = probability >= inference.threshold
        scores[case_id] = dice(prediction, case.mask)
        if n < config.schedule.sample_images:
            area = case.mask.sum(axis=(1, 2))
            z = int(np.argmax(area)) if area.any() else case.mask.shape[0] // 2
            samples[case_id] = overlay(case.image[z], prediction[z], case.mask[z])
        if progress is not None:
            progress(n + 1, len(case_ids))
    return scores, samples
