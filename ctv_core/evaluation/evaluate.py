"""Evaluation of predicted against reference structures: per case, summarised, across folds, ``ctv evaluate``.

The metrics and their exact definitions (surfaces, percentiles, weighting, empty masks) are in
:mod:`.metrics`, the summaries and files in :mod:`.summary`, which files make a case in
:mod:`.case_files`; this module runs the metrics case by case and writes the results:

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
  ``ref_file``, a path inside the subfolder; of several, those ``ctv predict`` and ``ctv
  phantom`` write are taken by the rule of :data:`.case_files.PREFERRED_FILES`); cases are matched by name and every case must be
  in both folders. With ``ct_dir``, the CT of a case is the folder ``ct_dir/<case>`` (searched
  recursively, so a phantom's folder will do).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from ..errors import EvaluationError
from .case_files import case_name, check_matching, find_cases, load_case_ct, read_one_structure, structure_file
from .metrics import METRIC_KEYS, compute_metrics
from .summary import SUMMARY_COLUMNS, plot_metrics, summarise, write_rows_csv

logger = logging.getLogger(__name__)


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
        Path of the structure file inside each case subfolder, when a subfolder holds several
        (without them, :data:`.case_files.PREFERRED_FILES` decides).
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
        case = case_name(reference)
        ct_root = Path(ct_dir) if ct_dir is not None else None
        cases = [(case, prediction, reference, ct_root)]
    elif prediction.is_dir() and reference.is_dir():
        pred_cases, ref_cases = find_cases(prediction), find_cases(reference)
        check_matching(pred_cases, ref_cases, prediction, reference)
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
            with_ct = case_ct is not None
            pred_path = structure_file(pred_path, pred_file, "prediction", case, "--pred-file", with_ct)
            ref_path = structure_file(ref_path, ref_file, "reference", case, "--ref-file", with_ct)
            ct = load_case_ct(case, case_ct, (pred_path, ref_path))
            pred_mask = read_one_structure(pred_path, ct, pred_roi, "prediction", "--pred-roi")
            ref_mask = read_one_structure(ref_path, ct, roi, "reference", "--roi")
            yield case, pred_mask, ref_mask

    def done(count: int) -> None:
        if progress is not None:
            progress(count, total)

    return evaluate_pairs(load(), out_dir, tolerance_mm=tolerance_mm, progress=done)


def _check_tolerance(tolerance_mm: float) -> None:
    if not (isinstance(tolerance_mm, (int, float)) and math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise EvaluationError(f"The surface Dice tolerance must be a distance >= 0 mm, got {tolerance_mm!r}.")


