"""The appearance-randomisation settings (``synthesis`` section of a training configuration).

Tissue CT numbers are drawn per patch and per tissue class
(:data:`ctv_core.structures.label_maps.TISSUE_CLASSES`) from uniform ranges around what CT
scanners show: unenhanced and contrast-enhanced, calibrated or a few tens of HU off, soft and
sharp kernels, thin and thick slices, quiet and noisy. The ranges are deliberately wider than one
scanner's, so that no single CT number identifies an organ (the SynthSeg principle) while the
physics stays recognisable (fat below water, bone above soft tissue, air at -1000).

All CT numbers are in HU, lengths in mm; ranges are ``(low, high)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..strict_config import check_numbers, is_finite_number, is_number
from ..structures.label_maps import TISSUE_CLASSES

#: HU limits of anything a CT stores (the loader's range).
HU_LIMITS = (-1024.0, 3071.0)


def default_tissue_hu() -> dict[str, tuple[float, float, float, float]]:
    """Per class: (mean low, mean high, texture sd low, texture sd high), unenhanced scan."""
    return {
        "air": (-1000.0, -950.0, 0.0, 10.0),
        "foam": (-950.0, -500.0, 0.0, 20.0),
        "couch_shell": (0.0, 600.0, 0.0, 40.0),
        "fat": (-140.0, -50.0, 0.0, 15.0),
        "muscle": (15.0, 90.0, 0.0, 12.0),
        "soft_tissue": (10.0, 90.0, 0.0, 12.0),
        "uterus": (20.0, 90.0, 0.0, 15.0),
        "cervix": (20.0, 90.0, 0.0, 15.0),
        "urine": (-15.0, 40.0, 0.0, 8.0),
        "artery": (25.0, 70.0, 0.0, 8.0),
        "vein": (25.0, 70.0, 0.0, 8.0),
        "bowel_content": (-70.0, 70.0, 0.0, 40.0),
        "oral_contrast": (100.0, 700.0, 0.0, 60.0),
        "cortical_bone": (450.0, 1500.0, 0.0, 80.0),
        "trabecular_bone": (70.0, 450.0, 0.0, 60.0),
        "marrow": (-110.0, 80.0, 0.0, 30.0),
        "csf": (-10.0, 35.0, 0.0, 8.0),
        "metal": (1500.0, 3071.0, 0.0, 300.0),
    }


def default_contrast_hu() -> dict[str, tuple[float, float]]:
    """Mean ranges of the classes intravenous contrast changes (they replace the unenhanced means)."""
    return {"artery": (120.0, 450.0), "vein": (90.0, 300.0), "uterus": (50.0, 170.0), "cervix": (40.0, 160.0),
            "soft_tissue": (20.0, 110.0), "muscle": (20.0, 100.0)}


@dataclass(frozen=True)
class SynthesisConfig:
    """Appearance randomisation: patches whose image is synthesised from the case's tissue label map.

    Attributes
    ----------
    probability
        Fraction of training patches synthesised (the rest keep the CT's own image). 0 (the
        default) turns synthesis off: training is the method's. Above 0 the training set must
        hold tissue label maps (``ctv dataset build --tissue-labels``).
    tissue_hu
        Per tissue class: ``(mean low, mean high, sd low, sd high)``; each patch draws a mean
        CT number and a texture standard deviation per class. Classes given here replace the
        defaults (:func:`default_tissue_hu`); the others keep them.
    contrast_probability
        Probability of an intravenously enhanced patch, whose classes in ``contrast_hu`` draw
        their means from there instead.
    contrast_hu
        Per class: ``(mean low, mean high)`` when enhanced (defaults: :func:`default_contrast_hu`).
    bladder_contrast_probability, bladder_contrast_hu
        Probability and mean range of excreted contrast in the urine (a delayed-phase scan).
    bias_hu
        Largest amplitude of a smooth additive field (cupping, beam hardening, calibration drift).
    slice_thickness_mm
        Reconstructed slice thickness: blur along z (Gaussian of the thickness' FWHM beyond the
        model grid's own averaging).
    kernel_blur_mm
        In-plane Gaussian sigma of a smooth reconstruction kernel.
    sharpen_probability, sharpen_amount
        Probability and strength of a sharp kernel (in-plane unsharp masking: edge overshoot,
        louder noise).
    noise_sd_hu, noise_grain_mm
        Standard deviation of the image noise on the model grid, and its in-plane correlation
        (Gaussian sigma).
    streak_probability, streak_hu
        Probability and peak amplitude of metal or beam-hardening streaks (alternating bright and
        dark lines through a dense point, over a few slices).
    fov_probability, fov_fraction
        Probability of a reconstruction field of view narrower than the body, and its radius as
        a fraction of the body's half width; never narrower than the target needs (the target
        stays inside it).
    """

    probability: float = 0.0
    tissue_hu: dict[str, tuple[float, float, float, float]] = field(default_factory=default_tissue_hu)
    contrast_probability: float = 0.5
    contrast_hu: dict[str, tuple[float, float]] = field(default_factory=default_contrast_hu)
    bladder_contrast_probability: float = 0.15
    bladder_contrast_hu: tuple[float, float] = (120.0, 900.0)
    bias_hu: float = 30.0
    slice_thickness_mm: tuple[float, float] = (1.0, 5.0)
    kernel_blur_mm: tuple[float, float] = (0.0, 1.5)
    sharpen_probability: float = 0.3
    sharpen_amount: tuple[float, float] = (0.2, 1.0)
    noise_sd_hu: tuple[float, float] = (0.0, 30.0)
    noise_grain_mm: tuple[float, float] = (0.0, 3.0)
    streak_probability: float = 0.15
    streak_hu: tuple[float, float] = (100.0, 500.0)
    fov_probability: float = 0.15
    fov_fraction: tuple[float, float] = (0.6, 0.95)

    def __post_init__(self) -> None:
        for name in ("probability", "contrast_probability", "bladder_contrast_probability", "sharpen_probability",
                     "streak_probability", "fov_probability"):
            value = getattr(self, name)
            if not is_number(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"synthesis.{name} must be within 0..1, not {value!r}")
        object.__setattr__(self, "tissue_hu", _merged("synthesis.tissue_hu", default_tissue_hu(), self.tissue_hu, 4))
        object.__setattr__(self, "contrast_hu",
                           _merged("synthesis.contrast_hu", default_contrast_hu(), self.contrast_hu, 2))
        ranges = {"bladder_contrast_hu": HU_LIMITS, "slice_thickness_mm": (0.0, 20.0), "kernel_blur_mm": (0.0, 10.0),
                  "sharpen_amount": (0.0, 5.0), "noise_sd_hu": (0.0, 500.0), "noise_grain_mm": (0.0, 20.0),
                  "streak_hu": (0.0, 3000.0), "fov_fraction": (0.1, 1.0)}
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            check_numbers(f"synthesis.{name}", value, 2, low, high)
            if value[0] > value[1]:
                raise ValueError(f"synthesis.{name} must be (low, high) with low <= high, not {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if not is_finite_number(self.bias_hu) or not 0.0 <= self.bias_hu <= 500.0:
            raise ValueError(f"synthesis.bias_hu must be within 0..500, not {self.bias_hu!r}")

    @property
    def enabled(self) -> bool:
        return self.probability > 0


def _merged(where: str, defaults: dict[str, tuple], given: Any, count: int) -> dict[str, tuple]:
    """``defaults`` with the classes of ``given`` replaced, each checked: ``count`` numbers, lows <= highs."""
    if not isinstance(given, dict):
        raise ValueError(f"{where} must be an object of tissue class -> ranges, not {given!r}")
    unknown = sorted(set(given) - set(TISSUE_CLASSES))
    if unknown:
        raise ValueError(f"{where}: unknown tissue class(es) {', '.join(unknown)}; known: {', '.join(TISSUE_CLASSES)}")
    out = dict(defaults)
    for name, value in given.items():
        check_numbers(f"{where}.{name}", value, count, HU_LIMITS[0], HU_LIMITS[1])
        pairs = [(value[i], value[i + 1]) for i in range(0, count, 2)]
        if any(low > high for low, high in pairs) or (count == 4 and value[2] < 0):
            raise ValueError(f"{where}.{name} must hold (low, high) pairs with low <= high (and sd >= 0), "
                             f"not {value!r}")
        out[name] = tuple(float(v) for v in value)
    return out
