"""What a clinician changed in an AI contour before approving it: the edit figures and the record that keeps them.

The AI mask A is the contour as the model made it; the approved mask B is the contour the
clinician approved or exported. Both lie on the grid of the CT the prediction was made on (LPS,
indexed ``[k, j, i]``); a B on another CT is refused (:func:`check_same_ct` by UIDs, :func:`edit_figures` by grid).

Figures (:data:`FIGURE_KEYS`), A taken as the prediction and B as the reference of
:mod:`.metrics` (the one definition of each):

* ``dice``, ``hd95_mm`` (mm) and ``surface_dice_2mm`` (surface Dice at a 2 mm tolerance) from
  :func:`.metrics.compute_metrics`;
* ``added_cc``: the volume inside B but not A (the clinician drew it), ``removed_cc``: inside A but
  not B (the clinician erased it), in cc (cm³): voxel count x voxel volume;
* ``slices_touched``: how many CT slices hold at least one voxel where A and B differ. A slice is
  an index k along the series' normal, the slices in the order of the series
  (``CTReference.slices``), i.e. the axial images the clinician scrolls through;
  ``slices_with_ctv`` counts the slices where A or B has a voxel (what "touched" is out of);
* ``ai_volume_cc`` and ``approved_volume_cc``; ``unchanged`` (A equals B voxel for voxel).

A record (:func:`edit_record`) is one approval: the AI's provenance (model name, version,
SHA-256 fingerprint, the input CT series), where and by whom the contour was approved, and the
figures. It is written as JSON beside the approved RTSTRUCT (:func:`write_edit_record`, the
RTSTRUCT's name with :data:`SIDECAR_SUFFIX`), and the case store keeps a copy in its index.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .._version import __version__
from ..atomic_files import atomic_file
from ..dicom.ct_series import CTReference
from ..errors import EditRecordError, MissingDependencyError
from ..geometry import Grid
from .metrics import GRID_TOLERANCE_MM, compute_metrics, dice, volume_cc

#: Tolerance of the surface Dice among the edit figures (mm).
SURFACE_DICE_TOLERANCE_MM = 2.0
#: The edit figures, in order (see the module docstring).
FIGURE_KEYS = ("dice", "hd95_mm", "surface_dice_2mm", "added_cc", "removed_cc", "slices_touched",
               "slices_with_ctv", "ai_volume_cc", "approved_volume_cc", "unchanged", "not_measured")
#: The figures that need surface distances (MONAI, with PyTorch: the extra ``ctv_core[torch]``). Where
#: MONAI is not installed (Slicer's CPU install has OpenVINO, not PyTorch) they are recorded as None
#: and named in ``not_measured``; every other figure needs NumPy alone.
SURFACE_FIGURES = ("hd95_mm", "surface_dice_2mm")
#: The figures a report summarises and plots (numbers with a distribution).
SUMMARISED = ("dice", "hd95_mm", "surface_dice_2mm", "added_cc", "removed_cc", "slices_touched")
#: What a record file says it is.
RECORD_FORMAT = "ctv-edit-record/1"
#: A record written beside an RTSTRUCT ``X.dcm`` is ``X.ai-edits.json``.
SIDECAR_SUFFIX = ".ai-edits.json"


@dataclass(frozen=True)
class AIProvenance:
    """Where an AI contour came from: the model (name, version, SHA-256 fingerprint of everything that decides its
    output) and the CT series it was computed on (UIDs; '' where unknown)."""

    model_name: str
    model_version: str
    model_sha256: str
    series_instance_uid: str
    frame_of_reference_uid: str = ""
    study_instance_uid: str = ""

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> AIProvenance:
        """The provenance in a ``ctv predict`` report.json (``model`` and ``input`` entries).

        Raises
        ------
        EditRecordError
            The report names no model (it is not a prediction's).
        """
        model, given = report.get("model") or {}, report.get("input") or {}
        if not model.get("name"):
            raise EditRecordError("The report names no model, so it is not a prediction's report; the AI contour's "
                                  "provenance is the report.json of the prediction the contour started from.")
        return cls(str(model.get("name", "")), str(model.get("version", "")), str(model.get("sha256", "")),
                   str(given.get("series_instance_uid", "")), str(given.get("frame_of_reference_uid", "")),
                   str(given.get("study_instance_uid", "")))

    @property
    def model_id(self) -> str:
        """Name and version, as generated structures name the model."""
        return f"{self.model_name} {self.model_version}".strip()

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def check_same_ct(ai: AIProvenance, series_instance_uid: str, frame_of_reference_uid: str = "") -> None:
    """Refuse an approved contour on another CT than the one the AI contour was computed on.

    ``series_instance_uid`` and ``frame_of_reference_uid``: the CT the approved contour lies on.
    Only UIDs known on both sides are compared ('' is unknown).

    Raises
    ------
    EditRecordError
        Another series or frame of reference: the edit cannot be measured (and the contour may be on the wrong CT).
    """
    problems = []
    if ai.series_instance_uid and series_instance_uid and ai.series_instance_uid != series_instance_uid:
        problems.append(f"series {series_instance_uid}, the AI contour's is {ai.series_instance_uid}")
    if ai.frame_of_reference_uid and frame_of_reference_uid and ai.frame_of_reference_uid != frame_of_reference_uid:
        problems.append(f"frame of reference {frame_of_reference_uid}, the AI contour's is "
                        f"{ai.frame_of_reference_uid}")
    if problems:
        raise EditRecordError(
            f"The approved contour lies on another CT than the AI contour it is said to start from ({'; '.join(problems)}). "
            "The edit cannot be measured and nothing was recorded: approve or export the contour on the CT the "
            "prediction was made on, or predict again on this CT.")


def edit_figures(ai: sitk.Image, approved: sitk.Image) -> dict[str, float | int | bool]:
    """The edit figures (:data:`FIGURE_KEYS`, see the module docstring) from the AI mask to the approved mask.

    Parameters
    ----------
    ai, approved
        Masks on one CT grid (non-zero = inside), axis k being the CT's slice axis.

    Raises
    ------
    EditRecordError
        The masks are not on one grid (the approved contour was drawn on another CT or resampled).
    """
    ai_grid, approved_grid = Grid.of_image(ai), Grid.of_image(approved)
    if not ai_grid.matches(approved_grid, tolerance_mm=GRID_TOLERANCE_MM):
        raise EditRecordError(
            "The approved contour is not on the voxels of the CT the AI contour was computed on (approved vs AI: "
            f"{'; '.join(approved_grid.differences(ai_grid, GRID_TOLERANCE_MM))}). The edit cannot be measured and "
            "nothing was recorded: approve or export the contour on the CT the prediction was made on.")
    a = sitk.GetArrayViewFromImage(ai) != 0
    b = sitk.GetArrayViewFromImage(approved) != 0
    spacing = approved_grid.spacing
    try:
        metrics = compute_metrics(a, b, spacing, approved_grid.direction, tolerance_mm=SURFACE_DICE_TOLERANCE_MM)
        surface, not_measured = {"hd95_mm": metrics["hd95_mm"], "surface_dice_2mm": metrics["surface_dice"]}, []
    except MissingDependencyError:
        surface, not_measured = dict.fromkeys(SURFACE_FIGURES), list(SURFACE_FIGURES)
    differs = (a != b).reshape(a.shape[0], -1).any(axis=1)
    present = (a | b).reshape(a.shape[0], -1).any(axis=1)
    figures = {
        "dice": dice(a, b),
        **surface,
        "added_cc": volume_cc(b & ~a, spacing),
        "removed_cc": volume_cc(a & ~b, spacing),
        "slices_touched": int(np.count_nonzero(differs)),
        "slices_with_ctv": int(np.count_nonzero(present)),
        "ai_volume_cc": volume_cc(a, spacing),
        "approved_volume_cc": volume_cc(b, spacing),
        "unchanged": not bool(differs.any()),
        "not_measured": not_measured,
    }
    return {key: figures[key] for key in FIGURE_KEYS}


def edit_record(ai: AIProvenance, figures: Mapping[str, Any], *, door: str, approved_ct: CTReference,
                approved_by: str = "", roi: str = "CTV", context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One approval as a JSON-ready record (see the module docstring).

    ``door``: where it was approved (``review-station``, ``slicer-export``); ``context``: what the
    door knows besides (case id, versions, the RTSTRUCT's file name).
    """
    return {
        "format": RECORD_FORMAT,
        "ctv_core_version": __version__,
        "recorded": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "door": door,
        "approved_by": approved_by,
        "roi": roi,
        "ct": {"series_instance_uid": approved_ct.series_instance_uid,
               "frame_of_reference_uid": approved_ct.frame_of_reference_uid,
               "study_instance_uid": approved_ct.study_instance_uid},
        "ai": ai.as_dict(),
        "figures": {key: _plain(figures[key]) for key in FIGURE_KEYS},
        "definitions": {"slices_touched": "CT slices (index along the series' normal) where the AI and the approved "
                                          "contour differ in at least one voxel",
                        "volumes": "cc", "distances": "mm",
                        "surface_dice_2mm": f"surface Dice at {SURFACE_DICE_TOLERANCE_MM:g} mm"},
        **({"context": dict(context)} if context else {}),
    }


def sidecar_path(rtstruct: str | Path) -> Path:
    """Where the record of an approved RTSTRUCT goes: beside it, ``X.dcm`` -> ``X.ai-edits.json``."""
    rtstruct = Path(rtstruct)
    return rtstruct.with_name(rtstruct.stem + SIDECAR_SUFFIX)


def write_edit_record(record: Mapping[str, Any], path: str | Path) -> Path:
    """Write a record as JSON (temporary name, then rename: never half-written)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return Path(path)


def read_edit_record(path: str | Path) -> dict[str, Any]:
    """A record file read back and checked to be one.

    Raises
    ------
    EditRecordError
        Not JSON, or not an edit record (the message names the file).
    """
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EditRecordError(f"The edit record '{path}' cannot be read ({exc}); remove or restore it.") from exc
    if not is_edit_record(record):
        raise EditRecordError(f"'{path}' is not an edit record of this ctv_core ({RECORD_FORMAT}); remove or restore "
                              "it.")
    return record


def is_edit_record(record: Any) -> bool:
    """Whether ``record`` is an edit record of this format: an object with every figure, the AI's provenance and the
    CT the approved contour lies on (objects of strings)."""
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return False
    figures, ai, ct = record.get("figures"), record.get("ai"), record.get("ct")
    return (isinstance(figures, dict) and all(key in figures for key in FIGURE_KEYS)
            and all(isinstance(part, dict) and all(isinstance(v, str) for v in part.values()) for part in (ai, ct)))


def _plain(value: Any) -> Any:
    """A figure as JSON takes it: an infinite distance (one mask empty) as None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):  # the names of figures not measured
        return [str(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return round(value, 4) if np.isfinite(value) else None
