"""DICOM value formatting shared by every writer."""

from __future__ import annotations

from collections.abc import Iterable


def format_ds(value: float, max_decimals: int = 10) -> str:
    """The most precise DICOM decimal string (DS, at most 16 characters) for ``value``.

    At most ``max_decimals`` decimals; trailing zeros dropped; "-0" written as "0".
    """
    for digits in range(max_decimals, -1, -1):
        text = f"{value:.{digits}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        if text == "-0":
            text = "0"
        if len(text) <= 16:
            return text
    raise ValueError(f"{value} cannot be written as a DICOM decimal string (16 characters)")


def format_ds_list(values: Iterable[float], max_decimals: int = 10) -> list[str]:
    """``format_ds`` of each value."""
    return [format_ds(float(v), max_decimals) for v in values]
