"""Slicer without the application, for tests, benchmarks and the README picture: a real MRML scene from
the ``slicer-core`` wheel, CT volume nodes built the way Slicer's DICOM loader builds them, and the
module loaded the way Slicer loads it (with stand-ins for the Qt-only parts it imports).

The volume node is built here from the DICOM attributes with pydicom, independently of
ctv_core's loader, so that tests comparing the two check something: slices sorted along the
normal of ImageOrientationPatient, IJK-to-RAS columns = RAS(row cosine) x column spacing,
RAS(column cosine) x row spacing, RAS(normal) x slice spacing, origin = RAS(first
ImagePositionPatient), voxels = stored value x RescaleSlope + RescaleIntercept, the
``DICOM.instanceUIDs`` attribute and the series UID on the subject hierarchy item, as Slicer's
DICOMScalarVolumePlugin leaves them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODULE_FILE = REPO / "CTVDelineation" / "CTVDelineation.py"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def require_slicer():
    """``import slicer`` from the slicer-core wheel, or fail with the fix."""
    import pytest

    try:
        import slicer  # noqa: F401
    except ImportError:
        pytest.fail("slicer-core is not installed; run the tests through scripts/test.sh, which installs it")
    return sys.modules["slicer"]


@contextlib.contextmanager
def module_in_slicer(release: str = "5.8", scene=None, temporary: Path | None = None):
    """``CTVDelineation.py`` imported as Slicer ``release`` imports it, inside that release's strict
    application (:mod:`slicer_app`); yields ``(module, application)``. Everything is put back after."""
    import tempfile

    from slicer_app import slicer_application

    require_slicer()
    if str(MODULE_FILE.parent) not in sys.path:  # Slicer puts each module's folder on sys.path
        sys.path.append(str(MODULE_FILE.parent))
    with contextlib.ExitStack() as stack:
        if temporary is None:
            temporary = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        app = stack.enter_context(slicer_application(release, scene, MODULE_FILE, temporary))
        spec = importlib.util.spec_from_file_location("CTVDelineation", MODULE_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module, app


def import_module_file():
    """``CTVDelineation.py`` imported as Slicer 5.8 (the oldest supported release) imports it."""
    with module_in_slicer("5.8") as (module, _):
        return module


def logic_package():
    """The ``Logic/`` package, loaded by the module's own loader under its own name."""
    return import_module_file().loadLogicPackage()


def make_scene():
    """A MRML scene with the logics the application would have set on it (colours, volumes,
    segmentations with their conversion rules, subject hierarchy); ``slicer.mrmlScene`` and a stand-in
    ``slicer.modules`` are set for the ``slicer.util`` functions that look them up."""
    slicer = require_slicer()
    scene = slicer.vtkMRMLScene()
    application = slicer.vtkMRMLApplicationLogic()
    application.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(application)
    colors.SetMRMLScene(scene)
    application.SetColorLogic(colors)
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLApplicationLogic(application)
    volumes.SetMRMLScene(scene)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLApplicationLogic(application)
    segmentations.SetMRMLScene(scene)  # registers the segmentation conversion rules
    hierarchy = slicer.vtkSlicerSubjectHierarchyModuleLogic()
    hierarchy.SetMRMLScene(scene)
    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(volumes=types.SimpleNamespace(logic=lambda: volumes),
                                           segmentations=types.SimpleNamespace(logic=lambda: segmentations))
    scene._keep = (application, colors, volumes, segmentations, hierarchy)  # the logics live as long as the scene
    return scene


def ras(vector) -> np.ndarray:
    """A DICOM (LPS) vector or point in Slicer's RAS: x and y change sign."""
    v = np.asarray(vector, dtype=float)
    return np.array([-v[0], -v[1], v[2]])


def load_dicom_volume(scene, folder: Path, name: str = "CT", descending: bool = False):
    """A CT volume node as Slicer's DICOM scalar volume loader makes it (see the module docstring).

    ``descending`` stacks the slices against the normal instead (k towards decreasing position), as a
    reader sorting the other way would: the same voxels with the k axis reversed.
    """
    import pydicom

    slicer = require_slicer()
    datasets = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path)
        if ds.get("SOPClassUID") == CT_IMAGE_STORAGE:
            datasets.append(ds)
    iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    row, column = iop[:3], iop[3:]
    normal = np.cross(row, column)
    datasets.sort(key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal)),
                  reverse=descending)
    positions = np.array([np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal) for ds in datasets])
    slice_spacing = abs(float(np.mean(np.diff(positions)))) if len(datasets) > 1 else float(datasets[0].SliceThickness)
    row_spacing, column_spacing = (float(v) for v in datasets[0].PixelSpacing)
    hu = np.stack([ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
                   for ds in datasets])
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, 0] = ras(row) * column_spacing
    ijk_to_ras[:3, 1] = ras(column) * row_spacing
    ijk_to_ras[:3, 2] = ras(normal) * slice_spacing * (-1 if descending else 1)
    ijk_to_ras[:3, 3] = ras(datasets[0].ImagePositionPatient)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(volume, np.rint(hu).astype(np.int16))
    volume.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    volume.CreateDefaultDisplayNodes()
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(str(ds.SOPInstanceUID) for ds in datasets))
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = hierarchy.GetItemByDataNode(volume) or hierarchy.CreateItem(hierarchy.GetSceneItemID(), volume)
    hierarchy.SetItemUID(item, "DICOM", str(datasets[0].SeriesInstanceUID))
    return volume


class FolderDicomDatabase:
    """Slicer's DICOM database stand-in for ``export_rtstruct``: SOPInstanceUID -> file of real DICOM files."""

    def __init__(self, *folders: Path):
        import pydicom

        self.files = {}
        for folder in folders:
            for path in Path(folder).rglob("*"):
                if path.is_file():
                    self.files[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = str(path)

    def fileForInstance(self, uid: str) -> str:
        return self.files.get(uid, "")
