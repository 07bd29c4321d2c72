"""The configuration of the geometric QA model (:mod:`.qa_models`), readable without torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..strict_config import check_numbers, from_plain, is_int


@dataclass(frozen=True)
class HUWindowConfig:
    """The window, in HU, and the model's HU normalisation window (to undo it).

    Attributes
    ----------
    low_hu, high_hu
        Voxels with ``low_hu <= HU <= high_hu`` get probability above 0.5.
    input_window
        The preprocessing ``hu_window`` the input was normalised with.
    sharpness
        Logit gain per HU (large: a hard threshold).
    """

    low_hu: float
    high_hu: float
    input_window: tuple[float, float]
    sharpness: float = 50.0
    divisor: int = 16

    def __post_init__(self) -> None:
        check_numbers("network.low_hu/high_hu", (self.low_hu, self.high_hu), 2, -5000.0, 50000.0)
        check_numbers("network.input_window", self.input_window, 2, -5000.0, 50000.0)
        check_numbers("network.sharpness", (self.sharpness,), 1, 0.0, 1e6)
        if not is_int(self.divisor) or self.divisor not in (1, 2, 4, 8, 16, 32, 64):
            raise ValueError(f"network.divisor must be a power of two within 1..64, not {self.divisor!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HUWindowConfig:
        return from_plain(cls, data, "network (hu_window)")
