"""Applying a network to a volume larger than its patch: overlapping windows, Gaussian-weighted.

``sliding_window_probability`` takes any callable mapping a float32 NumPy array
``[1, C, z, y, x]`` to logits of the same spatial size (an engine's ``logits``:
:mod:`ctv_core.model.engines`), so tests can pass simple functions and the predictor passes the
network; nothing here needs torch. Windows overlap by a fraction of the patch; each window's
probabilities are weighted
by a Gaussian that favours its centre (sigma = patch / 8), and the weighted sum is divided by
the summed weights. A volume that fits in one patch is predicted in one call. The engine runs
the window on its device; the sigmoid and the accumulators are NumPy float32 on the CPU.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from ..errors import PredictionCancelled


def window_starts(length: int, patch: int, overlap: float) -> list[int]:
    """Start indices covering ``[0, length)`` with windows of ``patch`` overlapping by ``overlap``."""
    if length <= patch:
        return [0]
    step = max(1, int(patch * (1.0 - overlap)))
    count = int(np.ceil((length - patch) / step)) + 1
    return sorted({int(round(v)) for v in np.linspace(0, length - patch, count)})


def gaussian_weights(patch: tuple[int, int, int], sigma_fraction: float = 0.125) -> np.ndarray:
    """Centre-weighted importance map ``[z, y, x]``, maximum 1, never below 1e-3."""
    axes = []
    for n in patch:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2
        axes.append(np.exp(-0.5 * (x / max(n * sigma_fraction, 1e-6)) ** 2))
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return np.maximum(weights / weights.max(), 1e-3).astype(np.float32)


def sliding_window_probability(
    volume: np.ndarray,
    logits_of: Callable[[np.ndarray], np.ndarray],
    patch: tuple[int, int, int],
    *,
    overlap: float = 0.25,
    progress: Callable[[float], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Sigmoid probability ``[z, y, x]`` of ``logits_of`` over ``volume`` (``[C, z, y, x]`` or ``[z, y, x]``).

    ``patch`` must be sizes the network accepts; every dimension of ``volume`` must be either
    at most the patch (then the whole extent is one window: it must itself be acceptable) or
    larger (then windows of the patch size slide along it). ``progress`` gets the fraction
    done; ``cancelled`` is polled before each window and raises ``PredictionCancelled``.
    """
    if volume.ndim == 3:
        volume = volume[None]
    spatial = volume.shape[1:]
    window = tuple(min(p, s) for p, s in zip(patch, spatial))
    starts = [window_starts(s, w, overlap) for s, w in zip(spatial, window)]
    positions = list(itertools.product(*starts))
    if len(positions) == 1:
        _check(cancelled)
        out = _probability(volume, logits_of)
        if progress is not None:
            progress(1.0)
        return out
    weights = gaussian_weights(window)
    total = np.zeros(spatial, dtype=np.float32)
    norm = np.zeros(spatial, dtype=np.float32)
    for n, (z, y, x) in enumerate(positions):
        _check(cancelled)
        region = (slice(z, z + window[0]), slice(y, y + window[1]), slice(x, x + window[2]))
        prob = _probability(volume[(slice(None), *region)], logits_of)
        total[region] += prob * weights
        norm[region] += weights
        if progress is not None:
            progress((n + 1) / len(positions))
    return total / norm


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function as float32, ``(1 + tanh(x / 2)) / 2``: no overflow for any logit, exactly 0.5 at 0."""
    out = np.multiply(logits, 0.5, dtype=np.float32)
    np.tanh(out, out=out)
    out += 1.0
    out *= 0.5
    return out


def _probability(volume: np.ndarray, logits_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    logits = logits_of(np.ascontiguousarray(volume, dtype=np.float32)[None])
    return sigmoid(np.asarray(logits, dtype=np.float32)[0, 0])


def _check(cancelled: Callable[[], bool] | None) -> None:
    if cancelled is not None and cancelled():
        raise PredictionCancelled("Prediction cancelled; nothing was written.")
