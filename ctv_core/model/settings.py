"""What a model needs besides its weights: preprocessing, inference and post-processing settings.

Written once into the model package's manifest and read back through these frozen classes,
so training and prediction share one definition. ``from_dict`` is strict: an unknown key or
a value of the wrong kind raises ``ValueError`` naming it (no silent fallbacks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..strict_config import check_numbers, check_sizes, from_plain, is_finite_number, is_int, strict_kwargs

#: The most voxels a model may ask to process at once (a patch or a fixed input shape): 256^3.
MAX_VOXELS = 256 ** 3


@dataclass(frozen=True)
class PreprocessingConfig:
    """How a CT becomes the network's input.

    Attributes
    ----------
    spacing_mm
        Voxel spacing of the model grid along LPS (x, y, z), mm. The model grid is aligned with
        the LPS axes (identity direction) whatever the CT's orientation or patient position.
    fixed_shape_zyx
        Instead of a fixed spacing, squeeze the body's bounding box to this shape (z, y, x), as
        the original method did (72, 256, 256). None: use ``spacing_mm``.
    hu_window
        HU range kept (values clipped), mapped linearly onto [-1, 1].
    body_threshold_hu
        Voxels above this HU form the body; its largest connected part sets the crop.
    margin_mm
        Margin added around the body's bounding box, mm.
    """

    spacing_mm: tuple[float, float, float] = (4.0, 4.0, 4.0)
    fixed_shape_zyx: tuple[int, int, int] | None = None
    hu_window: tuple[float, float] = (-250.0, 350.0)
    body_threshold_hu: float = -400.0
    margin_mm: float = 8.0

    def __post_init__(self) -> None:
        check_numbers("preprocessing.spacing_mm", self.spacing_mm, 3, 0.2, 20.0)
        if self.fixed_shape_zyx is not None:
            check_sizes("preprocessing.fixed_shape_zyx", self.fixed_shape_zyx, 3, 8, 1024, MAX_VOXELS)
        check_numbers("preprocessing.hu_window", self.hu_window, 2, -5000.0, 50000.0)
        if self.hu_window[0] >= self.hu_window[1]:
            raise ValueError(f"preprocessing.hu_window must be (low, high) with low < high, not {self.hu_window}")
        if not is_finite_number(self.body_threshold_hu):
            raise ValueError(f"preprocessing.body_threshold_hu must be a number of HU, not {self.body_threshold_hu!r}")
        if not is_finite_number(self.margin_mm) or not 0 <= self.margin_mm <= 200:
            raise ValueError(f"preprocessing.margin_mm must be within 0..200 mm, not {self.margin_mm!r}")


@dataclass(frozen=True)
class InferenceConfig:
    """How the network is applied.

    Attributes
    ----------
    patch_zyx
        Largest input the network sees at once (z, y, x voxels, multiples of the network's
        divisor); bigger volumes go through a sliding window.
    overlap
        Fraction of the patch by which neighbouring windows overlap (0 to 0.9).
    threshold
        Probability at and above which a voxel is CTV (applied on the CT grid).
    test_time_flips
        Also predict on the left-right mirrored input and average (doubles the network time).
    """

    patch_zyx: tuple[int, int, int] = (160, 96, 128)
    overlap: float = 0.25
    threshold: float = 0.5
    test_time_flips: bool = False

    def __post_init__(self) -> None:
        check_sizes("inference.patch_zyx", self.patch_zyx, 3, 8, 1024, MAX_VOXELS)
        if not is_finite_number(self.overlap) or not 0.0 <= self.overlap <= 0.9:
            raise ValueError(f"inference.overlap must be within 0..0.9, not {self.overlap!r}")
        if not is_finite_number(self.threshold) or not 0.0 < self.threshold < 1.0:
            raise ValueError(f"inference.threshold must be within (0, 1), not {self.threshold!r}")
        if not isinstance(self.test_time_flips, bool):
            raise ValueError(f"inference.test_time_flips must be true or false, not {self.test_time_flips!r}")


@dataclass(frozen=True)
class PostprocessingConfig:
    """Clean-up of the binary mask on the CT grid.

    Attributes
    ----------
    keep_largest
        Keep this many largest connected components (0 keeps all).
    min_component_cc
        Drop components smaller than this, cc (0 keeps all).
    fill_holes
        Fill enclosed holes slice by slice (a CTV has none).
    """

    keep_largest: int = 1
    min_component_cc: float = 0.0
    fill_holes: bool = True

    def __post_init__(self) -> None:
        if not is_int(self.keep_largest) or not 0 <= self.keep_largest <= 1000:
            raise ValueError(f"postprocessing.keep_largest must be an integer within 0..1000, "
                             f"not {self.keep_largest!r}")
        if not is_finite_number(self.min_component_cc) or self.min_component_cc < 0:
            raise ValueError(f"postprocessing.min_component_cc must be a number >= 0, not {self.min_component_cc!r}")
        if not isinstance(self.fill_holes, bool):
            raise ValueError(f"postprocessing.fill_holes must be true or false, not {self.fill_holes!r}")


@dataclass(frozen=True)
class ModelSettings:
    """Everything but the architecture and the weights."""

    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    postprocessing: PostprocessingConfig = field(default_factory=PostprocessingConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSettings:
        strict_kwargs(cls, data, "settings")
        return cls(
            preprocessing=from_plain(PreprocessingConfig, data.get("preprocessing", {}), "preprocessing"),
            inference=from_plain(InferenceConfig, data.get("inference", {}), "inference"),
            postprocessing=from_plain(PostprocessingConfig, data.get("postprocessing", {}), "postprocessing"),
        )
