"""Strict construction of the frozen settings dataclasses from plain JSON values.

Model manifests and training configurations are read through these helpers, so an unknown key
or a value of the wrong kind is refused naming it (no silent fallbacks, no setting quietly
ignored). Lists become tuples; each dataclass checks its own ranges in ``__post_init__``.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def is_int(value: Any) -> bool:
    """True for an integer that is not a bool (JSON ``true`` is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for an int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
