"""Strict construction of the frozen settings dataclasses from plain JSON values.

Model manifests and training configurations are read through these helpers, so an unknown key
or a value of the wrong kind is refused naming it (no silent fallbacks, no setting quietly
ignored). Lists become tuples; each dataclass checks its own ranges in ``__post_init__``.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def is_int(value: Any) -> bool:
    """True for an integer that is not a bool (JSON ``true`` is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for an int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """True for an int or float that is not a bool, NaN or infinite."""
    return is_number(value) and math.isfinite(value)


def check_sizes(where: str, values: Any, count: int, low: int, high: int, max_product: int | None = None) -> None:
    """Raise ``ValueError`` unless ``values`` are ``count`` integers within ``low..high`` (product at most
    ``max_product``)."""
    if (not isinstance(values, (tuple, list)) or len(values) != count
            or any(not is_int(v) or not low <= v <= high for v in values)):
        raise ValueError(f"{where} must be {count} integers within {low}..{high}, not {values!r}")
    if max_product is not None and math.prod(values) > max_product:
        raise ValueError(f"{where} {values!r} holds {math.prod(values):,} voxels, more than the {max_product:,} "
                         "a model may ask for at once")


def check_numbers(where: str, values: Any, count: int, low: float, high: float) -> None:
    """Raise ``ValueError`` unless ``values`` are ``count`` finite numbers within ``low..high``."""
    if (not isinstance(values, (tuple, list)) or len(values) != count
            or any(not is_finite_number(v) or not low <= v <= high for v in values)):
        raise ValueError(f"{where} must be {count} finite numbers within {low:g}..{high:g}, not {values!r}")


def strict_kwargs(cls: type, data: Any, where: str) -> dict[str, Any]:
    """``data`` as keyword arguments of the dataclass ``cls`` (lists become tuples).

    Raises ``ValueError`` naming ``where`` when ``data`` is not a JSON object or has keys that
    are not fields of ``cls``.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be an object, not {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def from_plain(cls: type[T], data: Any, where: str) -> T:
    """``cls(**strict_kwargs(cls, data, where))``: a settings dataclass from its JSON object."""
    return cls(**strict_kwargs(cls, data, where))
