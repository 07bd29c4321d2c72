"""Slicer's views without the application: axial/coronal slice views and the 3D view rendered off-screen
with slicer-core's own slice logic and displayable managers (EGL, no X server), as RGB arrays.

Used by the view tests (where a structure appears on screen) and by
``scripts/render_readme_picture.py``. Slice views: a ``vtkMRMLSliceLogic`` reslices the background
volume (window/level of its display node) and the segmentations 2D displayable manager draws
segments on top. 3D: a ``vtkMRMLViewLogic`` with the camera, model and segmentations 3D
displayable managers (segments need their closed-surface representation).
"""

from __future__ import annotations

import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np  # noqa: E402
import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

SLICE_MANAGERS = ("vtkMRMLSegmentationsDisplayableManager2D",)
THREE_D_MANAGERS = ("vtkMRMLCameraDisplayableManager", "vtkMRMLViewDisplayableManager",
                    "vtkMRMLModelDisplayableManager", "vtkMRMLSegmentationsDisplayableManager3D")


def _window(size: tuple[int, int]):
    renderer = vtk.vtkRenderer()
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    window.AddRenderer(renderer)
    interactor = vtk.vtkRenderWindowInteractor()  # before the displayable managers, or they crash
    interactor.SetRenderWindow(window)
    interactor.Initialize()
    return renderer, window, interactor


def _managers(factory_class, application, renderer, names):
    factory = factory_class.GetInstance()
    factory.SetMRMLApplicationLogic(application)
    for name in names:
        if not factory.IsDisplayableManagerRegistered(name):
            factory.RegisterDisplayableManager(name)
    return factory.InstantiateDisplayableManagers(renderer)


def _pixels(window) -> np.ndarray:
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ReadFrontBufferOff()
    grab.Update()
    image = grab.GetOutput()
    width, height, _ = image.GetDimensions()
    rgb = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[..., :3]
    return np.ascontiguousarray(rgb[::-1])  # VTK's first row is the bottom one


def render_slice(scene, volume, orientation: str, offset: float | None = None, size=(400, 400),
                 name: str | None = None) -> np.ndarray:
    """An ``orientation`` ("Axial", "Coronal", "Sagittal") slice view of ``volume`` with the scene's
    segmentations, at ``offset`` mm along the view's normal (the volume's centre when None).
    RGB ``(height, width, 3)`` uint8, the top row first, as on screen."""
    import slicer

    application = scene._keep[0]
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLApplicationLogic(application)
    logic.SetMRMLScene(scene)
    node = logic.AddSliceNode(name or orientation)
    node.SetOrientation(orientation)
    node.SetDimensions(size[0], size[1], 1)
    logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())
    renderer, window, interactor = _window(size)
    mapper = vtk.vtkImageMapper()  # the resliced CT, below the segments
    mapper.SetInputConnection(logic.GetImageDataConnection())
    mapper.SetColorWindow(255)
    mapper.SetColorLevel(127.5)
    actor = vtk.vtkActor2D()
    actor.SetMapper(mapper)
    renderer.AddViewProp(actor)
    group = _managers(slicer.vtkMRMLSliceViewDisplayableManagerFactory, application, renderer, SLICE_MANAGERS)
    group.SetMRMLDisplayableNode(node)
    logic.FitSliceToAll()
    if offset is not None:
        logic.SetSliceOffset(offset)
    pixels = _pixels(window)
    window.Finalize()
    del interactor, group
    return pixels


def render_3d(scene, size=(400, 400), elevation: float = 0.0, azimuth: float = 0.0) -> np.ndarray:
    """The 3D view of the scene's segments (closed surfaces), camera from the anterior (Slicer's
    default), turned by ``azimuth`` / ``elevation`` degrees. RGB as :func:`render_slice`."""
    import slicer

    application = scene._keep[0]
    logic = slicer.vtkMRMLViewLogic()
    logic.SetMRMLApplicationLogic(application)
    logic.SetMRMLScene(scene)
    node = logic.AddViewNode("1")
    node.SetBoxVisible(False)
    node.SetAxisLabelsVisible(False)
    renderer, window, interactor = _window(size)
    group = _managers(slicer.vtkMRMLThreeDViewDisplayableManagerFactory, application, renderer, THREE_D_MANAGERS)
    group.SetMRMLDisplayableNode(node)
    renderer.ResetCamera()
    camera = renderer.GetActiveCamera()
    camera.Azimuth(azimuth)
    camera.Elevation(elevation)
    camera.OrthogonalizeViewUp()
    renderer.ResetCamera()
    camera.Zoom(1.3)
    pixels = _pixels(window)
    window.Finalize()
    del interactor, group
    return pixels


def colour_mask(rgb: np.ndarray, colour, tolerance: int = 60) -> np.ndarray:
    """Pixels close to ``colour`` (0-255 RGB) and far from grey: where a segment is drawn."""
    rgb = rgb.astype(int)
    near = np.abs(rgb - np.asarray(colour)).max(axis=-1) < tolerance
    return near & (rgb.max(axis=-1) - rgb.min(axis=-1) > 80)
