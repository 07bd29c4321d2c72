"""Strict stand-ins for the Qt, CTK and qMRML widgets the module's ``.ui`` holds, and the ``qt`` names
the module uses, as PythonQt shows them to Slicer's Python.

Each widget class has only the Qt properties (read and assigned as attributes, as PythonQt does),
the signals (for ``connect``/``disconnect``, by their normalised signature) and the methods listed
here, which are those of the Qt 5.15, CTK and qMRML headers; anything else raises
AttributeError, and connecting a signal the class lacks raises ValueError. Connections are
recorded, so a test can check that every control is wired and that none is wired twice.
The widget tree is read from the real ``.ui`` file.
"""

from __future__ import annotations

import types
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

_BUTTON_SIGNALS = {"clicked()", "clicked(bool)", "toggled(bool)", "pressed()", "released()"}
_WIDGET = {"properties": {"enabled": True, "visible": True, "toolTip": "", "objectName": "", "minimumHeight": 0},
           "signals": {"destroyed()", "objectNameChanged(QString)"},
           "methods": {"findChildren", "property", "setProperty", "isWidgetType", "connect", "disconnect",
                       "setEnabled", "setVisible", "show", "hide"}}
#: Class -> (base, properties with their defaults, signals, methods) beyond the base's.
CLASSES = {
    "QWidget": (None, {}, set(), set()),
    "qMRMLWidget": ("QWidget", {}, {"mrmlSceneChanged(vtkMRMLScene*)"}, {"setMRMLScene", "mrmlScene"}),
    "QLabel": ("QWidget", {"text": "", "wordWrap": False, "textFormat": 0, "openExternalLinks": False},
               {"linkActivated(QString)"}, {"setText"}),
    "QAbstractButton": ("QWidget", {"text": "", "checkable": False, "checked": False, "shortcut": ""},
                        _BUTTON_SIGNALS, {"click", "toggle", "setText", "setChecked"}),
    "QPushButton": ("QAbstractButton", {}, set(), set()),
    "QCheckBox": ("QAbstractButton", {}, {"stateChanged(int)"}, set()),
    "ctkCollapsibleButton": ("QAbstractButton", {"collapsed": False}, {"contentsCollapsed(bool)"}, set()),
    "QComboBox": ("QWidget", {"currentIndex": -1, "currentText": ""},
                  {"currentIndexChanged(int)", "currentTextChanged(QString)", "activated(int)"},
                  {"addItem", "count", "itemText", "findText", "setCurrentIndex", "setCurrentText"}),
    "QSpinBox": ("QWidget", {"value": 0, "minimum": 0, "maximum": 99, "specialValueText": ""},
                 {"valueChanged(int)", "textChanged(QString)"}, {"setValue"}),
    "QProgressBar": ("QWidget", {"value": 0, "minimum": 0, "maximum": 100, "textVisible": True},
                     {"valueChanged(int)"}, {"setValue", "reset"}),
    "ctkPathLineEdit": ("QWidget", {"currentPath": "", "filters": 0, "label": ""},
                        {"currentPathChanged(QString)", "validInputChanged(bool)"}, {"setCurrentPath"}),
    "qMRMLNodeComboBox": ("qMRMLWidget", {"nodeTypes": [], "noneEnabled": False, "addEnabled": True,
                                          "removeEnabled": True, "renameEnabled": False, "showChildNodeTypes": True,
                                          "selectNodeUponCreation": True, "currentNodeID": "", "baseName": "",
                                          "editEnabled": False, "noneDisplay": ""},
                          {"currentNodeChanged(vtkMRMLNode*)", "currentNodeChanged(bool)",
                           "currentNodeIDChanged(QString)", "nodeAdded(vtkMRMLNode*)"},
                          {"currentNode", "setCurrentNode", "setCurrentNodeID"}),
    # The module panel Slicer hands the widget (its ``parent``).
    "qSlicerScriptedLoadableModuleWidget": ("qMRMLWidget", {"isEntered": False}, set(), {"layout"}),
}


def _spec(class_name: str) -> tuple[dict, set, set]:
    properties, signals, methods = dict(_WIDGET["properties"]), set(_WIDGET["signals"]), set(_WIDGET["methods"])
    chain = []
    while class_name is not None:
        if class_name not in CLASSES:
            raise ValueError(f"the .ui uses {class_name}, which the test harness does not play")
        chain.append(CLASSES[class_name])
        class_name = CLASSES[class_name][0]
    for _, own_properties, own_signals, own_methods in reversed(chain):
        properties.update(own_properties)
        signals |= own_signals
        methods |= own_methods
    return properties, signals, methods


class Widget:
    """One widget of the ``.ui``: see the module docstring."""

    def __init__(self, class_name: str, name: str, dynamic: dict | None = None):
        properties, signals, methods = _spec(class_name)
        state = {"className": class_name, "properties": properties, "signals": signals, "methods": methods,
                 "dynamic": dict(dynamic or {}), "connections": [], "children": [], "scene": None}
        object.__setattr__(self, "_state", state)
        properties["objectName"] = name

    # PythonQt: Qt properties read and assigned as attributes; methods by name.
    def __getattribute__(self, name):
        if name.startswith("_") or name in ("className", "connections", "emit", "children"):
            return object.__getattribute__(self, name)
        state = object.__getattribute__(self, "_state")
        if name in state["properties"]:
            return state["properties"][name]
        if name in state["methods"]:
            return object.__getattribute__(self, name)
        raise AttributeError(f"{state['className']} has no attribute '{name}' in Slicer's PythonQt")

    def __setattr__(self, name, value):
        state = self._state
        if name not in state["properties"]:
            raise AttributeError(f"{state['className']} has no property '{name}'")
        self._assign(name, value)

    @property
    def className(self) -> str:
        return self._state["className"]

    @property
    def connections(self) -> list[tuple[str, Callable]]:
        return list(self._state["connections"])

    @property
    def children(self) -> list[Widget]:
        return list(self._state["children"])

    def _assign(self, name, value):
        properties = self._state["properties"]
        old = properties.get(name)
        properties[name] = value
        if old == value:
            return
        kind = self._state["className"]
        if name == "checked" and properties.get("checkable", False) or name == "checked" and kind == "QCheckBox":
            self.emit("toggled(bool)", bool(value))
            if kind == "QCheckBox":
                self.emit("stateChanged(int)", 2 if value else 0)
        elif name == "collapsed":
            self.emit("contentsCollapsed(bool)", bool(value))
        elif name == "value":
            self.emit("valueChanged(int)", value)
        elif name == "currentPath":
            self.emit("currentPathChanged(QString)", value)
        elif name == "currentText":
            self.emit("currentTextChanged(QString)", value)

    def emit(self, signal: str, *arguments) -> None:
        """Play a signal: every slot connected to it is called, as Qt would (for tests)."""
        if signal not in self._state["signals"]:
            raise ValueError(f"{self.className} has no signal {signal}")
        for connected, slot in list(self._state["connections"]):
            if connected == signal:
                count = signal[signal.index("(") + 1:-1].count(",") + (0 if signal.endswith("()") else 1)
                slot(*arguments[:count])

    def connect(self, signal: str, slot: Callable) -> bool:
        if signal not in self._state["signals"]:
            raise ValueError(f"{self.className} has no signal {signal}")
        if not callable(slot):
            raise TypeError(f"connect({signal!r}, ...) needs a callable slot")
        self._state["connections"].append((signal, slot))
        return True

    def disconnect(self, signal: str, slot: Callable | None = None) -> bool:
        connections = self._state["connections"]
        kept = [(s, f) for s, f in connections if not (s == signal and (slot is None or f == slot))]
        removed = len(connections) != len(kept)
        connections[:] = kept
        return removed

    def property(self, name: str):
        return self._state["dynamic"].get(name)

    def setProperty(self, name: str, value) -> bool:
        if name in self._state["properties"]:
            self._assign(name, value)
            return True
        self._state["dynamic"][name] = value
        return False

    def isWidgetType(self) -> bool:
        return True

    def findChildren(self, kind) -> list[Widget]:
        found = []
        for child in self._state["children"]:
            found.append(child)
            found += child.findChildren(kind)
        return found

    def setEnabled(self, enabled: bool) -> None:
        self._assign("enabled", bool(enabled))

    def setVisible(self, visible: bool) -> None:
        self._assign("visible", bool(visible))

    def show(self) -> None:
        self._assign("visible", True)

    def hide(self) -> None:
        self._assign("visible", False)

    def setText(self, text: str) -> None:
        self._assign("text", text)

    def setChecked(self, checked: bool) -> None:
        self._assign("checked", bool(checked))

    def click(self) -> None:
        """A user's click: toggles a checkable button, then emits clicked."""
        if not self._state["properties"]["enabled"]:
            return
        if self._state["properties"]["checkable"]:
            self._assign("checked", not self._state["properties"]["checked"])
        self.emit("clicked()")
        self.emit("clicked(bool)", self._state["properties"]["checked"])

    def toggle(self) -> None:
        self._assign("checked", not self._state["properties"]["checked"])

    def setValue(self, value: int) -> None:
        self._assign("value", value)

    def reset(self) -> None:
        self._assign("value", self._state["properties"]["minimum"])

    def setCurrentPath(self, path: str) -> None:
        self._assign("currentPath", path)

    # QComboBox
    def addItem(self, text: str) -> None:
        self._state["items"] = [*self._state.get("items", []), text]
        if self._state["properties"]["currentIndex"] < 0:
            self.setCurrentIndex(0)

    def count(self) -> int:
        return len(self._state.get("items", []))

    def itemText(self, index: int) -> str:
        return self._state.get("items", [])[index]

    def findText(self, text: str) -> int:
        items = self._state.get("items", [])
        return items.index(text) if text in items else -1

    def setCurrentIndex(self, index: int) -> None:
        properties = self._state["properties"]
        if properties["currentIndex"] == index:
            return
        properties["currentIndex"] = index
        properties["currentText"] = self.itemText(index) if index >= 0 else ""
        self.emit("currentIndexChanged(int)", index)
        self.emit("currentTextChanged(QString)", properties["currentText"])

    def setCurrentText(self, text: str) -> None:
        if self.findText(text) >= 0:
            self.setCurrentIndex(self.findText(text))

    # qMRMLWidget, qMRMLNodeComboBox
    def layout(self) -> VBoxLayout:
        return self._state.setdefault("layout", VBoxLayout(self))

    def setMRMLScene(self, scene) -> None:
        self._state["scene"] = scene
        if self._state["className"] == "qMRMLNodeComboBox" and scene is not None:
            import vtk

            @vtk.calldata_type(vtk.VTK_OBJECT)
            def removed(caller, event, node):  # the combo box drops a node removed from the scene
                if node.GetID() == self._state["properties"]["currentNodeID"]:
                    self.setCurrentNode(None)
            self._state["removedObserver"] = (removed, scene.AddObserver(scene.NodeRemovedEvent, removed))
        self.emit("mrmlSceneChanged(vtkMRMLScene*)", scene)

    def mrmlScene(self):
        return self._state["scene"]

    def currentNode(self):
        scene, node_id = self._state["scene"], self._state["properties"]["currentNodeID"]
        return scene.GetNodeByID(node_id) if scene is not None and node_id else None

    def setCurrentNode(self, node) -> None:
        node_id = node.GetID() if node is not None else ""
        if node is not None and not any(node.IsA(kind) for kind in self._state["properties"]["nodeTypes"]):
            return  # Qt ignores a node the combo box does not list
        if node_id == self._state["properties"]["currentNodeID"]:
            return
        self._state["properties"]["currentNodeID"] = node_id
        self.emit("currentNodeChanged(vtkMRMLNode*)", node)
        self.emit("currentNodeChanged(bool)", node is not None)
        self.emit("currentNodeIDChanged(QString)", node_id)

    def setCurrentNodeID(self, node_id: str) -> None:
        scene = self._state["scene"]
        self.setCurrentNode(scene.GetNodeByID(node_id) if scene is not None and node_id else None)


class VBoxLayout:
    """The panel's ``QVBoxLayout``: ``addWidget`` and ``addStretch``."""

    def __init__(self, owner: Widget):
        self._owner = owner

    def addWidget(self, widget: Widget, stretch: int = 0, alignment: int = 0) -> None:
        self._owner._state["children"].append(widget)

    def addStretch(self, stretch: int = 0) -> None:
        pass


def _value(element: ET.Element):
    for kind, convert in (("string", str), ("bool", lambda t: t == "true"), ("number", int),
                          ("enum", str), ("set", str)):
        found = element.find(kind)
        if found is not None:
            return convert(found.text or "")
    found = element.find("stringlist")
    return [s.text for s in found.findall("string")] if found is not None else None


def load_ui(path: Path) -> Widget:
    """The widget tree of a Qt Designer ``.ui`` file, with the properties it sets."""
    def build(element: ET.Element) -> Widget:
        dynamic = {p.get("name"): _value(p) for p in element.findall("property") if p.get("stdset") == "0"}
        widget = Widget(element.get("class"), element.get("name"), dynamic)
        for prop in element.findall("property"):
            if prop.get("stdset") != "0" and prop.get("name") in widget._state["properties"]:
                value = _value(prop)
                if value is not None:
                    widget._state["properties"][prop.get("name")] = value
        for item in element.findall("item"):
            widget.addItem(_value(item.find("property")))
        for child in element.iter("widget"):
            if child is not element and _parent_widget(element, child):
                widget._state["children"].append(build(child))
        return widget

    root = ET.parse(path).getroot()
    top = build(root.find("widget"))
    named = {w._state["properties"]["objectName"]: w for w in [top, *top.findChildren("QWidget")]}
    for connection in root.iter("connection"):  # the .ui's own signal-slot connections
        sender, receiver = named[connection.findtext("sender")], named[connection.findtext("receiver")]
        slot = connection.findtext("slot")
        sender.connect(connection.findtext("signal"), getattr(receiver, slot[:slot.index("(")]))
    return top


def _parent_widget(parent: ET.Element, child: ET.Element) -> bool:
    """True when ``child`` is a widget directly under ``parent`` (layouts and items in between)."""
    def search(element):
        for sub in element:
            if sub is child:
                return True
            if sub.tag != "widget" and search(sub):
                return True
        return False
    return search(parent)


class QTimer:
    """``qt.QTimer``: interval, start, stop, the timeout() signal (tests call ``fire``)."""

    def __init__(self, parent=None):
        self._widget = Widget("QWidget", "")
        self._widget._state["signals"].add("timeout()")
        self._interval, self._active, self._single = 0, False, False

    @property
    def interval(self) -> int:
        return self._interval

    def setInterval(self, msec: int) -> None:
        self._interval = int(msec)

    def isActive(self) -> bool:
        return self._active

    def start(self, msec: int | None = None) -> None:
        if msec is not None:
            self._interval = int(msec)
        self._active = True

    def stop(self) -> None:
        self._active = False

    def connect(self, signal: str, slot: Callable) -> bool:
        return self._widget.connect(signal, slot)

    def fire(self) -> None:
        """One timeout, as the event loop would deliver it (tests only)."""
        if self._active:
            self._widget.emit("timeout()")


class QFileDialog:
    """``qt.QFileDialog``'s static functions; tests queue the answers the user gives."""

    answers: list[str] = []

    @staticmethod
    def getSaveFileName(parent=None, caption="", directory="", filter="", selectedFilter=None, options=0):
        return QFileDialog.answers.pop(0)

    @staticmethod
    def getExistingDirectory(parent=None, caption="", directory="", options=1):
        return QFileDialog.answers.pop(0)


def qt_module() -> types.ModuleType:
    """The ``qt`` module: only the names the module uses."""
    module = types.ModuleType("qt")
    module.QTimer = QTimer
    module.QFileDialog = QFileDialog
    module.QWidget = "QWidget"
    return module


def ctk_module() -> types.ModuleType:
    """The ``ctk`` module: the module's script uses none of its names (the .ui's CTK widgets are played above)."""
    return types.ModuleType("ctk")
