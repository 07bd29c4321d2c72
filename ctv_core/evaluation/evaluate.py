"""Evaluation of predicted against reference structures: per case, summarised, across folds, ``ctv evaluate``.

The metrics and their exact definitions (surfaces, percentiles, weighting, empty masks) are in
``metrics.py``; this module reads the structures, runs the metrics case by case, summarises
them and writes the results:

* ``per_case.csv``: one row per case, columns ``case`` then ``metrics.METRIC_KEYS``;
* ``summary.csv``: one row per metric, columns ``SUMMARY_COLUMNS`` (``n``, ``n_infinite``,
  ``mean``, ``sd`` (sample standard deviation, ddof = 1), ``median``, ``min``, ``max``);
* ``metrics.png``: a box plot with every case as a dot for each of ``PLOTTED_METRICS``.

Each file is written under a temporary name and renamed, and only once every case has been
evaluated: a failing case leaves no partial results. Numbers are written with full precision;
``inf`` marks a distance to a missing structure (see ``metrics``), and a summary with an
infinite value has ``mean`` inf (or NaN for a mix of signs) and ``sd`` NaN, so that a missed
case can never vanish from an average.

Inputs of ``ctv evaluate`` / ``evaluate_folder``:

* two files (one case): each a mask image (NIfTI, NRRD, MetaImage; non-zero = inside) or a
  DICOM RTSTRUCT or SEG; DICOM needs the CT (``ct_dir``), onto which both are read;
* two folders of cases: a case is a structure file (``<case>.nii.gz``, ``<case>.dcm``, ...) or a
  subfolder ``<case>/`` holding one structure file (or the one named by ``pred_file`` /
  ``ref_file``, a path inside the subfolder); cases are matched by name and every case must be
  in both folders. With ``ct_dir``, the CT of a case is the folder ``ct_dir/<case>`` (searched
  recursively, so a phantom's folder will do).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..atomic_files import atomic_file
from .metrics import METRIC_KEYS, EvaluationError, compute_metrics
from ..cli.progress import StageBars

logger = logging.getLogger(__name__)

__all__ = [
    "EvaluationError",
    "EvaluationResult",
    "PLOTTED_METRICS",
    "SUMMARISED_METRICS",
    "SUMMARY_COLUMNS",
    "add_evaluate_command",
    "evaluate_case",
    "evaluate_folder",
    "evaluate_pairs",
    "find_cases",
    "plot_metrics",
    "summarise",
    "summarise_folds",
    "write_rows_csv",
]

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
#: File endings of structure files in case folders.
STRUCTURE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm")


@dataclass
class EvaluationResult:
    """What an evaluation computed and wrote.

    Attributes
    ----------
    rows
        One dict per case: ``case`` then ``metrics.METRIC_KEYS``.
    summary
        One dict per metric with ``SUMMARY_COLUMNS``.
    files
        ``per_case``, ``summary`` and ``plot`` paths.
    """

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)


def evaluate_case(prediction: sitk.Image, reference: sitk.Image, tolerance_mm: float = 3.0) -> dict[str, float]:
    """All metrics and volumes of a predicted against a reference mask on the same grid.

    See ``metrics.compute_metrics`` for the keys and ``metrics`` for the definitions.

    Raises
    ------
    EvaluationError
        When the masks are on different grids (the message names each difference) or the
        tolerance is negative.
    """
    _check_tolerance(tolerance_mm)
    return compute_metrics(prediction, reference, tolerance_mm=tolerance_mm)


def evaluate_pairs(
    pairs: Iterable[tuple[str, sitk.Image, sitk.Image]],
    out_dir: str | Path,
    *,
    tolerance_mm: float = 3.0,
    progress: Callable[[int], None] | None = None,
) -> EvaluationResult:
    """Evaluate ``(case, prediction, reference)`` triples and write the results into ``out_dir``.

    ``pairs`` may be a generator that loads each case when asked, so that only one case is in
    memory at a time. ``progress(done)`` is called after each case. Writes ``per_case.csv``,
    ``summary.csv`` and ``metrics.png`` (see the module docstring) once every case is done.

    Raises
    ------
    EvaluationError
        No case, a case name given twice, masks on different grids.
    """
    _check_tolerance(tolerance_mm)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for case, prediction, reference in pairs:
        case = str(case)
        if case in seen:
            raise EvaluationError(f"Case '{case}' is given twice; give every case once, under a unique name.")
        seen.add(case)
        try:
            metrics = evaluate_case(prediction, reference, tolerance_mm)
        except EvaluationError as exc:
            raise EvaluationError(f"Case '{case}': {exc}") from exc
        logger.info("case %s: Dice %.4f, HD95 %.2f mm, MSD %.2f mm, surface Dice %.4f", case, metrics["dice"],
                    metrics["hd95_mm"], metrics["msd_mm"], metrics["surface_dice"])
        rows.append({"case": case, **metrics})
        if progress is not None:
            progress(len(rows))
    if not rows:
        raise EvaluationError("There was no case to evaluate; give at least one prediction and reference pair.")
    summary = summarise(rows)
    out_dir = Path(out_dir)
    files = {
        "per_case": write_rows_csv(rows, out_dir / "per_case.csv", ("case", *METRIC_KEYS)),
        "summary": write_rows_csv(summary, out_dir / "summary.csv", SUMMARY_COLUMNS),
        "plot": plot_metrics(rows, out_dir / "metrics.png"),
    }
    return EvaluationResult(rows=rows, summary=summary, files=files)


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


def find_cases(folder: str | Path) -> dict[str, Path]:
    """Cases in a folder: ``{name: path}`` for each structure file (name without its ending) and subfolder.

    Hidden entries and files with other endings are ignored.

    Raises
    ------
    EvaluationError
        Not a folder, or one name given both as a file and as a subfolder (or by two files).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"'{folder}' is not a folder of cases.")
    cases: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            name = entry.name
        elif _structure_suffix(entry.name):
            name = entry.name[: -len(_structure_suffix(entry.name))]
        else:
            logger.debug("ignored %s: not a structure file or case folder", entry)
            continue
        if name in cases:
            raise EvaluationError(
                f"Case '{name}' appears twice in '{folder}' ({cases[name].name} and {entry.name}); keep one."
            )
        cases[name] = entry
    return cases


def evaluate_folder(
    prediction: str | Path,
    reference: str | Path,
    out_dir: str | Path,
    *,
    ct_dir: str | Path | None = None,
    roi: str | None = None,
    pred_roi: str | None = None,
    pred_file: str | None = None,
    ref_file: str | None = None,
    tolerance_mm: float = 3.0,
    progress: Callable[[int, int], None] | None = None,
) -> EvaluationResult:
    """Evaluate predicted against reference structures given as two files or two folders of cases.

    Parameters
    ----------
    prediction, reference
        Two structure files (one case, named after the reference file) or two folders of cases
        (see the module docstring).
    out_dir
        Folder for ``per_case.csv``, ``summary.csv`` and ``metrics.png`` (created if needed).
    ct_dir
        The CT folder (files) or the folder of per-case CT folders (folders). Needed for DICOM
        RTSTRUCT/SEG; when given, every structure (mask files too) is read onto the CT's grid.
    roi, pred_roi
        ROI name or pattern in the reference and in the prediction (``pred_roi`` defaults to
        ``roi``); needed when a DICOM file holds several ROIs. For mask files, only a label.
    pred_file, ref_file
        Path of the structure file inside each case subfolder, when a subfolder holds several.
    tolerance_mm
        Surface Dice tolerance.
    progress
        Called as ``progress(done, total)`` after each case.

    Raises
    ------
    EvaluationError
        Unmatched case names, a file and a folder mixed, ambiguous or missing structure files,
        a structure file holding several ROIs without ``roi``, a missing CT, masks on different
        grids. ``ROINotFoundError`` (and the other DICOM errors of ctv_core) pass through.
    """
    _check_tolerance(tolerance_mm)
    prediction, reference = Path(prediction), Path(reference)
    for role, path in (("prediction", prediction), ("reference", reference)):
        if not path.exists():
            raise EvaluationError(f"The {role} '{path}' does not exist; give a structure file or a folder of cases.")
    pred_roi = pred_roi if pred_roi is not None else roi
    if prediction.is_file() and reference.is_file():
        case = _case_name(reference)
        ct_root = Path(ct_dir) if ct_dir is not None else None
        cases = [(case, prediction, reference, ct_root)]
    elif prediction.is_dir() and reference.is_dir():
        pred_cases, ref_cases = find_cases(prediction), find_cases(reference)
        _check_matching(pred_cases, ref_cases, prediction, reference)
        cases = [
            (name, pred_cases[name], ref_cases[name], Path(ct_dir) / name if ct_dir is not None else None)
            for name in sorted(ref_cases)
        ]
    else:
        raise EvaluationError(
            f"Give two files (one case) or two folders of cases; got the prediction as a "
            f"{'file' if prediction.is_file() else 'folder'} and the reference as a "
            f"{'file' if reference.is_file() else 'folder'}."
        )
    total = len(cases)

    def load():
        for case, pred_path, ref_path, case_ct in cases:
            pred_path = _structure_file(pred_path, pred_file, "prediction", case, "--pred-file")
            ref_path = _structure_file(ref_path, ref_file, "reference", case, "--ref-file")
            ct = _load_case_ct(case, case_ct, (pred_path, ref_path))
            pred_mask = _read_one_structure(pred_path, ct, pred_roi, "prediction", "--pred-roi")
            ref_mask = _read_one_structure(ref_path, ct, roi, "reference", "--roi")
            yield case, pred_mask, ref_mask

    def done(count: int) -> None:
        if progress is not None:
            progress(count, total)

    return evaluate_pairs(load(), out_dir, tolerance_mm=tolerance_mm, progress=done)


def add_evaluate_command(sub, common) -> None:
    """Register ``ctv evaluate`` on the ``ctv`` subparsers ``sub`` (``common``: the shared -v/-q parser)."""
    import argparse

    p = sub.add_parser(
        "evaluate",
        parents=[common],
        help="metrics of predicted against reference structures (Dice, HD95, MSD, surface Dice, volumes)",
        description=(
            "Compare predicted with reference structures: two structure files (one case), or two folders of "
            "cases matched by name (a case is <case>.nii.gz / <case>.dcm / ... or a subfolder <case>/ holding one "
            "structure file). Writes OUT_DIR/per_case.csv, summary.csv and metrics.png. Metric definitions: "
            "ctv_core/metrics.py."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("prediction", type=Path, metavar="PRED", help="predicted structure file, or folder of cases")
    p.add_argument("reference", type=Path, metavar="REF", help="reference structure file, or folder of cases")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder for the results (created if needed)")
    p.add_argument("--ct", type=Path, default=None, metavar="CT_DIR",
                   help="CT folder (files), or folder of per-case CT folders CT_DIR/<case> (folders); needed for "
                        "RTSTRUCT/SEG, and then every structure is read onto the CT")
    p.add_argument("--roi", default=None, metavar="NAME", help="ROI name or pattern in the reference (and prediction)")
    p.add_argument("--pred-roi", default=None, metavar="NAME", help="ROI name or pattern in the prediction, if other")
    p.add_argument("--pred-file", default=None, metavar="PATH",
                   help="structure file inside each prediction case folder, e.g. rtstruct.dcm")
    p.add_argument("--ref-file", default=None, metavar="PATH",
                   help="structure file inside each reference case folder, e.g. truth.dcm")
    p.add_argument("--tolerance", type=float, default=3.0, metavar="MM", help="surface Dice tolerance in mm")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    with StageBars(args.quiet, {"evaluating": "case"}) as bars:
        result = evaluate_folder(args.prediction, args.reference, args.out_dir, ct_dir=args.ct, roi=args.roi,
                                 pred_roi=args.pred_roi, pred_file=args.pred_file, ref_file=args.ref_file,
                                 tolerance_mm=args.tolerance,
                                 progress=lambda done, total: bars("evaluating", done, total))
    print(f"{len(result.rows)} case(s) evaluated (surface Dice at {args.tolerance:g} mm)")
    for row in result.summary:
        if row["metric"] in PLOTTED_METRICS:
            print(f"  {row['metric']:20s} mean {row['mean']:.4g} ± {row['sd']:.3g}, median {row['median']:.4g} "
                  f"[{row['min']:.4g}, {row['max']:.4g}]")
    for key, path in result.files.items():
        print(f"  {key:8s} {path}")
    return 0


def _check_tolerance(tolerance_mm: float) -> None:
    if not (isinstance(tolerance_mm, (int, float)) and math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise EvaluationError(f"The surface Dice tolerance must be a distance >= 0 mm, got {tolerance_mm!r}.")


def _check_matching(pred_cases: dict[str, Path], ref_cases: dict[str, Path], pred_dir: Path, ref_dir: Path) -> None:
    only_pred = sorted(set(pred_cases) - set(ref_cases))
    only_ref = sorted(set(ref_cases) - set(pred_cases))
    if not only_pred and not only_ref:
        if not ref_cases:
            raise EvaluationError(
                f"'{ref_dir}' holds no case (no structure file {', '.join(STRUCTURE_SUFFIXES)} and no subfolder)."
            )
        return
    parts = []
    if only_ref:
        parts.append(f"no prediction in '{pred_dir}' for {_names(only_ref)}")
    if only_pred:
        parts.append(f"no reference in '{ref_dir}' for {_names(only_pred)}")
    raise EvaluationError(
        f"The case names do not match: {'; '.join(parts)}. Cases are matched by file or folder name; rename them "
        "to match, or evaluate folders that hold the same cases."
    )


def _names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _structure_suffix(name: str) -> str:
    lower = name.lower()
    return next((s for s in STRUCTURE_SUFFIXES if lower.endswith(s)), "")


def _case_name(path: Path) -> str:
    suffix = _structure_suffix(path.name)
    return path.name[: -len(suffix)] if suffix else path.name


def _structure_file(path: Path, inner: str | None, role: str, case: str, option: str) -> Path:
    """The structure file of a case entry: the file itself, or the one inside its subfolder."""
    if path.is_file():
        return path
    if inner is not None:
        chosen = path / inner
        if not chosen.is_file():
            raise EvaluationError(f"Case '{case}': the {role} folder '{path}' has no file '{inner}'; check {option}.")
        return chosen
    found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and _structure_suffix(p.name))
    if len(found) == 1:
        return found[0]
    if not found:
        raise EvaluationError(
            f"Case '{case}': the {role} folder '{path}' holds no structure file ({', '.join(STRUCTURE_SUFFIXES)}) "
            f"at its top level; put one there or name it with {option}."
        )
    raise EvaluationError(
        f"Case '{case}': the {role} folder '{path}' holds several structure files ({', '.join(p.name for p in found)}); "
        f"name the one to use with {option}."
    )


def _load_case_ct(case: str, ct_path: Path | None, structure_files: tuple[Path, ...]):
    from ..structures.mask_files import is_mask_file

    if ct_path is None:
        dicom = [p for p in structure_files if not is_mask_file(p)]
        if dicom:
            raise EvaluationError(
                f"Case '{case}': '{dicom[0]}' is not a mask image, so it is read as DICOM RTSTRUCT/SEG, which needs "
                "the CT it was drawn on: give --ct CT_DIR (for folders of cases, CT_DIR/<case> is each case's CT)."
            )
        return None
    if not ct_path.is_dir():
        raise EvaluationError(f"Case '{case}': there is no CT folder '{ct_path}'; check --ct.")
    from ..dicom.series import load_ct_series

    return load_ct_series(ct_path)


def _read_one_structure(path: Path, ct, roi: str | None, role: str, option: str) -> sitk.Image:
    """One mask from a structure file: onto ``ct`` when given, else a mask image as it is."""
    if ct is not None:
        from ..structures.convert import read_structures

        masks = read_structures(path, ct, roi=roi)
        if len(masks) != 1:
            raise EvaluationError(
                f"The {role} '{path}' holds {len(masks)} structures ({', '.join(masks)}); choose one with {option} NAME."
            )
        return next(iter(masks.values()))
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise EvaluationError(f"The {role} '{path}' cannot be read as a mask image ({exc}).") from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise EvaluationError(
            f"The {role} '{path}' is a {image.GetDimension()}D image with {image.GetNumberOfComponentsPerPixel()} "
            "component(s); a mask is 3D with one component."
        )
    return sitk.Cast(image != 0, sitk.sitkUInt8)


def _cell(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return value
