"""Training augmentation: small composable transforms of an (image, mask) pair with local randomness.

Arrays are ``[z, y, x]`` on the model grid (LPS-aligned: z towards the head, y towards the
back, x towards the patient's left): ``image`` float32 (normalised HU, air = -1), ``mask``
uint8 (1 inside the target). Every transform maps ``(image, mask) -> (image, mask)`` on the
same grid, keeps them aligned, and draws from its own ``numpy.random.Generator``
(``set_random_state``), never from a global RNG; :class:`Compose` seeds its members from one
seed, so a sample's augmentation is a pure function of the sample's seed (exact resume, any
number of DataLoader workers or processes).

Geometric transforms shift or rotate content within the array, so the trainer crops a region
larger than the patch (:func:`region_margin`) and :class:`CenterCrop` cuts the patch out
after them: what moves in comes from real data, not padding.

The method's augmentation (:func:`build_augmentation`): translation <= 8 voxels, rotation
<= 10 degrees about the z axis plus small tilts, flips along z, y and x, intensity scaling and
Gaussian noise of variance 0.001 on the normalised image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..model.settings import PreprocessingConfig
from .config import AugmentationConfig

#: Value of air in the normalised image (below the HU window), used where content is missing.
IMAGE_FILL = -1.0

Pair = tuple[np.ndarray, np.ndarray]


class RandomTransform:
    """Base of the random transforms: one ``numpy.random.Generator`` per instance."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def set_random_state(self, seed: int | Sequence[int] | np.random.SeedSequence) -> RandomTransform:
        """Re-seed this transform's generator; returns ``self``."""
        self.rng = np.random.default_rng(seed)
        return self

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:  # pragma: no cover - interface
        raise NotImplementedError


class RandomFlip(RandomTransform):
    """Mirror along ``axis`` (0 = z, 1 = y, 2 = x) with probability ``probability``."""

    def __init__(self, axis: int, probability: float = 0.5) -> None:
        super().__init__()
        if axis not in (0, 1, 2):
            raise ValueError(f"flip axis must be 0 (z), 1 (y) or 2 (x), not {axis!r}")
        self.axis, self.probability = axis, probability

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:
        if self.rng.random() >= self.probability:
            return image, mask
        return np.flip(image, self.axis), np.flip(mask, self.axis)


class RandomTranslate(RandomTransform):
    """Shift the content by a uniform integer number of voxels in ``[-max_voxels, max_voxels]`` per axis.

    Whole-voxel shifts move image and mask by exactly the same amount with no interpolation;
    voxels shifted in from outside are air (image) and background (mask).
    """

    def __init__(self, max_voxels: int = 8) -> None:
        super().__init__()
        self.max_voxels = int(max_voxels)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:
        if self.max_voxels == 0:
            return image, mask
        shift = self.rng.integers(-self.max_voxels, self.max_voxels + 1, size=3)
        return shift_array(image, shift, IMAGE_FILL), shift_array(mask, shift, 0)


def shift_array(array: np.ndarray, shift: Sequence[int], fill: float) -> np.ndarray:
    """``out[i + shift] = array[i]`` for integer ``shift`` per axis; uncovered voxels are ``fill``."""
    out = np.full_like(array, fill)
    src, dst = [], []
    for s, n in zip(shift, array.shape):
        s = int(s)
        if abs(s) >= n:
            return out
        src.append(slice(max(0, -s), n - max(0, s)))
        dst.append(slice(max(0, s), n - max(0, -s)))
    out[tuple(dst)] = array[tuple(src)]
    return out


class RandomRotate(RandomTransform):
    """Rotate about the array's centre with probability ``probability``.

    The angle about the z axis is U(-rotation_deg, rotation_deg); the tilts about the y and x
    axes are U(-tilt_deg, tilt_deg). Angles are in voxel space (the model grid is nearly
    isotropic). The image is interpolated linearly (outside: air), the mask linearly as a
    fraction and thresholded at 0.5, which keeps its boundary where a linear resampling of the
    image puts it (nearest neighbour would shift it by up to half a voxel).
    """

    def __init__(self, rotation_deg: float = 10.0, tilt_deg: float = 5.0, probability: float = 0.5) -> None:
        super().__init__()
        self.rotation_deg, self.tilt_deg, self.probability = float(rotation_deg), float(tilt_deg), probability

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:
        if self.rng.random() >= self.probability:
            return image, mask
        about_z = self.rng.uniform(-self.rotation_deg, self.rotation_deg)
        about_y, about_x = self.rng.uniform(-self.tilt_deg, self.tilt_deg, size=2)
        return rotate_pair(image, mask, about_z, about_y, about_x)


def rotation_matrix_zyx(about_z: float, about_y: float, about_x: float) -> np.ndarray:
    """3x3 rotation acting on ``(z, y, x)`` index vectors; angles in degrees."""
    az, ay, ax = np.radians([about_z, about_y, about_x])
    rz = np.array([[1, 0, 0], [0, np.cos(az), -np.sin(az)], [0, np.sin(az), np.cos(az)]])  # in the y-x plane
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])  # in the z-x plane
    rx = np.array([[np.cos(ax), -np.sin(ax), 0], [np.sin(ax), np.cos(ax), 0], [0, 0, 1]])  # in the z-y plane
    return rz @ ry @ rx


def rotate_pair(image: np.ndarray, mask: np.ndarray, about_z: float, about_y: float, about_x: float) -> Pair:
    """Rotate image (linear) and mask (linear, >= 0.5) about the array centre; angles in degrees."""
    matrix = rotation_matrix_zyx(about_z, about_y, about_x)
    centre = (np.asarray(image.shape, dtype=float) - 1) / 2
    # affine_transform maps output index o to input index matrix @ o + offset.
    offset = centre - matrix @ centre
    rotated = ndimage.affine_transform(image.astype(np.float32, copy=False), matrix, offset, order=1,
                                       mode="constant", cval=IMAGE_FILL)
    fraction = ndimage.affine_transform(mask.astype(np.float32), matrix, offset, order=1, mode="constant", cval=0.0)
    return rotated, (fraction >= 0.5).astype(np.uint8)


class RandomIntensityScale(RandomTransform):
    """Multiply the image by U(low, high) with probability ``probability`` (mask unchanged)."""

    def __init__(self, low: float = 0.9, high: float = 1.1, probability: float = 0.5) -> None:
        super().__init__()
        self.low, self.high, self.probability = float(low), float(high), probability

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:
        if self.rng.random() >= self.probability:
            return image, mask
        return (image * np.float32(self.rng.uniform(self.low, self.high))).astype(np.float32), mask


class RandomHUOffset(RandomTransform):
    """Add one CT-number offset U(-max_hu, max_hu) to the whole patch with probability ``probability``.

    A scanner a few tens of HU off its calibration (or another tube voltage) shifts every CT
    number alike. The image is already normalised (``hu_window`` mapped to [-1, 1]), so the
    offset is added in those units to the voxels inside the window and clipped to it; voxels at
    or beyond the window's ends stay there (a tissue below -250 HU or above 350 HU mostly stays
    beyond the window under an offset of a few tens of HU). The mask is unchanged.
    """

    def __init__(self, max_hu: float, hu_window: Sequence[float], probability: float = 0.5) -> None:
        super().__init__()
        self.max_hu, self.probability = float(max_hu), probability
        self.per_hu = 2.0 / (float(hu_window[1]) - float(hu_window[0]))

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:
        if self.rng.random() >= self.probability or self.max_hu == 0:
            return image, mask
        shift = np.float32(self.rng.uniform(-self.max_hu, self.max_hu) * self.per_hu)
        inside = (image > -1.0) & (image < 1.0)
        return np.where(inside, np.clip(image + shift, -1.0, 1.0), image).astype(np.float32), mask


class RandomGaussianNoise(RandomTransform):
    """Add N(0, variance) noise to the image with probability ``probability`` (mask unchanged)."""

    def __init__(self, variance: float = 0.001, probability: float = 0.5) -> None:
        super().__init__()
        self.variance, self.probability = float(variance), probability

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:
        if self.rng.random() >= self.probability or self.variance == 0:
            return image, mask
        noise = self.rng.standard_normal(image.shape, dtype=np.float32) * np.float32(math.sqrt(self.variance))
        return image + noise, mask


class CenterCrop:
    """Cut the central ``shape_zyx`` out of both arrays (deterministic; sizes must not exceed the arrays)."""

    def __init__(self, shape_zyx: Sequence[int]) -> None:
        self.shape = tuple(int(s) for s in shape_zyx)

    def set_random_state(self, seed) -> CenterCrop:
        return self

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:
        if any(s > n for s, n in zip(self.shape, image.shape)):
            raise ValueError(f"cannot crop {self.shape} out of an array of shape {image.shape}")
        lo = [(n - s) // 2 for s, n in zip(self.shape, image.shape)]
        region = tuple(slice(a, a + s) for a, s in zip(lo, self.shape))
        return image[region], mask[region]


class Compose:
    """Apply transforms in order; ``set_random_state`` gives each its own child seed."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def set_random_state(self, seed: int | Sequence[int] | np.random.SeedSequence) -> Compose:
        sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        for transform, child in zip(self.transforms, sequence.spawn(len(self.transforms))):
            transform.set_random_state(child)
        return self

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:
        for transform in self.transforms:
            image, mask = transform(image, mask)
        return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(mask, dtype=np.uint8)


def region_margin(patch_zyx: Sequence[int], config: AugmentationConfig) -> tuple[int, int, int]:
    """Voxels to crop beyond the patch on each side so that shifted or rotated content is real data.

    A rotation by at most ``a`` degrees moves the patch's corners along axis i by at most
    ``sin(a) * sum of the other half-sizes``; the translation adds its maximum.
    """
    if not config.enabled:
        return (0, 0, 0)
    half = np.asarray(patch_zyx, dtype=float) / 2
    angle = 0.0 if config.rotation_probability == 0 else max(config.rotation_deg, config.tilt_deg)
    s = math.sin(math.radians(angle))
    margin = [math.ceil(s * (half.sum() - h)) + 1 if angle else 0 for h in half]
    return tuple(int(m + config.translation_voxels) for m in margin)


def build_augmentation(patch_zyx: Sequence[int], config: AugmentationConfig,
                       hu_window: Sequence[float] = PreprocessingConfig.hu_window) -> Compose:
    """The training pipeline for a region of ``patch + 2 * region_margin`` voxels -> a ``patch_zyx`` pair.

    Order: translation, rotation (both on the enlarged region), centre crop to the patch, flips
    (z, y, x), intensity scaling, Gaussian noise (so that its variance is the configured one),
    and, when ``config.hu_offset`` > 0, a CT-number offset (:class:`RandomHUOffset` in the
    model's ``hu_window``, HU). The offset comes last so that the other transforms draw what
    they drew without it: a run without it is unchanged.
    """
    if not config.enabled:
        return Compose([CenterCrop(patch_zyx)])
    transforms: list = [RandomTranslate(config.translation_voxels),
                        RandomRotate(config.rotation_deg, config.tilt_deg, config.rotation_probability),
                        CenterCrop(patch_zyx)]
    transforms += [RandomFlip(axis, config.flip_probability) for axis in sorted(config.flip_axes)]
    transforms += [RandomIntensityScale(*config.intensity_scale, probability=config.intensity_probability),
                   RandomGaussianNoise(config.noise_variance, config.noise_probability)]
    if config.hu_offset > 0:
        transforms.append(RandomHUOffset(config.hu_offset, hu_window, config.hu_offset_probability))
    return Compose(transforms)
