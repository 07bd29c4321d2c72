"""Appearance randomisation: training images synthesised from tissue fractions, in the spirit of SynthSeg.

SynthSeg (Billot et al., Medical Image Analysis 2023) trains segmentation networks on images
drawn from label maps with random intensities, so that they learn shapes rather than one
scanner's look. Here the label map is the case's tissue label map brought onto the model grid as
*fractions* (:func:`ctv_core.training.cases.tissue_fractions`: how much of each model voxel each
tissue class fills, averaged exactly as the CT itself is), so a synthesised voxel mixes its
tissues' CT numbers the way a real 4 mm voxel does (partial volume), and a synthesised image
with the realistic CT numbers reproduces the CT's own, less texture and noise.

Arrays are ``[z, y, x]`` on the LPS-aligned model grid, ``spacing_zyx`` its voxel size in mm.
Fractions are uint8 ``[C, z, y, x]`` (255 = the whole voxel) for the classes of
:attr:`TissueIntensities.classes`; air is what the other classes leave. CT numbers are in HU
until :class:`ToModelWindow` maps them as prediction does.

The steps are small transforms with their own generators (:class:`~.augmentation.Compose` seeds
them from one seed), applied in this order by :func:`build_synthesis`:

1. :class:`TissueIntensities`: per class a mean CT number and a texture spread, drawn from the
   configured ranges (contrast-enhanced or not, urine with excreted contrast or not);
2. :class:`RandomBiasField`: a smooth additive field (cupping, beam hardening, calibration);
3. :class:`RandomStreaks`: bright and dark lines through a dense point over a few slices;
4. :class:`RandomBlur`: slice thickness along z, a smooth kernel in-plane;
5. :class:`RandomSharpen`: a sharp kernel (in-plane unsharp masking);
6. :class:`RandomNoise`: in-plane correlated noise;
7. :class:`RandomFieldOfView`: a reconstruction circle narrower than the body (the target stays in);
8. :class:`ToModelWindow`: clipped to the model's HU window and scaled to [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..errors import TrainingError
from ..inference.preprocessing import AIR_HU, normalise
from ..noise_fields import coarse_noise, correlated_noise
from ..structures.label_maps import TISSUE_CLASSES
from .augmentation import Compose, Pair, RandomTransform
from .synthesis_config import SynthesisConfig

#: FWHM of a Gaussian per unit sigma.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _uniform(rng: np.random.Generator, low_high: Sequence[float]) -> float:
    return float(rng.uniform(low_high[0], low_high[1]))


class TissueIntensities(RandomTransform):
    """Tissue fractions ``[C, z, y, x]`` (uint8) -> CT numbers ``[z, y, x]`` (float32 HU); the mask passes.

    Each call draws, for every configured class in :data:`TISSUE_CLASSES` order (so the draws do
    not depend on which classes a dataset has), a mean CT number and a texture spread; with
    ``contrast_probability`` the enhanced means, with ``bladder_contrast_probability`` excreted
    contrast in the urine. A voxel's CT number is the fraction-weighted mean of its classes,
    plus a smooth texture (Gaussian sigma 4-12 mm) scaled by the fraction-weighted spread.

    Parameters
    ----------
    classes
        The tissue classes of the fractions' rows (air excluded: it is the remainder).
    config
        The synthesis settings.
    spacing_zyx
        Model voxel size (mm).
    """

    def __init__(self, classes: Sequence[str], config: SynthesisConfig, spacing_zyx: Sequence[float]) -> None:
        super().__init__()
        missing = [c for c in classes if c not in config.tissue_hu]
        if missing:
            raise TrainingError(f"No CT-number range for tissue class(es) {', '.join(missing)}; give them in "
                                "synthesis.tissue_hu.")
        if "air" in classes:
            raise ValueError("air is the remainder of the other classes, not a row of the fractions")
        self.classes = tuple(classes)
        self.config = config
        self.spacing = tuple(float(s) for s in spacing_zyx)

    def draw(self) -> tuple[dict[str, float], dict[str, float]]:
        """One scan's mean CT number and texture spread per class (HU)."""
        config, rng = self.config, self.rng
        enhanced = rng.random() < config.contrast_probability
        excreted = rng.random() < config.bladder_contrast_probability
        means, spreads = {}, {}
        for name in (c for c in TISSUE_CLASSES if c in config.tissue_hu):
            mean_low, mean_high, sd_low, sd_high = config.tissue_hu[name]
            means[name] = _uniform(rng, config.contrast_hu.get(name, (mean_low, mean_high)) if enhanced
                                   else (mean_low, mean_high))
            spreads[name] = _uniform(rng, (sd_low, sd_high))
        excreted_hu = _uniform(rng, config.bladder_contrast_hu)
        if excreted and "urine" in means:
            means["urine"] = excreted_hu
        return means, spreads

    def __call__(self, fractions: np.ndarray, mask: np.ndarray) -> Pair:
        means, spreads = self.draw()
        base, spread = means.get("air", AIR_HU), spreads.get("air", 0.0)
        hu = np.full(fractions.shape[1:], base, dtype=np.float32)
        sd = np.full(fractions.shape[1:], spread, dtype=np.float32)
        for row, name in enumerate(self.classes):
            part = fractions[row]
            hu += part * np.float32((means[name] - base) / 255.0)
            sd += part * np.float32((spreads[name] - spread) / 255.0)
        texture = correlated_noise(self.rng, hu.shape, self.spacing, _uniform(self.rng, (4.0, 12.0)))
        texture *= sd
        hu += texture
        return hu, mask


class RandomBiasField(RandomTransform):
    """Add a smooth field (Gaussian sigma 60-150 mm) of peak amplitude up to ``bias_hu`` HU."""

    def __init__(self, bias_hu: float, spacing_zyx: Sequence[float]) -> None:
        super().__init__()
        self.bias_hu, self.spacing = float(bias_hu), tuple(spacing_zyx)

    def __call__(self, hu: np.ndarray, mask: np.ndarray) -> Pair:
        amplitude = _uniform(self.rng, (0.0, self.bias_hu))
        field = coarse_noise(self.rng, hu.shape, self.spacing, _uniform(self.rng, (60.0, 150.0)))
        field *= np.float32(amplitude / max(float(np.abs(field).max()), 1e-6))
        return hu + field, mask


class RandomStreaks(RandomTransform):
    """With ``probability``, streaks through a point of the body over 5-13 slices (axial planes).

    Alternating bright and dark lines at random angles through the point, fading with distance
    (metal, or beam hardening between dense bones), peak ``streak_hu`` (low, high) HU; only
    where there is body (above -500 HU), as reconstruction streaks are seen.
    """

    def __init__(self, probability: float, streak_hu: Sequence[float]) -> None:
        super().__init__()
        self.probability, self.streak_hu = float(probability), tuple(streak_hu)

    def __call__(self, hu: np.ndarray, mask: np.ndarray) -> Pair:
        if self.rng.random() >= self.probability:
            return hu, mask
        rng = self.rng
        body = hu > -500.0
        points = np.argwhere(body[:, ::4, ::4])
        if not len(points):
            return hu, mask
        z0, y0, x0 = points[rng.integers(len(points))] * [1, 4, 4]
        half = int(rng.integers(2, 7))
        amplitude = _uniform(rng, self.streak_hu)
        yy, xx = np.mgrid[0:hu.shape[1], 0:hu.shape[2]].astype(np.float32)
        dy, dx = yy - np.float32(y0), xx - np.float32(x0)
        fade = np.float32(_uniform(rng, (8.0, 25.0)))
        fade = fade / (np.sqrt(dy * dy + dx * dx) + fade)
        plane = np.zeros(hu.shape[1:], dtype=np.float32)
        n_rays = int(rng.integers(8, 25))
        for ray, angle in enumerate(rng.uniform(0.0, np.pi, n_rays)):
            distance = np.abs(dx * np.float32(np.sin(angle)) - dy * np.float32(np.cos(angle)))
            width = np.float32(_uniform(rng, (0.5, 1.2)))
            sign = 1.0 if ray % 2 == 0 else -1.0
            plane += np.float32(sign * amplitude * _uniform(rng, (0.3, 1.0))) * np.exp(-(distance / width) ** 2)
        plane *= fade
        for z in range(max(0, z0 - half), min(hu.shape[0], z0 + half + 1)):
            weight = np.float32(1.0 - abs(z - z0) / (half + 1))
            hu[z] += weight * plane * body[z]
        return hu, mask


class RandomBlur(RandomTransform):
    """Blur as thicker slices (along z) and a smoother kernel (in-plane) would.

    The slice thickness ``t`` (mm, uniform in ``slice_thickness_mm``) adds a Gaussian of sigma
    ``sqrt(max(t^2 - s_z^2, 0)) / 2.355`` along z, what a slice profile of FWHM ``t`` adds to the
    model grid's own averaging over ``s_z``; in-plane the sigma is uniform in ``kernel_blur_mm``.
    """

    def __init__(self, slice_thickness_mm: Sequence[float], kernel_blur_mm: Sequence[float],
                 spacing_zyx: Sequence[float]) -> None:
        super().__init__()
        self.thickness, self.kernel, self.spacing = tuple(slice_thickness_mm), tuple(kernel_blur_mm), spacing_zyx

    def __call__(self, hu: np.ndarray, mask: np.ndarray) -> Pair:
        thickness = _uniform(self.rng, self.thickness)
        in_plane = _uniform(self.rng, self.kernel)
        along_z = math.sqrt(max(thickness ** 2 - self.spacing[0] ** 2, 0.0)) / FWHM_PER_SIGMA
        sigma = [along_z / self.spacing[0], in_plane / self.spacing[1], in_plane / self.spacing[2]]
        sigma = [s if s >= 0.2 else 0.0 for s in sigma]
        if not any(sigma):
            return hu, mask
        return ndimage.gaussian_filter(hu, sigma, mode="nearest", truncate=3.0), mask


class RandomSharpen(RandomTransform):
    """With ``probability``, in-plane unsharp masking ``hu + a (hu - G(hu))``, G a 1-voxel Gaussian, a in ``amount``."""

    def __init__(self, probability: float, amount: Sequence[float]) -> None:
        super().__init__()
        self.probability, self.amount = float(probability), tuple(amount)

    def __call__(self, hu: np.ndarray, mask: np.ndarray) -> Pair:
        if self.rng.random() >= self.probability:
            return hu, mask
        amount = np.float32(_uniform(self.rng, self.amount))
        smooth = ndimage.gaussian_filter(hu, (0.0, 1.0, 1.0), mode="nearest", truncate=3.0)
        return hu + amount * (hu - smooth), mask


class RandomNoise(RandomTransform):
    """Gaussian noise of sd uniform in ``noise_sd_hu`` (HU), correlated in-plane by a Gaussian of sigma in ``grain_mm``."""

    def __init__(self, noise_sd_hu: Sequence[float], grain_mm: Sequence[float], spacing_zyx: Sequence[float]) -> None:
        super().__init__()
        self.sd, self.grain, self.spacing = tuple(noise_sd_hu), tuple(grain_mm), tuple(spacing_zyx)

    def __call__(self, hu: np.ndarray, mask: np.ndarray) -> Pair:
        sd = _uniform(self.rng, self.sd)
        noise = correlated_noise(self.rng, hu.shape, self.spacing, _uniform(self.rng, self.grain), axes=(1, 2),
                                 truncate=3.0)
        noise *= np.float32(sd)
        return hu + noise, mask


class RandomFieldOfView(RandomTransform):
    """With ``probability``, air outside an axial circle narrower than the body; the target stays inside.

    The circle is centred on the body (voxels above -500 HU); its radius is ``fov_fraction``
    (low, high) of the body's half width, but at least what keeps every target voxel 2 voxels
    inside. A bright rim of 0-150 HU just inside the edge mimics the truncation artefact.
    """

    def __init__(self, probability: float, fraction: Sequence[float]) -> None:
        super().__init__()
        self.probability, self.fraction = float(probability), tuple(fraction)

    def __call__(self, hu: np.ndarray, mask: np.ndarray) -> Pair:
        if self.rng.random() >= self.probability:
            return hu, mask
        fraction, rim = _uniform(self.rng, self.fraction), _uniform(self.rng, (0.0, 150.0))
        body = (hu > -500.0).any(axis=0)
        if not body.any():
            return hu, mask
        rows, cols = np.nonzero(body)
        cy, cx = rows.mean(), cols.mean()
        radius = fraction * 0.5 * float(np.ptp(cols) + 1)
        target = np.nonzero(mask.any(axis=0))
        if len(target[0]):
            radius = max(radius, float(np.sqrt((target[0] - cy) ** 2 + (target[1] - cx) ** 2).max()) + 2.0)
        yy, xx = np.mgrid[0:hu.shape[1], 0:hu.shape[2]]
        distance = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        outside = distance > radius
        edge = ((distance > radius - 2.0) & ~outside).astype(np.float32) * np.float32(rim)
        hu = hu + edge * (hu > -500.0)
        hu[:, outside] = AIR_HU
        return hu, mask


class ToModelWindow:
    """HU -> the network's input: clipped to ``hu_window`` and mapped onto [-1, 1] (prediction's own mapping)."""

    def __init__(self, hu_window: Sequence[float]) -> None:
        self.hu_window = (float(hu_window[0]), float(hu_window[1]))

    def set_random_state(self, seed) -> ToModelWindow:
        return self

    def __call__(self, hu: np.ndarray, mask: np.ndarray) -> Pair:
        return normalise(hu, self.hu_window), mask


def build_synthesis(classes: Sequence[str], config: SynthesisConfig, spacing_xyz: Sequence[float],
                    hu_window: Sequence[float]) -> Compose:
    """The synthesis pipeline (module docstring): ``(fractions [C, z, y, x], mask) -> (image [z, y, x], mask)``.

    ``spacing_xyz`` is the model grid's spacing in (x, y, z) order, as the preprocessing settings give it.
    """
    spacing = tuple(float(s) for s in spacing_xyz)[::-1]
    return Compose([
        TissueIntensities(classes, config, spacing),
        RandomBiasField(config.bias_hu, spacing),
        RandomStreaks(config.streak_probability, config.streak_hu),
        RandomBlur(config.slice_thickness_mm, config.kernel_blur_mm, spacing),
        RandomSharpen(config.sharpen_probability, config.sharpen_amount),
        RandomNoise(config.noise_sd_hu, config.noise_grain_mm, spacing),
        RandomFieldOfView(config.fov_probability, config.fov_fraction),
        ToModelWindow(hu_window),
    ])
