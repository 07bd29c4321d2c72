"""Between MRML nodes and ctv_core images: the CT out of a volume node, a mask into a segment, and back.

``volumeToImage`` gives ctv_core the CT exactly as ``load_ct_series`` would (HU, LPS geometry), and
``imageToVolume`` makes a volume node of such an image; ``importMask`` puts a mask computed on
that image into a segment on the CT's own voxels; ``segmentMask`` reads what a segment holds now
(after editing) onto a given grid. Geometry goes through :mod:`.patient_frame` (RAS/LPS) and
:mod:`.lattice` (exact voxel correspondence): a mask is never interpolated, and one that does not
sit on the CT's voxels is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from ..errors import GridMismatchError, SceneInputError
from ..geometry import Grid
from ..structures.catalogue import structure_for
from .lattice import copyOntoGrid, latticeMap
from .patient_frame import arrayToMatrix, gridOfOrientedImage, gridOfVolume, ijkToRasOfGrid
from .terminology import setSegmentTerminology

LABELMAP = "Binary labelmap"
#: Prefix of the segment tags ctv_core writes (provenance of an automatic CTV; the Slicer module's name, kept so
#: that scenes saved before stay readable).
TAG_PREFIX = "CTVDelineation."


@dataclass(frozen=True)
class SegmentMask:
    """A segment's voxels on a grid: ``array`` uint8 0/1 ``[k, j, i]``; ``outside`` counts the
    segment's voxels that lie beyond the grid."""

    segmentId: str
    name: str
    array: np.ndarray
    outside: int


def requireUntransformed(node, role: str) -> None:
    """Refuse a node under a transform: its voxels would not be where its DICOM says."""
    if node.GetParentTransformNode() is not None:
        raise SceneInputError(
            f"The {role} '{node.GetName()}' is under the transform '{node.GetParentTransformNode().GetName()}'. The "
            f"CTV must lie on the CT's DICOM geometry: move the {role} out of the transform (Data module, or "
            "Transforms module 'Apply transform' only to a copy) and try again.")


def requireCT(volumeNode) -> None:
    """Refuse anything but a 3D scalar volume with voxels."""
    if volumeNode is None:
        raise SceneInputError("No CT selected: choose the planning CT as input volume.")
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode") or volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
        raise SceneInputError(f"'{volumeNode.GetName()}' is not a CT volume (it is a {volumeNode.GetClassName()}); "
                              "choose the planning CT.")
    image = volumeNode.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise SceneInputError(f"The volume '{volumeNode.GetName()}' holds no voxels; load the CT again.")
    if image.GetNumberOfScalarComponents() != 1:
        raise SceneInputError(f"'{volumeNode.GetName()}' has {image.GetNumberOfScalarComponents()} components per "
                              "voxel (a colour or vector image); a CT has one, in HU.")
    if min(image.GetDimensions()) < 2:
        raise SceneInputError(f"'{volumeNode.GetName()}' is a single slice ({image.GetDimensions()}); the CTV "
                              "needs the whole CT series.")


def volumeToImage(volumeNode) -> sitk.Image:
    """The CT of a scalar volume node as a SimpleITK image in HU, on its own voxels, LPS geometry.

    Voxel values and type are the node's (Slicer's DICOM reader stores HU); the geometry is the
    node's IJK-to-RAS matrix turned into LPS (:func:`.patient_frame.gridOfVolume`). For a CT
    loaded from DICOM this equals ``ctv_core.load_ct_series(folder).image``.
    """
    requireCT(volumeNode)
    requireUntransformed(volumeNode, "CT")
    array = slicer.util.arrayFromVolume(volumeNode)  # [k, j, i], a view on the node's voxels
    return gridOfVolume(volumeNode).image(np.array(array, copy=True))


def imageToVolume(scene, image: sitk.Image, name: str = "CT"):
    """A new scalar volume node holding a ctv_core image (HU, LPS geometry) on its own voxels: the inverse of
    :func:`volumeToImage` (the review station builds the CT it shows from ``load_ct_series``).

    The voxels are copied with their type; the geometry goes through :func:`.patient_frame.ijkToRasOfGrid`.
    """
    volumeNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(volumeNode, sitk.GetArrayViewFromImage(image))
    volumeNode.SetIJKToRASMatrix(arrayToMatrix(ijkToRasOfGrid(Grid.of_image(image))))
    volumeNode.CreateDefaultDisplayNodes()
    return volumeNode


def segmentTag(segment, key: str) -> str:
    """The value of the tag ``TAG_PREFIX + key`` on a vtkSegment ('' when absent)."""
    value = vtk.reference("")
    return str(value) if segment.GetTag(TAG_PREFIX + key, value) else ""


def maskFingerprint(array: np.ndarray) -> str:
    """SHA-256 of a ``[k, j, i]`` mask's shape and voxels (non-zero = inside): tells an edited segment."""
    digest = hashlib.sha256(repr(tuple(array.shape)).encode())
    digest.update(np.packbits(np.asarray(array) != 0).tobytes())
    return digest.hexdigest()


def _orientedImage(array: np.ndarray, grid: Grid):
    """A vtkOrientedImageData (uint8) holding ``array`` (``[k, j, i]``) on the LPS ``grid``."""
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*grid.size)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = np.ascontiguousarray(array, np.uint8).ravel()
    image.SetImageToWorldMatrix(arrayToMatrix(ijkToRasOfGrid(grid)))
    return image


def requireSegmentationOnCT(segmentationNode, volumeGrid: Grid, volumeName: str) -> None:
    """Refuse a segmentation whose reference geometry lies on another CT's voxels."""
    segmentation = segmentationNode.GetSegmentation()
    text = segmentation.GetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    if not text:
        return
    reference = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, reference, False)
    referenceGrid = gridOfOrientedImage(reference)
    if min(referenceGrid.size) > 0 and latticeMap(referenceGrid, volumeGrid) is None:
        differences = "; ".join(referenceGrid.differences(volumeGrid)) or "offset by a fraction of a voxel"
        raise GridMismatchError(
            f"The segmentation '{segmentationNode.GetName()}' was made on another image than the CT '{volumeName}' "
            f"(its voxels vs the CT's: {differences}). "
            "Choose a new output segmentation, or the one made on this CT.")


def importMask(volumeNode, mask: sitk.Image, segmentationNode=None, name: str = "CTV", *,
               terminology=None, tags: dict[str, str] | None = None):
    """Put ``mask`` (uint8, non-zero inside, LPS geometry) into the segment ``name`` on the CT's voxels.

    A new segmentation node is made when ``segmentationNode`` is None. An existing segment of
    that name is replaced in place (same ID and position); every other segment is left as it
    was. The segment gets the structure catalogue's colour for ``name`` and, when ``name`` is the
    CTV (or an alias) and ``terminology`` (:class:`.terminology.CTVTerminology`) is given, the
    CTV's coded type; ``tags`` are stored as segment
    tags (prefixed ``CTVDelineation.``) with the mask's fingerprint.

    Returns
    -------
    (segmentationNode, segmentId)

    Raises
    ------
    GridMismatchError
        The mask does not lie on the CT's voxels, or the segmentation belongs to another CT.
    SceneInputError
        The CT or the segmentation is under a transform.
    """
    requireCT(volumeNode)
    requireUntransformed(volumeNode, "CT")
    volumeGrid = gridOfVolume(volumeNode)
    maskGrid = Grid.of_image(mask)
    mapping = latticeMap(maskGrid, volumeGrid)
    if mapping is None:
        raise GridMismatchError(
            f"The mask is not on the voxels of the CT '{volumeNode.GetName()}' (mask vs CT: "
            f"{'; '.join(maskGrid.differences(volumeGrid)) or 'offset by a fraction of a voxel'}); it was computed on "
            "another image. Run the prediction on this CT.")
    array, outside = copyOntoGrid((sitk.GetArrayViewFromImage(mask) != 0).astype(np.uint8), maskGrid, volumeGrid,
                                  mapping)
    if outside:
        raise GridMismatchError(f"{outside} voxels of the mask lie outside the CT '{volumeNode.GetName()}'; the mask "
                                "was computed on a larger image. Run the prediction on this CT.")
    if segmentationNode is None:
        segmentationNode = volumeNode.GetScene().AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                  f"{volumeNode.GetName()} {name}")
        segmentationNode.CreateDefaultDisplayNodes()
    requireUntransformed(segmentationNode, "segmentation")
    requireSegmentationOnCT(segmentationNode, volumeGrid, volumeNode.GetName())

    segment = slicer.vtkSegment()
    segment.SetName(name)
    segment.AddRepresentation(LABELMAP, _orientedImage(array, volumeGrid))
    segment.SetColor(*(c / 255.0 for c in structure_for(name).colour))
    if terminology is not None and terminology.describes(name):
        setSegmentTerminology(segment, terminology.entry)
    for key, value in {**(tags or {}), "MaskFingerprint": maskFingerprint(array)}.items():
        segment.SetTag(TAG_PREFIX + key, str(value))

    wasModifying = segmentationNode.StartModify()
    try:
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentation = segmentationNode.GetSegmentation()
        existing = segmentation.GetSegmentIdBySegmentName(name)
        if existing:
            index = segmentation.GetSegmentIndex(existing)
            segmentation.RemoveSegment(existing)
            following = segmentation.GetNthSegmentID(index) if index < segmentation.GetNumberOfSegments() else ""
            segmentId = existing
            segmentation.AddSegment(segment, segmentId, following)
        else:
            segmentId = segmentation.GenerateUniqueSegmentID(name)
            segmentation.AddSegment(segment, segmentId)
    finally:
        segmentationNode.EndModify(wasModifying)
    display = segmentationNode.GetDisplayNode()
    if display is not None:
        display.SetSegmentVisibility(segmentId, True)
    return segmentationNode, segmentId


def segmentMask(segmentationNode, segmentId: str, grid: Grid) -> SegmentMask:
    """What segment ``segmentId`` holds now, as a uint8 0/1 ``[k, j, i]`` mask on ``grid`` (LPS).

    Reads the segment's binary labelmap (made from its source representation if needed); in a
    shared layer only the segment's own label value counts.

    Raises
    ------
    GridMismatchError
        The segment's labelmap does not lie on ``grid``'s voxels (it was drawn on another CT or
        resampled): copying it would misplace the contour.
    """
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    if segment is None:
        raise SceneInputError(f"The segmentation '{segmentationNode.GetName()}' has no segment '{segmentId}'.")
    labelmap = segment.GetRepresentation(LABELMAP)
    if labelmap is None:
        segmentationNode.CreateBinaryLabelmapRepresentation()
        labelmap = segment.GetRepresentation(LABELMAP)
    if labelmap is None:
        raise SceneInputError(f"The segment '{segment.GetName()}' cannot be turned into voxels; open it in the "
                              "Segment Editor once so that Slicer makes its labelmap.")
    extent = labelmap.GetExtent()
    if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
        return SegmentMask(segmentId, segment.GetName(), np.zeros(grid.shape, np.uint8), 0)
    source = gridOfOrientedImage(labelmap)
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(source.shape)
    mapping = latticeMap(source, grid)
    if mapping is None:
        raise GridMismatchError(
            f"The segment '{segment.GetName()}' is not on the CT's voxels (segment vs CT: "
            f"{'; '.join(source.differences(grid)) or 'offset by a fraction of a voxel'}): it was drawn on another "
            "image or resampled. Export it with the CT it was drawn on, or set the segmentation's geometry to this "
            "CT (Segmentations module, 'Specify geometry') and check it before export.")
    segmentation = segmentationNode.GetSegmentation()
    shared = any(segmentation.GetNthSegment(n) is not segment
                 and segmentation.GetNthSegment(n).GetRepresentation(LABELMAP) is labelmap
                 for n in range(segmentation.GetNumberOfSegments()))
    inside = values == segment.GetLabelValue() if shared else values != 0
    array, outside = copyOntoGrid(inside.astype(np.uint8), source, grid, mapping)
    return SegmentMask(segmentId, segment.GetName(), array, outside)
