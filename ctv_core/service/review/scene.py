"""The MRML scene of the case open in the station: its CT as a volume node, one version's CTV as a segment.

One scene per station process, shared by every browser connected to it (the page says which case
and version it shows). The conversions are the ones the Slicer module uses (:mod:`ctv_core.scene`):
the CT comes from ``load_ct_series`` and becomes a volume node through ``imageToVolume`` (RAS
meets LPS in :mod:`ctv_core.scene.patient_frame` only), recorded as that DICOM series
(``markDicomSeries``) so that the RTSTRUCT export checks it against the case's files; a
version's CTV (its ``ctv.nii.gz``, or the RTSTRUCT read onto the CT for a DICOM node's versions)
goes in through ``importMask`` with the CTV's terminology and the model's tags, exactly as Apply
puts it in Slicer. Editing marks the scene changed until the edit is saved or discarded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from ...dicom.ct_series import CTSeries
from ..approvals import version_mask

logger = logging.getLogger(__name__)

#: Window presets (width, level), HU.
WINDOWS = {"soft tissue": (400.0, 40.0), "bone": (1800.0, 400.0)}


@dataclass
class OpenCase:
    """What the scene shows: the case, its CT, the version in the CTV segment and whether it was edited since."""

    case_id: str
    ct: CTSeries
    volume: object
    version: int | None = None
    version_kind: str = ""
    segmentation: object = None
    segment_id: str = ""
    edited: bool = False
    warnings: list[str] = field(default_factory=list)
    uncertainty: object = None
    least_certain: tuple[int, ...] = ()


def _model_tags(kind: str, report: dict) -> dict[str, str]:
    """The tags naming the model a version's CTV started from (a prediction's own; an edit's from its report's
    ``ai``), with ``Edited`` for an edit: the RTSTRUCT export names the model and says SEMIAUTOMATIC once edited."""
    if kind == "edit":
        ai = report.get("ai") or {}
        return {"ModelName": str(ai.get("model_name", "")), "ModelVersion": str(ai.get("model_version", "")),
                "ModelSHA256": str(ai.get("model_sha256", "")), "Edited": "1"}
    model = report.get("model") or {}
    return {"ModelName": str(model.get("name", "")), "ModelVersion": str(model.get("version", ""))}


class CaseScene:
    """The station's scene (see the module docstring).

    Parameters
    ----------
    slicer_app
        trame-slicer's ``SlicerApp`` (scene, logics, views, segmentation editor).
    editor_logic
        trame-slicer's segment editor logic of the page (it follows the segmentation shown).
    """

    def __init__(self, slicer_app, editor_logic) -> None:
        from ...scene.terminology import CTVTerminology

        self.app = slicer_app
        self.editor_logic = editor_logic
        self.terminology = CTVTerminology(slicer_app.terminologies_logic)
        self.open: OpenCase | None = None
        self.uncertainty_visible = True
        self.window = "soft tissue"
        slicer_app.segmentation_editor.segmentation_modified.connect(self._on_edit)
        self._importing = False

    @property
    def scene(self):
        return self.app.scene

    def show_ct(self, case_id: str, ct: CTSeries) -> OpenCase:
        """Clear the scene and show the case's CT (soft-tissue window) in every view."""
        from ...scene.conversion import imageToVolume
        from ...scene.rtstruct_export import markDicomSeries

        self.app.segmentation_editor.deactivate_effect()
        self.scene.Clear()  # the editor drops its segmentation and undo history with it
        self.open = None
        volume = imageToVolume(self.scene, ct.image, f"CT {case_id}")
        markDicomSeries(volume, ct.reference.series_instance_uid, ct.reference.sop_instance_uids)
        self.app.display_manager.show_volume_in_slice_background(volume)
        self.open = OpenCase(case_id, ct, volume)
        self.set_window("soft tissue")
        self.app.display_manager.reset_views()
        return self.open

    def show_version(self, number: int, kind: str, folder: Path, report: dict) -> None:
        """Put version ``number`` (its folder and report) of the open case into the CTV segment."""
        from ...scene.conversion import importMask

        case = self.open
        mask = self._version_mask(folder, case.ct)
        model = report.get("model") or {}
        tags = {"ModelId": f"{model['name']} {model['version']}" if kind != "edit" and model else "",
                "ModelSHA256": model.get("sha256", "") if kind != "edit" else "",
                "SeriesInstanceUID": case.ct.reference.series_instance_uid, "Version": str(number)}
        tags.update(_model_tags(kind, report))
        self._importing = True
        try:
            case.segmentation, case.segment_id = importMask(case.volume, mask, case.segmentation, "CTV",
                                                            terminology=self.terminology, tags=tags)
            self.editor_logic.on_volume_changed(case.volume)  # the editor (and its undo) now works on this CTV
            self.app.segmentation_editor.set_active_segment_id(case.segment_id)
        finally:
            self._importing = False
        case.version, case.version_kind, case.edited = number, kind, False
        case.warnings = [str(w) for w in report.get("warnings", [])]
        self._show_uncertainty(folder, report)

    def _show_uncertainty(self, folder: Path, report: dict) -> None:
        """The version's uncertainty map over the CT (:mod:`ctv_core.scene.uncertainty`, as in Slicer) and its least
        certain slices; a version without one (an edit, an older prediction) shows none, and a malformed map or
        report becomes a warning on the page."""
        from ...errors import CTVError
        from ...scene.uncertainty import showUncertainty
        from ...inference.predict_job import UNCERTAINTY_FILE
        from ...scene.uncertainty_report import readUncertaintyFigures

        case = self.open
        if case.uncertainty is not None:
            self.scene.RemoveNode(case.uncertainty)
        case.uncertainty, case.least_certain = None, ()
        path = folder / UNCERTAINTY_FILE
        if not path.is_file():
            return
        try:
            figures = readUncertaintyFigures(report, case.ct.grid.size[2])
            case.uncertainty = showUncertainty(case.volume, sitk.ReadImage(str(path)), visible=self.uncertainty_visible)
        except (CTVError, RuntimeError) as exc:
            case.warnings.append(f"The uncertainty of this version cannot be shown: {exc}")
            return
        case.least_certain = figures.leastCertainSlices

    def set_uncertainty_visible(self, visible: bool) -> None:
        """Show or hide the open version's uncertainty over the CT (remembered for the next version shown)."""
        from ...scene.uncertainty import setUncertaintyVisible

        self.uncertainty_visible = bool(visible)
        if self.open is not None and self.open.uncertainty is not None:
            setUncertaintyVisible(self.scene, self.open.uncertainty, self.uncertainty_visible)

    @staticmethod
    def _version_mask(folder: Path, ct: CTSeries) -> sitk.Image:
        return version_mask(folder, ct)  # the approvals read a version's CTV the same way

    def set_window(self, preset: str) -> None:
        """Apply a window preset (a key of :data:`WINDOWS`) to the open CT."""
        self.window = preset
        if self.open is None:
            return
        width, level = WINDOWS[preset]
        display = self.open.volume.GetDisplayNode()
        display.SetAutoWindowLevel(0)
        display.SetWindowLevel(width, level)

    def reset_3d(self) -> None:
        """Point the 3D views at what they show now (the CTV's surface)."""
        for view in self.app.view_manager.get_threed_views():
            view.reset_camera()
            view.schedule_render()

    def axial_view(self):
        """The axial slice view (trame-slicer's "Red" view)."""
        return next(v for v in self.app.view_manager.get_slice_views() if v.get_orientation() == "Axial")

    def has_unsaved_edit(self) -> bool:
        """True when the CTV segment differs from the version it was loaded from (checked voxel by voxel when
        the editor reported a change)."""
        from ...scene.conversion import maskFingerprint, segmentMask, segmentTag
        from ...scene.patient_frame import gridOfVolume

        case = self.open
        if case is None or not case.edited or case.segmentation is None:
            return False
        segmentation = case.segmentation.GetSegmentation()
        segment = segmentation.GetSegment(case.segment_id)
        if segment is None or segmentation.GetNumberOfSegments() > 1:
            return True  # the CTV segment was deleted, or others were added
        now = segmentMask(case.segmentation, case.segment_id, gridOfVolume(case.volume)).array
        case.edited = maskFingerprint(now) != segmentTag(segment, "MaskFingerprint")
        return case.edited

    def _on_edit(self, *_args) -> None:
        if self.open is not None and self.open.segmentation is not None and not self._importing:
            self.open.edited = True
