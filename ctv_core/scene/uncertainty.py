"""The prediction's uncertainty map in the scene: a volume on the CT's voxels over the CT, and its slices.

A prediction writes ``uncertainty.nii.gz`` beside its outputs (the prediction process ``uncertainty.nrrd``): uint8 percent 0-100 on the CT
grid (voxel uncertainty = 1 - |2p - 1| of the CTV probability p, in percent). Both doors show
it the same way: :func:`showUncertainty` puts it into the volume node "<CT name> CTV
uncertainty" on exactly the CT node's voxels (the map is copied through :mod:`.lattice`, never
interpolated, and the node gets the CT node's own IJK-to-RAS matrix; a map computed on another
image is refused), coloured with Slicer's Iron table, values under
:data:`DISPLAY_THRESHOLD_PERCENT` transparent, as the foreground layer of every slice view at
:data:`OPACITY`. :func:`setUncertaintyVisible` switches that layer; :func:`sliceCentre` and
:func:`sliceOffset` place an axial CT slice (index k of the map's grid, as the report's
``least_certain_slices`` count them) for a slice view, whatever the CT's orientation (oblique,
feet first, slices stored in either order); :class:`LeastCertainTour` cycles through those
slices and :func:`leastCertainFirst` puts them before the CTV's other slices (the review station's autoplay). The figures come from :mod:`.uncertainty_report`.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from ..errors import GridMismatchError
from ..geometry import Grid
from .conversion import requireCT, requireUntransformed
from .lattice import copyOntoGrid, isSameLattice, latticeMap
from .patient_frame import LPS_FROM_RAS, gridOfVolume, matrixToArray

#: Slicer's colour table for the map (dark to white-hot: the more uncertain, the brighter).
COLOR_NODE_ID = "vtkMRMLColorTableNodeIron"
#: Voxels below this uncertainty (percent) are not drawn: the certain inside and outside stay clear.
DISPLAY_THRESHOLD_PERCENT = 5
#: Opacity of the uncertainty layer over the CT.
OPACITY = 0.5


def uncertaintyNodeName(ctName: str) -> str:
    """The name of the uncertainty volume of the CT named ``ctName``."""
    return f"{ctName} CTV uncertainty"


def showUncertainty(volumeNode, uncertainty: sitk.Image, uncertaintyNode=None, visible: bool = True):
    """Put the map ``uncertainty`` (uint8 percent 0-100, LPS, on the CT's voxels) into a volume node on the
    CT node ``volumeNode``'s voxels and show it over the CT; returns the node.

    ``uncertaintyNode`` (a scalar volume node) is reused when given, else the scene's node named
    :func:`uncertaintyNodeName` is, else one is made. ``visible`` puts it in the slice views'
    foreground layer (:func:`setUncertaintyVisible`).

    Raises
    ------
    GridMismatchError
        The map is not on the CT's voxels (computed on another image), or is not a 3D scalar map
        of percents.
    SceneInputError
        The CT is not a usable CT or is under a transform.
    """
    requireCT(volumeNode)
    requireUntransformed(volumeNode, "CT")
    if uncertainty.GetDimension() != 3 or uncertainty.GetNumberOfComponentsPerPixel() != 1:
        raise GridMismatchError(f"The uncertainty map is {uncertainty.GetDimension()}D with "
                                f"{uncertainty.GetNumberOfComponentsPerPixel()} components; it must be a 3D map on the "
                                "CT. Predict the CTV again.")
    values = sitk.GetArrayViewFromImage(uncertainty)
    if values.size and (values.min() < 0 or values.max() > 100):
        raise GridMismatchError(f"The uncertainty map holds values from {values.min()} to {values.max()}, not "
                                "percents 0-100; it does not come from this version of ctv_core. Predict again.")
    volumeGrid, mapGrid = gridOfVolume(volumeNode), Grid.of_image(uncertainty)
    mapping = latticeMap(mapGrid, volumeGrid)
    if not isSameLattice(mapGrid, volumeGrid, mapping):
        raise GridMismatchError(
            f"The uncertainty map is not on the voxels of the CT '{volumeNode.GetName()}' (map vs CT: "
            f"{'; '.join(mapGrid.differences(volumeGrid)) or 'offset by a fraction of a voxel'}); it was computed on "
            "another image. Predict the CTV on this CT.")
    array, _ = copyOntoGrid(np.asarray(values, dtype=np.uint8), mapGrid, volumeGrid, mapping)
    scene = volumeNode.GetScene()
    node = uncertaintyNode or scene.GetFirstNodeByName(uncertaintyNodeName(volumeNode.GetName()))
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", uncertaintyNodeName(volumeNode.GetName()))
    slicer.util.updateVolumeFromArray(node, array)
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)  # the CT node's own: the map lies on exactly its voxels
    node.SetAttribute("CTVDelineation.UncertaintyOf", volumeNode.GetID())
    _styleDisplay(node)
    setUncertaintyVisible(scene, node, visible)
    return node


def _styleDisplay(node) -> None:
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    wasModifying = display.StartModify()
    if node.GetScene().GetNodeByID(COLOR_NODE_ID) is not None:
        display.SetAndObserveColorNodeID(COLOR_NODE_ID)
    display.SetAutoWindowLevel(0)
    display.SetWindowLevelMinMax(0.0, 100.0)  # the colours mean the same percent on every CT
    display.SetAutoThreshold(0)
    display.SetLowerThreshold(DISPLAY_THRESHOLD_PERCENT)
    display.SetUpperThreshold(100.0)
    display.SetApplyThreshold(1)
    display.EndModify(wasModifying)


def _compositeNodes(scene):
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return [nodes.GetItemAsObject(n) for n in range(nodes.GetNumberOfItems())]


def setUncertaintyVisible(scene, uncertaintyNode, visible: bool) -> None:
    """Show ``uncertaintyNode`` as the foreground layer of every slice view at :data:`OPACITY`, or take it out
    of the views that show it (another foreground volume the user chose is left alone)."""
    for composite in _compositeNodes(scene):
        if visible:
            composite.SetForegroundVolumeID(uncertaintyNode.GetID())
            composite.SetForegroundOpacity(OPACITY)
        elif composite.GetForegroundVolumeID() == uncertaintyNode.GetID():
            composite.SetForegroundVolumeID(None)


def isUncertaintyVisible(scene, uncertaintyNode) -> bool:
    """True when some slice view shows ``uncertaintyNode`` as its foreground at a visible opacity."""
    return any(c.GetForegroundVolumeID() == uncertaintyNode.GetID() and c.GetForegroundOpacity() > 0
               for c in _compositeNodes(scene))


def sliceCentre(grid: Grid, k: int) -> np.ndarray:
    """RAS position (mm) of the centre of axial CT slice ``k`` of ``grid`` (the map's LPS grid)."""
    if not 0 <= k < grid.size[2]:
        raise IndexError(f"slice {k} is outside the CT's {grid.size[2]} slices")
    centre = (np.asarray(grid.size, dtype=float) - 1) / 2
    centre[2] = k
    lps = np.asarray(grid.origin) + grid.direction_matrix @ (np.asarray(grid.spacing) * centre)
    return LPS_FROM_RAS @ lps


def sliceOffset(grid: Grid, k: int, sliceToRas) -> float:
    """The offset (mm along the view's normal, the third column of its SliceToRAS vtkMatrix4x4) that shows CT
    slice ``k`` of ``grid`` in that view: what ``vtkMRMLSliceLogic.SetSliceOffset`` takes."""
    normal = matrixToArray(sliceToRas)[:3, 2]
    return float(sliceCentre(grid, k) @ (normal / np.linalg.norm(normal)))


def leastCertainFirst(offsets, grid: Grid, slices, sliceToRas) -> list[float]:
    """View offsets (mm, as :func:`.review_steps.sliceOffsets` gives them) for a slice view: those of the least
    certain CT ``slices`` of ``grid`` first (least certain first), then the other ``offsets`` in their order."""
    first = list(dict.fromkeys(round(sliceOffset(grid, int(k), sliceToRas), 4) for k in slices))
    return first + [offset for offset in offsets if offset not in set(first)]


class LeastCertainTour:
    """The least certain CT slices, visited in turn (least certain first, then round again).

    Parameters
    ----------
    slices
        CT slice indices k, least certain first (``UncertaintyFigures.leastCertainSlices``).
    """

    def __init__(self, slices) -> None:
        self.slices = [int(k) for k in slices]
        self.index = -1

    def __len__(self) -> int:
        return len(self.slices)

    def next(self) -> int | None:
        """The next slice index (round at the end); None when there is none."""
        if not self.slices:
            return None
        self.index = (self.index + 1) % len(self.slices)
        return self.slices[self.index]

    def position(self) -> str:
        """"least certain slice 2 of 10 (CT slice 37)" for the status line."""
        if self.index < 0:
            return f"{len(self.slices)} least certain slices"
        return (f"Least certain slice {self.index + 1} of {len(self.slices)} "
                f"(CT slice {self.slices[self.index] + 1})")
