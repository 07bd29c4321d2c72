"""Promote a fine-tuned package only when it is better: ``ctv model compare CANDIDATE CURRENT --held-out DATA.h5``.

Both packages predict every case of the held-out training set (approved contours no run trained on) on the case's
own CT grid, exactly as ``ctv predict`` would (:class:`ctv_core.inference.predictor.CTVPredictor`, post-processing
included); each prediction is scored against the case's target with :func:`ctv_core.evaluation.evaluate.evaluate_case`
(Dice, HD95 in mm). The rule (:data:`ctv_core.model.comparison.RULE`): promoted when the candidate's mean Dice is
higher and no case's Dice is lower than the current model's by more than ``tolerance_dice``. The comparison is
written into the candidate's manifest (``comparison``, checked by :mod:`ctv_core.model.comparison`) whatever the
decision, atomically, so a package carries the evidence for or against it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic_files import atomic_file
from ..dataset.hdf5_reader import CTVDataset
from ..errors import CTVError
from ..evaluation.evaluate import evaluate_case
from ..inference.predictor import CTVPredictor
from ..model.comparison import DEFAULT_TOLERANCE_DICE, FORMAT, RULE, check_comparison, promoted_by_rule
from ..model.manifest import MANIFEST, read_manifest, sha256_of

def _finite(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return round(sum(finite) / len(finite), 4) if finite else None


def _model(manifest: dict[str, Any]) -> dict[str, str]:
    return {"name": manifest["name"], "version": manifest["version"], "fingerprint": manifest.get("fingerprint", "")}


def compare_packages(candidate: str | Path, current: str | Path, held_out: str | Path, *,
                     tolerance_dice: float = DEFAULT_TOLERANCE_DICE, device: str = "cpu",
                     progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Score both packages on every held-out case and decide; returns the ``comparison`` record (not yet written).

    Raises
    ------
    CTVError
        A package or the held-out file cannot be used, the file has no case, or the tolerance is negative.
    """
    if not 0.0 <= tolerance_dice < 1.0:
        raise CTVError(f"The Dice tolerance {tolerance_dice} must lie in [0, 1); the default is "
                       f"{DEFAULT_TOLERANCE_DICE}.")
    predictors = {"candidate": CTVPredictor(candidate, device=device), "current": CTVPredictor(current, device=device)}
    cases = []
    with CTVDataset(held_out) as data:
        if not len(data):
            raise CTVError(f"'{held_out}' holds no case to compare the packages on.")
        for n, case_id in enumerate(data.case_ids, start=1):
            image, target = data.image(case_id), data.mask(case_id)
            row: dict[str, Any] = {"case": case_id}
            for side in ("current", "candidate"):
                metrics = evaluate_case(predictors[side].predict(image), target)
                row[f"{side}_dice"] = round(float(metrics["dice"]), 4)
                row[f"{side}_hd95_mm"] = _finite(metrics["hd95_mm"])
            cases.append(row)
            if progress is not None:
                progress("comparing", n, len(data))
    comparison = {
        "format": FORMAT,
        "decided": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "rule": RULE,
        "tolerance_dice": float(tolerance_dice),
        "held_out": {"file": Path(held_out).name, "sha256": sha256_of(Path(held_out)), "cases": len(cases)},
        "current": _model(read_manifest(Path(current))),
        "candidate": _model(read_manifest(Path(candidate))),
        "mean": {side: {"dice": _mean([c[f"{side}_dice"] for c in cases]),
                        "hd95_mm": _mean([c[f"{side}_hd95_mm"] for c in cases])} for side in ("current", "candidate")},
        "cases": cases,
        "promoted": promoted_by_rule(cases, tolerance_dice),
    }
    check_comparison(comparison)
    return comparison


def record_comparison(candidate: str | Path, comparison: dict[str, Any]) -> Path:
    """Write ``comparison`` into the candidate's manifest (replacing an earlier one; the file is replaced whole).

    Raises
    ------
    ValueError
        ``comparison`` is malformed (:func:`ctv_core.model.comparison.check_comparison`); nothing is written.
    """
    check_comparison(comparison)
    path = Path(candidate)
    manifest = read_manifest(path)
    manifest["comparison"] = comparison
    with atomic_file(path / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path / MANIFEST
