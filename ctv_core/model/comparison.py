"""The ``comparison`` field of a model package's manifest: how a candidate package (fine-tuned on approved contours)
did against the package in use on held-out approved cases, and whether it was promoted.

Written by ``ctv model compare`` (:mod:`ctv_core.training.promotion`) into the candidate's manifest; read
strictly here (every key known, of its type, and the decision consistent with the figures) by
:func:`ctv_core.model.manifest.read_manifest`, so a package with a malformed comparison is refused. The field
is a record: it does not enter the package's fingerprint.

Keys: ``format`` (:data:`FORMAT`), ``decided`` (ISO 8601 time), ``rule`` (the promotion rule in words),
``tolerance_dice`` (the largest Dice loss allowed on any case), ``held_out`` (``file``: the HDF5 file's name,
``sha256``, ``cases``), ``current`` and ``candidate`` (``name``, ``version``, ``fingerprint``), ``mean``
(``current`` and ``candidate``, each ``dice`` and ``hd95_mm``: means over the cases, HD95 over the cases where
it is finite), ``cases`` (per case: ``case``, ``current_dice``, ``candidate_dice``, ``current_hd95_mm``,
``candidate_hd95_mm``; an HD95 is null when a mask is empty) and ``promoted`` (bool).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

FORMAT = "ctv-comparison/1"
#: The default largest Dice loss allowed on any held-out case.
DEFAULT_TOLERANCE_DICE = 0.02
#: The promotion rule, in the words the manifest records.
RULE = ("promoted when the candidate's mean Dice on the held-out approved cases is higher than the current "
        "model's and no case's Dice is lower than the current model's by more than tolerance_dice")

_MODEL = {"name": str, "version": str, "fingerprint": str}
_MEAN = {"dice": float, "hd95_mm": (float, type(None))}
_CASE = {"case": str, "current_dice": float, "candidate_dice": float, "current_hd95_mm": (float, type(None)),
         "candidate_hd95_mm": (float, type(None))}
_TOP = {"format": str, "decided": str, "rule": str, "tolerance_dice": float, "held_out": dict, "current": dict,
        "candidate": dict, "mean": dict, "cases": list, "promoted": bool}


def _check(record: Any, keys: Mapping[str, Any], where: str) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"'{where}' must be an object")
    if set(record) != set(keys):
        raise ValueError(f"'{where}' must have exactly the keys {', '.join(keys)} (has {', '.join(record) or 'none'})")
    for key, kind in keys.items():
        value = record[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        number = float in kinds and isinstance(value, int) and not isinstance(value, bool)
        if not (number or isinstance(value, kinds)) or (bool not in kinds and isinstance(value, bool)):
            raise ValueError(f"'{where}.{key}' has the wrong type ({type(value).__name__})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"'{where}.{key}' is not a finite number")


def promoted_by_rule(cases: list[Mapping[str, Any]], tolerance_dice: float) -> bool:
    """The rule (:data:`RULE`) applied to per-case Dice: mean higher, and no case worse by more than the tolerance."""
    if not cases:
        return False
    current = sum(c["current_dice"] for c in cases) / len(cases)
    candidate = sum(c["candidate_dice"] for c in cases) / len(cases)
    worst = max(c["current_dice"] - c["candidate_dice"] for c in cases)
    return candidate > current and worst <= tolerance_dice


def check_comparison(comparison: Any) -> None:
    """Refuse a comparison that is not one (see the module docstring).

    Raises
    ------
    ValueError
        Naming the first problem: a missing or unknown key, a wrong type, no case, or a ``promoted`` that the
        rule does not give for the recorded figures.
    """
    _check(comparison, _TOP, "comparison")
    if comparison["format"] != FORMAT:
        raise ValueError(f"'comparison.format' is {comparison['format']!r}, not {FORMAT!r}")
    _check(comparison["held_out"], {"file": str, "sha256": str, "cases": int}, "comparison.held_out")
    for side in ("current", "candidate"):
        _check(comparison[side], _MODEL, f"comparison.{side}")
    _check(comparison["mean"], {"current": dict, "candidate": dict}, "comparison.mean")
    for side in ("current", "candidate"):
        _check(comparison["mean"][side], _MEAN, f"comparison.mean.{side}")
    if not comparison["cases"] or len(comparison["cases"]) != comparison["held_out"]["cases"]:
        raise ValueError("'comparison.cases' must list every held-out case (held_out.cases of them)")
    for n, case in enumerate(comparison["cases"]):
        _check(case, _CASE, f"comparison.cases[{n}]")
    if comparison["promoted"] != promoted_by_rule(comparison["cases"], comparison["tolerance_dice"]):
        raise ValueError("'comparison.promoted' is not what the rule gives for the recorded Dice figures")
