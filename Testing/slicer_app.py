"""The Slicer application around the module, as strict as Slicer at one supported release.

:func:`slicer_application` installs, for one release ("5.8", "5.10", "5.12"), the Slicer-only
parts the module touches, built from ``slicer_api.json`` (see :mod:`slicer_api`):
``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``, a ``slicer.util`` with
exactly the release's names (the slicer-core wheel's real functions where they need no
application, the harness's where they show a dialog or a widget), ``slicer.packaging`` (5.12
only), ``slicer.app``, ``slicer.modules`` and the ``qt``/``ctk`` of :mod:`slicer_qt`. What the
user would see (dialogs, the selected module, installed packages) is recorded in the returned
:class:`Application`, and the dialogs' answers are queued there.
"""

from __future__ import annotations

import contextlib
import sys
import types
import typing
from pathlib import Path

import slicer_qt
from slicer_api import release_api, strict_class, strict_function
from slicer_parameters import parameter_node_wrapper_module

#: slicer.util functions the harness plays (they show something or need the application).
_PLAYED_UTIL = ("loadUI", "childWidgetVariables", "errorDisplay", "infoDisplay", "warningDisplay",
                "confirmOkCancelDisplay", "selectModule", "getModuleWidget", "mainWindow", "modulePath",
                "reloadScriptedModule", "settingsValue", "pip_install")


class SegmentEditor:
    """The Segment Editor module's ``editor`` (qMRMLSegmentEditorWidget): what it was given."""

    def __init__(self):
        self.segmentationNode = self.sourceVolumeNode = None

    def setSegmentationNode(self, node) -> None:
        self.segmentationNode = node

    def setSourceVolumeNode(self, node) -> None:
        self.sourceVolumeNode = node


class Layout:
    """``slicer.app.layoutManager()``: slice views with real ``vtkMRMLSliceLogic``s ("Red" unless told
    otherwise) and a 3D view whose focal-point resets are counted."""

    def __init__(self, scene, application_logic, views=("Red",)):
        import slicer

        self.logics = {}
        for name in views:
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLApplicationLogic(application_logic)
            logic.SetMRMLScene(scene)
            logic.AddSliceNode(name).SetOrientation("Axial")
            self.logics[name] = logic
        self.focalPointResets = 0

    def sliceWidget(self, name):
        logic = self.logics.get(name)
        return types.SimpleNamespace(sliceLogic=lambda: logic) if logic is not None else None

    def threeDWidget(self, index):
        def reset():
            self.focalPointResets += 1
        return types.SimpleNamespace(threeDView=lambda: types.SimpleNamespace(resetFocalPoint=reset))


class DicomDatabase:
    """``slicer.dicomDatabase`` (ctkDICOMDatabase): ``isOpen`` and ``fileForInstance`` over real DICOM files."""

    __slots__ = ("_files",)

    def __init__(self, *folders: Path):
        from slicer_support import FolderDicomDatabase

        self._files = FolderDicomDatabase(*folders)

    @property
    def isOpen(self) -> bool:
        return True

    def fileForInstance(self, sopInstanceUID: str) -> str:
        return self._files.fileForInstance(sopInstanceUID)


class ModuleParent:
    """The ``qSlicerScriptedLoadableModule`` a module's metadata is written on: its Qt properties only."""

    __slots__ = ("title", "categories", "dependencies", "contributors", "helpText", "acknowledgementText", "icon",
                 "hidden", "path", "index")

    def __init__(self, path: Path):
        self.path = str(path)


class Application:
    """What the user saw and answered; the release played."""

    def __init__(self, release: str, scene, module_file: Path, temporary: Path):
        self.release, self.scene, self.module_file, self.temporary = release, scene, module_file, temporary
        self.dialogs: list[tuple[str, str]] = []
        self.confirm_answers: list[bool] = []
        self.selected_module: str | None = None
        self.segment_editor = SegmentEditor()
        self.reloaded: list[str] = []
        self.pip_calls: list[tuple[tuple, dict]] = []
        self.layout = Layout(scene, scene._keep[0]) if hasattr(scene, "_keep") else None
        self.unload_slots: list = []


def _dialog(app: Application, kind: str):
    def show(text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
        app.dialogs.append((kind, text))
        if kind == "confirm":
            return app.confirm_answers.pop(0)
        return None
    return show


def _util_module(app: Application, release: str, real_util: types.ModuleType) -> types.ModuleType:
    api = release_api(release)["util"]

    class ChildWidgets:
        def __init__(self, widget):
            for child in widget.findChildren("QWidget"):
                setattr(self, child._state["properties"]["objectName"], child)

    def selectModule(module):
        app.selected_module = module if isinstance(module, str) else module.name

    def getModuleWidget(module):
        if module != "SegmentEditor":
            raise NotImplementedError(f"the harness plays only the Segment Editor's widget, not {module}")
        return types.SimpleNamespace(editor=app.segment_editor)

    played = {
        "loadUI": lambda path: slicer_qt.load_ui(Path(path)),
        "childWidgetVariables": ChildWidgets,
        "errorDisplay": _dialog(app, "error"), "infoDisplay": _dialog(app, "info"),
        "warningDisplay": _dialog(app, "warning"), "confirmOkCancelDisplay": _dialog(app, "confirm"),
        "selectModule": selectModule, "getModuleWidget": getModuleWidget, "mainWindow": lambda: None,
        "modulePath": lambda moduleName: str(app.module_file),
        "reloadScriptedModule": lambda moduleName: app.reloaded.append(moduleName),
        "settingsValue": lambda key, default, converter=None, settings=None: default,
        "pip_install": lambda *args, **kwargs: app.pip_calls.append((args, kwargs)),
    }
    module = types.ModuleType("slicer.util")
    for name, parameters in api["functions"].items():
        implementation = played.get(name) if name in _PLAYED_UTIL else getattr(real_util, name, None)
        setattr(module, name, strict_function("slicer.util", name, parameters, implementation, release))

    class WaitCursor:
        def __init__(self, show=True):
            self.show = show

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    for name, methods in api["classes"].items():
        if name == "WaitCursor":
            setattr(module, name, strict_class(name, methods, WaitCursor, release))
        elif name == "VTKObservationMixin":
            setattr(module, name, strict_class(name, methods, _Observations, release))
        elif hasattr(real_util, name):
            setattr(module, name, getattr(real_util, name))
    return module


class _Observations:
    """``slicer.util.VTKObservationMixin``: VTK observers remembered by (object, event, method)."""

    def __init__(self):
        self.Observations = []

    def addObserver(self, obj, event, method, group="none", priority=0.0):
        if self.hasObserver(obj, event, method):
            return  # Slicer warns and adds nothing
        tag = obj.AddObserver(event, method, priority)
        self.Observations.append([obj, event, method, group, tag, priority])

    def removeObserver(self, obj, event, method):
        for observation in list(self.Observations):
            if observation[:3] == [obj, event, method]:
                obj.RemoveObserver(observation[4])
                self.Observations.remove(observation)

    def removeObservers(self, method=None):
        for obj, event, observed, _, tag, _ in list(self.Observations):
            if method is None or observed == method:
                obj.RemoveObserver(tag)
        self.Observations = [o for o in self.Observations if method is not None and o[2] != method]

    def hasObserver(self, obj, event, method):
        return any(o[:3] == [obj, event, method] for o in self.Observations)


def _scripted_module(app: Application, release: str, slicer) -> types.ModuleType:
    api = release_api(release)["ScriptedLoadableModule"]

    class Module:
        def __init__(self, parent):
            self.parent = parent
            self.moduleName = type(self).__name__

        def resourcePath(self, filename):
            return str(app.module_file.parent / "Resources" / filename)

    class Widget:
        def __init__(self, parent=None):
            if parent is None:
                raise NotImplementedError("the harness plays the widget inside its module panel only")
            name = type(self).__name__
            self.moduleName = name[:-len("Widget")] if name.endswith("Widget") else name
            self.developerMode = False
            self.parent = parent
            self.layout = parent.layout()
            app.unload_slots.append(self._onModuleAboutToBeUnloaded)

        def resourcePath(self, filename):
            return str(app.module_file.parent / "Resources" / filename)

        def setup(self):
            self.setupDeveloperSection()

        def setupDeveloperSection(self):
            if self.developerMode:
                raise NotImplementedError("the harness plays Slicer without developer mode")

        def cleanup(self):
            pass

        def _onModuleAboutToBeUnloaded(self, moduleName):
            if moduleName == self.moduleName:
                self.cleanup()

        def onReload(self):
            slicer.util.reloadScriptedModule(self.moduleName)

    class Logic:
        def __init__(self, parent=None):
            name = type(self).__name__
            self.moduleName = name[:-len("Logic")] if name.endswith("Logic") else name
            self.isSingletonParameterNode = True

        def getParameterNode(self):
            scene = slicer.mrmlScene
            node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is None:
                node = scene.AddNode(self.createParameterNode())
            elif node.GetAttribute("ModuleName") != self.moduleName:
                node.SetAttribute("ModuleName", self.moduleName)
            return node

        def createParameterNode(self):
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            return node

    import unittest

    class Test:
        def delayDisplay(self, message, requestedDelay=None, msec=None):
            pass

    module = types.ModuleType("slicer.ScriptedLoadableModule")
    module.ScriptedLoadableModule = strict_class("ScriptedLoadableModule", api["ScriptedLoadableModule"], Module,
                                                 release)
    module.ScriptedLoadableModuleWidget = strict_class("ScriptedLoadableModuleWidget",
                                                       api["ScriptedLoadableModuleWidget"], Widget, release)
    module.ScriptedLoadableModuleLogic = strict_class("ScriptedLoadableModuleLogic", api["ScriptedLoadableModuleLogic"],
                                                      Logic, release)
    test_methods = {k: v for k, v in api["ScriptedLoadableModuleTest"].items() if k != "__init__"}
    module.ScriptedLoadableModuleTest = strict_class("ScriptedLoadableModuleTest", test_methods, Test, release,
                                                     bases=(unittest.TestCase,))
    return module


class _Application:
    """``slicer.app``: temporaryPath, layoutManager(), moduleManager(), testingEnabled()."""

    def __init__(self, app: Application):
        self._app = app
        self._startup = slicer_qt.Widget("QWidget", "application")
        self._startup._state["signals"].add("startupCompleted()")

    def connect(self, signal, slot):
        return self._startup.connect(signal, slot)

    def completeStartup(self) -> None:
        """The application's startupCompleted() signal (tests only)."""
        self._startup.emit("startupCompleted()")

    @property
    def temporaryPath(self) -> str:
        return str(self._app.temporary)

    def layoutManager(self):
        return self._app.layout

    def moduleManager(self):
        raise NotImplementedError("the harness does not play the module manager")

    def testingEnabled(self) -> bool:
        return True


@contextlib.contextmanager
def slicer_application(release: str, scene, module_file: Path, temporary: Path):
    """Slicer ``release`` around ``scene`` (see the module docstring); everything is put back after."""
    import slicer

    app = Application(release, scene, module_file, temporary)
    util = _util_module(app, release, sys.modules["slicer.util"])
    modules = {
        "qt": slicer_qt.qt_module(), "ctk": slicer_qt.ctk_module(), "slicer.util": util,
        "slicer.ScriptedLoadableModule": _scripted_module(app, release, slicer),
        "slicer.parameterNodeWrapper": parameter_node_wrapper_module(release),
    }
    packaging = release_api(release)["packaging"]
    if packaging is not None:
        module = types.ModuleType("slicer.packaging")
        for name, parameters in packaging.items():
            implementation = (lambda *args, **kwargs: app.pip_calls.append((args, kwargs))) \
                if name == "pip_install" else None
            setattr(module, name, strict_function("slicer.packaging", name, parameters, implementation, release))
        modules["slicer.packaging"] = module
    saved_modules = {name: sys.modules.get(name) for name in [*modules, "slicer.packaging"]}
    attributes = ("util", "app", "modules", "mrmlScene", "packaging", "ScriptedLoadableModule",
                  "parameterNodeWrapper", "dicomDatabase")
    saved_attributes = {name: getattr(slicer, name, None) for name in attributes}
    sys.modules.pop("slicer.packaging", None)
    sys.modules.update(modules)
    slicer.util, slicer.app, slicer.mrmlScene = util, _Application(app), scene
    slicer.ScriptedLoadableModule = modules["slicer.ScriptedLoadableModule"]
    slicer.parameterNodeWrapper = modules["slicer.parameterNodeWrapper"]
    if "slicer.packaging" in modules:
        slicer.packaging = modules["slicer.packaging"]
    elif hasattr(slicer, "packaging"):
        del slicer.packaging
    terminologies = slicer.vtkSlicerTerminologiesModuleLogic()
    keep = getattr(scene, "_keep", None)
    slicer.modules = types.SimpleNamespace(terminologies=types.SimpleNamespace(logic=lambda: terminologies))
    if keep is not None:
        slicer.modules.volumes = types.SimpleNamespace(logic=lambda: keep[2])
        slicer.modules.segmentations = types.SimpleNamespace(logic=lambda: keep[3])
    app.terminologies = terminologies
    try:
        yield app
    finally:
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        for name, value in saved_attributes.items():
            if value is None:
                if hasattr(slicer, name):
                    delattr(slicer, name)
            else:
                setattr(slicer, name, value)


def annotated_choices(annotation) -> tuple:
    """The choices of an ``Annotated[str, Choice([...])]`` field."""
    return tuple(typing.get_args(annotation)[1].choices)
