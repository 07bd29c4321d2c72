"""RTSTRUCT export of a segmentation onto the CT's own DICOM series, as the clinician left it.

The structure set references the CT the clinician contoured on, never a copy with new UIDs:
the CT's DICOM files come from a folder the user names, or from a :class:`DicomFileSource` (Slicer's
DICOM database, which the module's Logic hands in) through the volume's ``DICOM.instanceUIDs``
attribute, and are loaded with ctv_core's loader. Before
anything is written the export checks that this series is the volume in the scene (same
instances, same voxels) and that every segment lies on its voxels; then every non-empty segment
is written with ctv_core's writer from its current labelmap (edits included), segments whose
terminology is the CTV typed CTV. A segment that started as a prediction is measured against it
(:mod:`.edit_record`): the RTSTRUCT names the model in that ROI, and the record of what was changed
goes beside it (``X.ai-edits.json``). A CT that did not come from DICOM, a segmentation drawn on
another image, or a prediction made on another CT is refused with a message saying what to do.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import SimpleITK as sitk
import slicer

from ..dicom.ct_series import CTSeries
from ..errors import GridMismatchError, SeriesNotFoundError, StructureSetError
from ..structures.roi_generation import RoiGeneration
from .conversion import maskFingerprint, requireUntransformed, segmentMask, segmentTag, volumeToImage
from .edit_record import (PredictedSegment, generationOf, measureEdit, predictedSegment, taggedGeneration,
                          writeEditRecords)
from .lattice import copyOntoGrid, isSameLattice, latticeMap
from .patient_frame import gridOfVolume

#: Label and description of the exported structure set (the planning system shows them).
LABEL = "CTV_SLICER"
DESCRIPTION = "CTV delineation exported from 3D Slicer (unapproved)"


class DicomFileSource(Protocol):
    """Where the CT's DICOM files are, by SOPInstanceUID: Slicer's DICOM database in the application (the
    module's ``Logic/DicomDatabase.py``); a folder's files in tests."""

    def fileForInstance(self, sopInstanceUID: str) -> str:
        """The file of a DICOM instance ('' when unknown)."""


@dataclass(frozen=True)
class ExportResult:
    """What was written: the file, the ROIs in order, the CT series referenced, the generation
    description (None when segments were edited or drawn by hand) and what the user should know."""

    path: Path
    rois: list[str]
    seriesInstanceUID: str
    algorithm: str | None
    warnings: list[str] = field(default_factory=list)
    #: The records of what was changed in segments that started as predictions (:mod:`.edit_record`).
    editRecords: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """What the user is told after the export."""
        return "\n".join([f"RTSTRUCT written to {self.path}", f"ROIs: {', '.join(self.rois)}",
                          f"On the CT series {self.seriesInstanceUID}",
                          "Status UNAPPROVED: approve it in the planning system.",
                          *(f"What was changed in the AI contour: {p}" for p in self.editRecords), *self.warnings])


def seriesInstanceUID(volumeNode) -> str:
    """The SeriesInstanceUID Slicer's DICOM module recorded for a volume ('' when it has none)."""
    scene = volumeNode.GetScene()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene) if scene else None
    if hierarchy is None:
        return ""
    item = hierarchy.GetItemByDataNode(volumeNode)
    return hierarchy.GetItemUID(item, "DICOM") if item else ""


def instanceUIDs(volumeNode) -> list[str]:
    """The SOPInstanceUIDs of the files a volume was loaded from (its ``DICOM.instanceUIDs`` attribute)."""
    return (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split()


def markDicomSeries(volumeNode, seriesInstanceUID: str, sopInstanceUIDs) -> None:
    """Record a volume's DICOM origin as Slicer's DICOM module does (the ``DICOM.instanceUIDs`` attribute and the
    series UID on its subject hierarchy item), for a volume built from a series loaded some other way (the
    review station loads it with ctv_core); :func:`instanceUIDs` and :func:`seriesInstanceUID` read them."""
    volumeNode.SetAttribute("DICOM.instanceUIDs", " ".join(sopInstanceUIDs))
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(volumeNode.GetScene())
    item = hierarchy.GetItemByDataNode(volumeNode) or hierarchy.CreateItem(hierarchy.GetSceneItemID(), volumeNode)
    hierarchy.SetItemUID(item, "DICOM", seriesInstanceUID)


def _loadFromDatabase(volumeNode, uids: list[str], files: DicomFileSource | None) -> CTSeries:
    from ..dicom.series import load_ct_series

    if files is None:
        raise StructureSetError(
            f"No DICOM database is at hand to find the files of '{volumeNode.GetName()}'. Choose the folder that "
            "holds its DICOM files.")
    paths = [files.fileForInstance(uid) for uid in uids]
    missing = [uid for uid, path in zip(uids, paths) if not path or not os.path.isfile(path)]
    if missing:
        raise StructureSetError(
            f"{len(missing)} of the {len(uids)} DICOM files of '{volumeNode.GetName()}' are not in Slicer's DICOM "
            "database any more. Import the CT into the DICOM database again, or choose the folder that holds its "
            "DICOM files.")
    folder = Path(tempfile.mkdtemp(prefix="CTVDelineation-ct-"))
    try:
        for n, path in enumerate(paths):
            link = folder / f"{n:05d}.dcm"
            try:
                os.symlink(path, link)
            except OSError:  # no symlinks (Windows without the privilege): copy
                shutil.copyfile(path, link)
        return load_ct_series(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def loadDicomCT(volumeNode, ctFolder: str | Path | None, files: DicomFileSource | None) -> CTSeries:
    """The CT series of ``volumeNode`` loaded from DICOM, checked to be the very image in the scene.

    Raises
    ------
    StructureSetError
        The volume did not come from DICOM and no folder was given, its files are gone, or the
        folder holds another series.
    GridMismatchError
        The series and the volume do not have the same voxels.
    """
    from ..dicom.series import load_ct_series  # pydicom: imported when needed, so that the module
    # loads (and can offer to install its dependencies) in a Slicer whose pydicom is missing or old

    uids = instanceUIDs(volumeNode)
    if ctFolder:
        series = seriesInstanceUID(volumeNode)
        try:
            ct = load_ct_series(ctFolder, series_uid=series or None)
        except SeriesNotFoundError as exc:
            raise StructureSetError(f"The folder '{ctFolder}' does not hold the CT '{volumeNode.GetName()}' (series "
                                    f"{series}). Choose the folder of this CT's DICOM files. {exc}") from exc
    elif uids:
        ct = _loadFromDatabase(volumeNode, uids, files)
    else:
        raise StructureSetError(
            f"'{volumeNode.GetName()}' was not loaded from DICOM (it has no DICOM instance UIDs), so an RTSTRUCT "
            "cannot reference it. Load the CT through Slicer's DICOM module, or choose the folder holding its DICOM "
            "files.")
    if uids and set(uids) != set(ct.reference.sop_instance_uids):
        raise StructureSetError(
            f"The DICOM series found ({ct.reference.series_instance_uid}, {len(ct.reference.slices)} slices) is not "
            f"the CT '{volumeNode.GetName()}' in the scene ({len(uids)} slices, other instance UIDs). Choose the "
            "folder of this CT's DICOM files.")
    volumeGrid = gridOfVolume(volumeNode)
    if not isSameLattice(volumeGrid, ct.grid, latticeMap(volumeGrid, ct.grid)):
        raise GridMismatchError(
            f"The CT '{volumeNode.GetName()}' in the scene does not have the voxels of its DICOM series (scene vs "
            f"DICOM: {'; '.join(volumeGrid.differences(ct.grid)) or 'voxels offset'}); it was resampled or cropped "
            "after loading. Export with the CT as loaded from DICOM.")
    if not uids:  # a volume from another file format: accept the series only if it holds the same HU
        mapping = latticeMap(volumeGrid, ct.grid)
        scene_hu, _ = copyOntoGrid(sitk.GetArrayFromImage(volumeToImage(volumeNode)), volumeGrid, ct.grid, mapping)
        if not np.allclose(scene_hu, sitk.GetArrayViewFromImage(ct.image), atol=0.5):
            raise StructureSetError(
                f"The DICOM series in '{ctFolder}' has the geometry of '{volumeNode.GetName()}' but other voxel "
                "values: it is another CT. Choose the folder of the CT shown in the scene.")
    return ct


def exportRTStruct(segmentationNode, volumeNode, path: str | Path, ctFolder: str | Path | None = None, *,
                   files: DicomFileSource | None = None, terminology=None, label: str = LABEL,
                   description: str = DESCRIPTION, python: str | None = None) -> ExportResult:
    """Write every non-empty segment of ``segmentationNode`` as an RTSTRUCT on ``volumeNode``'s DICOM series.

    See the module docstring. The file is written under a temporary name and renamed; nothing
    is written when any check fails. ``label`` and ``description`` are the structure set's label and
    series description (the planning system shows them; the review station names itself there).
    ``python`` is the interpreter that measures the edit of a predicted segment (default: this
    process's; in Slicer, ``PythonSlicer``, since Slicer's own executable is not a Python).
    """
    if segmentationNode is None or volumeNode is None:
        raise StructureSetError("Choose the CT and the segmentation to export.")
    requireUntransformed(volumeNode, "CT")
    requireUntransformed(segmentationNode, "segmentation")
    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0:
        raise StructureSetError(f"The segmentation '{segmentationNode.GetName()}' has no segment to export.")
    ct = loadDicomCT(volumeNode, ctFolder, files)
    volumeGrid = gridOfVolume(volumeNode)
    toCT = latticeMap(volumeGrid, ct.grid)

    masks: dict[str, sitk.Image] = {}
    types: dict[str, str] = {}
    warnings: list[str] = []
    automatic: set[str] = set()
    predicted: list[PredictedSegment] = []
    generation: dict[str, RoiGeneration] = {}
    for n in range(segmentation.GetNumberOfSegments()):
        segmentId = segmentation.GetNthSegmentID(n)
        segment = segmentation.GetSegment(segmentId)
        onVolume = segmentMask(segmentationNode, segmentId, volumeGrid)
        if onVolume.outside:
            warnings.append(f"{onVolume.outside} voxels of '{onVolume.name}' lie outside the CT and are not in the "
                            "RTSTRUCT.")
        if not onVolume.array.any():
            warnings.append(f"'{onVolume.name}' is empty and was not exported.")
            continue
        array, _ = copyOntoGrid(onVolume.array, volumeGrid, ct.grid, toCT)
        masks[onVolume.name] = ct.grid.image(array)
        fromPrediction = predictedSegment(segment, onVolume.name, array, volumeGrid, ct, toCT)
        unchanged = segmentTag(segment, "MaskFingerprint") == maskFingerprint(onVolume.array)
        if fromPrediction is not None:
            predicted.append(fromPrediction)
        elif taggedGeneration(segment, unchanged) is not None:
            generation[onVolume.name] = taggedGeneration(segment, unchanged)
        if terminology is not None and terminology.isCTV(segment):
            types[onVolume.name] = "CTV"
        if unchanged:
            automatic.add(segmentTag(segment, "ModelId"))
        else:
            automatic.add("")
    if not masks:
        raise StructureSetError(f"Every segment of '{segmentationNode.GetName()}' is empty; there is nothing to "
                                "export.")
    algorithm = automatic.pop() if len(automatic) == 1 and "" not in automatic else None
    from ..structures.rtstruct import write_rtstruct

    edits = [(p, measureEdit(p, ct.grid, python or sys.executable)) for p in predicted]  # before anything is written
    written = write_rtstruct(ct, masks, path, algorithm=algorithm, label=label, series_description=description,
                             interpreted_types=types,
                             generation={**generation, **{p.name: generationOf(p, f) for p, f in edits}})
    try:
        records = writeEditRecords(edits, ct, Path(written))
    except BaseException:
        Path(written).unlink(missing_ok=True)  # the RTSTRUCT goes out with its record or not at all
        raise
    return ExportResult(path=Path(written), rois=list(masks), seriesInstanceUID=ct.reference.series_instance_uid,
                        algorithm=algorithm, warnings=warnings, editRecords=records)
