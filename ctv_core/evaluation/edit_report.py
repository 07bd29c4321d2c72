"""``ctv report``: the edit records of many approvals, per model version: what clinicians changed in the AI contour.

Records (:mod:`.edits`) come from a case store's index or from a folder of exports (every
``*.ai-edits.json`` below it). They are grouped by model version: the model's name, version and
SHA-256 fingerprint (two packages with one name and version but other weights are two groups).
For each group and each summarised figure (:data:`.edits.SUMMARISED`) the report gives n, median,
quartiles (linear interpolation between order statistics, NumPy's default), minimum and maximum;
an HD95 that is infinite (the clinician erased the whole AI contour, or drew one where the AI had
none) is counted apart (``infinite``), never averaged in. Written into ``OUT_DIR`` as one set
(:func:`ctv_core.output_folder.output_set`): ``report.json``, ``edits.csv`` (one row per
approval) and ``edits.png`` (a box and the points per figure per model version).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import EditRecordError
from ..output_folder import output_set
from .edits import SIDECAR_SUFFIX, SUMMARISED, read_edit_record

REPORT = "report.json"
TABLE = "edits.csv"
PLOT = "edits.png"
#: What each figure is called on the plot and in the table, with its unit.
LABELS = {"dice": "Dice", "hd95_mm": "HD95 (mm)", "surface_dice_2mm": "Surface Dice at 2 mm",
          "added_cc": "Volume added (cc)", "removed_cc": "Volume removed (cc)",
          "slices_touched": "Slices touched"}


def read_folder_records(folder: str | Path) -> list[dict[str, Any]]:
    """Every edit record (``*.ai-edits.json``) below ``folder``, in path order.

    Raises
    ------
    EditRecordError
        A file named as a record is not one (the message names it).
    """
    return [read_edit_record(path) for path in sorted(Path(folder).rglob(f"*{SIDECAR_SUFFIX}"))]


def model_key(record: dict[str, Any]) -> str:
    """The group of a record: ``name version (sha256 first 12 hex digits)``."""
    ai = record["ai"]
    return f"{ai['model_name']} {ai['model_version']} ({ai['model_sha256'][:12] or 'no checksum'})"


def summarise_edits(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per model version (:func:`model_key`): n, how many were approved unchanged, and per figure n, median,
    q1, q3, min, max (and how many were infinite)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(model_key(record), []).append(record)
    out = {}
    for key, members in sorted(groups.items()):
        ai = members[0]["ai"]
        figures = {}
        for name in SUMMARISED:
            values = [r["figures"][name] for r in members if name not in _not_measured(r)]
            finite = np.asarray([v for v in values if v is not None], dtype=float)
            summary: dict[str, Any] = {"n": int(finite.size), "infinite": len(values) - int(finite.size)}
            if finite.size:
                q1, median, q3 = np.percentile(finite, [25, 50, 75])
                summary.update(median=_round(median), q1=_round(q1), q3=_round(q3), min=_round(finite.min()),
                               max=_round(finite.max()))
            figures[name] = summary
        out[key] = {"model_name": ai["model_name"], "model_version": ai["model_version"],
                    "model_sha256": ai["model_sha256"], "n": len(members),
                    "unchanged": sum(bool(r["figures"]["unchanged"]) for r in members),
                    "doors": sorted({r["door"] for r in members}), "figures": figures}
    return out


def write_edit_report(records: Sequence[dict[str, Any]], out_dir: str | Path, source: str) -> dict[str, Any]:
    """Write ``report.json``, ``edits.csv`` and ``edits.png`` into ``out_dir`` (one set); returns the report.

    Raises
    ------
    EditRecordError
        No record: there is nothing to report.
    """
    if not records:
        raise EditRecordError(
            f"'{source}' holds no approved case with an edit record, so there is nothing to report. Give a case "
            "store (ctv review/ctv node --data DIR) where versions were approved, or a folder of RTSTRUCTs exported "
            f"from Slicer with their {SIDECAR_SUFFIX} files.")
    report = {"ctv_core_version": __version__, "created": dt.datetime.now().isoformat(timespec="seconds"),
              "source": str(source), "approvals": len(records), "models": summarise_edits(records),
              "definitions": records[0].get("definitions", {}),
              "outputs": [REPORT, TABLE, PLOT]}
    with output_set(out_dir, (REPORT, TABLE, PLOT), marker=REPORT, owner="ctv report") as staging:
        _write_table(records, staging / TABLE)
        _plot(records, staging / PLOT)
        (staging / REPORT).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return report


def _write_table(records: Sequence[dict[str, Any]], path: Path) -> None:
    columns = ["model", "recorded", "door", "approved_by", "case", "version", "ai_version", "series_instance_uid",
               *SUMMARISED, "ai_volume_cc", "approved_volume_cc", "unchanged"]
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        for r in records:
            context = r.get("context", {})
            writer.writerow([model_key(r), r["recorded"], r["door"], r["approved_by"], context.get("case", ""),
                             context.get("version", ""), context.get("ai_version", ""), r["ct"]["series_instance_uid"],
                             *(_cell(r, n) for n in SUMMARISED),
                             r["figures"]["ai_volume_cc"], r["figures"]["approved_volume_cc"],
                             r["figures"]["unchanged"]])


def _not_measured(record: dict[str, Any]) -> list[str]:
    """The figures a record could not measure (recorded as None, never counted as infinite)."""
    return list(record["figures"].get("not_measured", []))


def _cell(record: dict[str, Any], name: str) -> Any:
    """A figure for the table: "not measured", "inf" for an infinite HD95, else its value."""
    if name in _not_measured(record):
        return "not measured"
    value = record["figures"][name]
    return "inf" if value is None else value


def _plot(records: Sequence[dict[str, Any]], path: Path) -> None:
    """A box (quartiles, whiskers at 1.5 IQR) and every approval as a point, per figure and model version."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    keys = sorted({model_key(r) for r in records})
    figure = Figure(figsize=(3 * (1.0 + 1.4 * len(keys)), 7.5), dpi=100)
    axes = figure.subplots(2, 3).ravel()
    jitter = np.random.default_rng(0)
    for axis, name in zip(axes, SUMMARISED):
        columns = [[r["figures"][name] for r in records if model_key(r) == key and r["figures"][name] is not None]
                   for key in keys]
        positions = [n + 1 for n, values in enumerate(columns) if values]
        if positions:
            axis.boxplot([v for v in columns if v], positions=positions, widths=0.5, showfliers=False)
        for n, values in enumerate(columns, start=1):
            axis.scatter(n + jitter.uniform(-0.12, 0.12, len(values)), values, s=12, alpha=0.6, color="tab:red",
                         zorder=3)
        axis.set_title(LABELS[name], fontsize=10)
        axis.set_xticks(range(1, len(keys) + 1))
        axis.set_xticklabels([f"{_wrapped(k)}\nn={sum(model_key(r) == k for r in records)}" for k in keys], fontsize=7)
        axis.set_xlim(0.5, len(keys) + 0.5)
    figure.suptitle(f"What clinicians changed in the AI contour ({len(records)} approvals)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path)


def _wrapped(key: str) -> str:
    return key.replace(" (", "\n(")


def _round(value: float) -> float:
    return round(float(value), 4)
