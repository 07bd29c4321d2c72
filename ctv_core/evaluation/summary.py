"""Summaries of per-case metrics and the files that hold them: ``summary.csv``, ``per_case.csv``, ``metrics.png``.

Every case counts (none is dropped): an infinite value (a missed structure) makes the ``mean``
infinite (or NaN for a mix of signs) and the ``sd`` NaN, so that a missed case can never
vanish from an average. Numbers are written with full precision; files atomically.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_files import atomic_file
from ..errors import EvaluationError
from .metrics import METRIC_KEYS

#: Metrics summarised in ``summary.csv`` (every per-case metric except the tolerance setting).
SUMMARISED_METRICS = tuple(k for k in METRIC_KEYS if k != "surface_dice_tolerance_mm")
#: Columns of ``summary.csv``; ``summarise_folds`` puts ``fold`` before them.
SUMMARY_COLUMNS = ("metric", "n", "n_infinite", "mean", "sd", "median", "min", "max")
#: Metrics drawn in ``metrics.png``, with their axis labels.
PLOTTED_METRICS = {
    "dice": "Dice",
    "surface_dice": "surface Dice",
    "hd95_mm": "HD95 (mm)",
    "msd_mm": "MSD (mm)",
    "volume_diff_percent": "volume difference (%)",
}


def summarise(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = SUMMARISED_METRICS) -> list[dict[str, Any]]:
    """One row per metric: n, n_infinite, mean, sd (ddof = 1), median, min, max over ``rows``.

    Every row counts (none is dropped): an infinite value makes ``mean`` infinite and ``sd`` NaN;
    a single row has ``sd`` NaN.
    """
    out = []
    for metric in metrics:
        values = np.array([float(row[metric]) for row in rows], dtype=np.float64)
        n = int(values.size)
        finite = bool(np.all(np.isfinite(values)))
        with np.errstate(invalid="ignore"):
            out.append({
                "metric": metric,
                "n": n,
                "n_infinite": int(np.count_nonzero(np.isinf(values))),
                "mean": float(np.mean(values)) if n else math.nan,
                "sd": float(np.std(values, ddof=1)) if n >= 2 and finite else math.nan,
                "median": float(np.median(values)) if n else math.nan,
                "min": float(np.min(values)) if n else math.nan,
                "max": float(np.max(values)) if n else math.nan,
            })
    return out


def summarise_folds(
    folds: Mapping[Any, Sequence[Mapping[str, Any]]], metrics: Sequence[str] = SUMMARISED_METRICS
) -> list[dict[str, Any]]:
    """Cross-validation summary from ``{fold: per-case rows}``.

    Returns rows with ``fold`` then ``SUMMARY_COLUMNS``: first the summary of each fold (in the
    mapping's order, ``fold`` as given), then ``fold = "pooled"``: every case of every fold
    together, then ``fold = "fold_means"``: the summary of the per-fold means (``n`` = number of
    folds; its ``mean`` is the mean of the fold means and ``sd`` their spread across folds).
    """
    if not folds:
        raise EvaluationError("No fold to summarise; give {fold: per-case rows} for at least one fold.")
    rows: list[dict[str, Any]] = []
    fold_means: list[dict[str, Any]] = []
    for fold, fold_rows in folds.items():
        if not fold_rows:
            raise EvaluationError(f"Fold {fold!r} has no case; give its per-case rows.")
        summary = summarise(fold_rows, metrics)
        rows.extend({"fold": fold, **s} for s in summary)
        fold_means.append({s["metric"]: s["mean"] for s in summary})
    pooled = [row for fold_rows in folds.values() for row in fold_rows]
    rows.extend({"fold": "pooled", **s} for s in summarise(pooled, metrics))
    rows.extend({"fold": "fold_means", **s} for s in summarise(fold_means, metrics))
    return rows


def write_rows_csv(rows: Sequence[Mapping[str, Any]], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV (atomically); floats with full precision, ``inf``/``nan`` as such."""
    path = Path(path)
    columns = list(columns if columns is not None else (rows[0].keys() if rows else []))
    with atomic_file(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_cell(row.get(c, "")) for c in columns])
    return path


def plot_metrics(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Box plot with every case as a dot, one panel per metric of ``PLOTTED_METRICS``; PNG, atomically.

    Infinite values (a missed structure) cannot be drawn; a panel says how many were left out.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(3.0 * len(PLOTTED_METRICS), 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    jitter = np.random.default_rng(0)  # fixed: the same rows give the same picture
    for ax, (metric, label) in zip(fig.subplots(1, len(PLOTTED_METRICS), squeeze=False)[0], PLOTTED_METRICS.items()):
        values = np.array([float(row[metric]) for row in rows], dtype=np.float64)
        shown = values[np.isfinite(values)]
        if shown.size:
            ax.boxplot(shown, widths=0.5, showfliers=False)
            ax.plot(1 + jitter.uniform(-0.12, 0.12, shown.size), shown, "o", markersize=4, alpha=0.7, color="tab:blue")
        left_out = values.size - shown.size
        title = f"{label}\nn = {values.size}"
        if left_out:
            title += f", {left_out} not finite (not shown)"
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.grid(axis="y", alpha=0.3)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _cell(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return value
