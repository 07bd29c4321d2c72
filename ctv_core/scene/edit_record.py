"""AI versus exported: what the clinician changed in a predicted segment, measured when it is exported as RTSTRUCT.

A prediction's segment carries its provenance as tags (``ModelName``, ``ModelVersion``,
``ModelSHA256``, ``SeriesInstanceUID``, set when the CTV is imported) and, through
:func:`tagPrediction`, the AI mask itself (``PredictionMask``: the voxels on the CT volume's grid,
:mod:`ctv_core.structures.mask_codec`, a few kB), so that the edit can be measured at any later
export, also after the scene was saved and loaded again. At export (:mod:`.rtstruct_export`):
:func:`predictedSegment` reads them back onto the CT's DICOM grid and refuses a segment whose
prediction was made on another CT; :func:`measureEdit` computes the figures of
:func:`ctv_core.evaluation.edits.edit_figures` in a process of its own (their surface distances
need torch, which is never imported into Slicer's process; a few seconds);
:func:`writeEditRecords` writes the records beside the RTSTRUCT. The RTSTRUCT names the model in
each such ROI (:class:`ctv_core.structures.roi_generation.RoiGeneration`: AUTOMATIC as predicted,
SEMIAUTOMATIC once edited).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..dicom.ct_series import CTSeries
from ..errors import EditRecordError
from ..evaluation.edits import AIProvenance, check_same_ct, edit_record, sidecar_path, write_edit_record
from ..geometry import Grid
from ..structures.mask_codec import decode_mask, encode_mask
from ..structures.roi_generation import RoiGeneration
from .conversion import TAG_PREFIX, segmentMask, segmentTag
from .lattice import copyOntoGrid
from .patient_frame import gridOfVolume

#: The segment tag holding the AI mask.
PREDICTION_MASK = "PredictionMask"
#: Where the records say the contour was approved.
DOOR = "slicer-export"
#: Longest wait for the figures (s).
TIMEOUT_S = 600


@dataclass(frozen=True)
class PredictedSegment:
    """A segment that started as a prediction: its name, the AI's provenance, and the AI and exported masks on the
    CT's DICOM grid (uint8 0/1 ``[k, j, i]``, k along the series' slices)."""

    name: str
    provenance: AIProvenance
    ai: np.ndarray
    exported: np.ndarray


def tagPrediction(segmentationNode, segmentId: str, volumeNode) -> None:
    """Keep the AI mask with a segment just made from a prediction (see the module docstring)."""
    mask = segmentMask(segmentationNode, segmentId, gridOfVolume(volumeNode)).array
    segmentationNode.GetSegmentation().GetSegment(segmentId).SetTag(TAG_PREFIX + PREDICTION_MASK, encode_mask(mask))


def predictedSegment(segment, name: str, exported: np.ndarray, volumeGrid: Grid, ct: CTSeries,
                     toCT) -> PredictedSegment | None:
    """The prediction a segment started from, with the exported mask (already on the CT's grid); None when the
    segment carries no prediction.

    Raises
    ------
    EditRecordError
        The prediction was made on another CT (another series, or other voxels).
    """
    text = segmentTag(segment, PREDICTION_MASK)
    if not text or not segmentTag(segment, "ModelName"):
        return None
    provenance = AIProvenance(segmentTag(segment, "ModelName"), segmentTag(segment, "ModelVersion"),
                              segmentTag(segment, "ModelSHA256"), segmentTag(segment, "SeriesInstanceUID"))
    check_same_ct(provenance, ct.reference.series_instance_uid)
    ai = decode_mask(text)
    if ai.shape != volumeGrid.shape:
        raise EditRecordError(
            f"The segment '{name}' was predicted on a CT of {ai.shape[0]} x {ai.shape[1]} x {ai.shape[2]} voxels "
            f"(slices x rows x columns), not on this CT's {volumeGrid.shape[0]} x {volumeGrid.shape[1]} x "
            f"{volumeGrid.shape[2]}: it lies on another CT. Nothing was written; export it with the CT it was "
            "predicted on.")
    onCT, _ = copyOntoGrid(ai, volumeGrid, ct.grid, toCT)
    return PredictedSegment(name, provenance, onCT, np.asarray(exported, np.uint8))


def measureEdit(predicted: PredictedSegment, grid: Grid, python: str) -> dict[str, Any]:
    """The edit figures of a predicted segment, computed by ``python -m ctv_core.evaluation.edit_job``.

    Raises
    ------
    EditRecordError
        The process failed (its message), or did not finish within ``TIMEOUT_S``.
    """
    from ..evaluation.edit_job import AI, APPROVED, ERROR, FIGURES
    from ..structures.mask_files import write_mask

    folder = Path(tempfile.mkdtemp(prefix="CTVDelineation-edits-"))
    try:
        write_mask(grid.image(predicted.ai), folder / AI)
        write_mask(grid.image(predicted.exported), folder / APPROVED)
        try:
            done = subprocess.run([python, "-m", "ctv_core.evaluation.edit_job", str(folder)], capture_output=True,
                                  text=True, timeout=TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EditRecordError(f"The edit of '{predicted.name}' could not be measured ({exc}); nothing was "
                                  "written. Check the module's dependencies, then export again.") from exc
        if (folder / FIGURES).is_file():
            return json.loads((folder / FIGURES).read_text(encoding="utf-8"))
        message = (folder / ERROR).read_text(encoding="utf-8") if (folder / ERROR).is_file() else \
            f"the process ended with status {done.returncode}: {done.stderr.strip()[-300:]}"
        raise EditRecordError(f"The edit of '{predicted.name}' could not be measured ({message}); nothing was "
                              "written.")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def taggedGeneration(segment, unchanged: bool) -> RoiGeneration | None:
    """How the RTSTRUCT labels a segment that names its model in its tags but carries no AI mask (the review
    station's): SEMIAUTOMATIC when its voxels changed since it was loaded or it was loaded as an edit (tag
    ``Edited``), else AUTOMATIC; None when it names no model."""
    name = segmentTag(segment, "ModelName")
    if not name:
        return None
    return RoiGeneration.from_prediction(name, segmentTag(segment, "ModelVersion"), segmentTag(segment, "ModelSHA256"),
                                         segmentTag(segment, "SeriesInstanceUID"),
                                         edited=not unchanged or segmentTag(segment, "Edited") == "1")


def generationOf(predicted: PredictedSegment, figures: dict[str, Any]) -> RoiGeneration:
    """How the RTSTRUCT labels the ROI: AUTOMATIC as predicted, SEMIAUTOMATIC once edited, the model named."""
    ai = predicted.provenance
    return RoiGeneration.from_prediction(ai.model_name, ai.model_version, ai.model_sha256, ai.series_instance_uid,
                                         edited=not figures["unchanged"])


def writeEditRecords(edits: list[tuple[PredictedSegment, dict[str, Any]]], ct: CTSeries, rtstruct: Path) -> list[Path]:
    """Write each measured edit's record beside the RTSTRUCT (``X.ai-edits.json``; ``X.<ROI>.ai-edits.json`` when
    several ROIs started as predictions); returns the files."""
    written = []
    for predicted, figures in edits:
        record = edit_record(predicted.provenance, figures, door=DOOR, approved_ct=ct.reference, roi=predicted.name,
                             context={"rtstruct": rtstruct.name})
        path = sidecar_path(rtstruct if len(edits) == 1 else rtstruct.with_name(f"{rtstruct.stem}.{_safe(predicted.name)}"
                                                                              f"{rtstruct.suffix}"))
        written.append(write_edit_record(record, path))
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
