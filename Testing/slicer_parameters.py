"""``slicer.parameterNodeWrapper`` at one release, on a real ``vtkMRMLScriptedModuleNode``.

The decorated class gets exactly the names Slicer's ``@parameterNodeWrapper`` adds at that
release (``slicer_api.json``) with their parameters; its typed fields are stored in the real
MRML node (strings as parameters, nodes as node references), checked by ``Choice`` and
``WithinRange`` as Slicer checks them, and bound to the ``.ui``'s widgets by connectors that use
only the widgets' real signals. As in Slicer 5.8, ``connectGui`` returns None there (5.10 and
later: the tag ``disconnectGui`` needs), and 5.8's ``disconnectGui`` leaves the wrapper's
observer on the node; the wrapper counts its live GUI observers (``_guiObserverCount``) so tests
can see what piles up.
"""

from __future__ import annotations

import types
import typing

import vtk
from slicer_api import release_api, strict_class, strict_function


class Choice:
    def __init__(self, choices):
        self.choices = choices

    def validate(self, value) -> None:
        if value not in self.choices:
            raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


class _Field:
    def __init__(self, name: str, annotation, default):
        self.name = name
        if typing.get_origin(annotation) is typing.Annotated:
            self.type, *self.validators = typing.get_args(annotation)
        else:
            self.type, self.validators = annotation, []
        self.isNode = isinstance(self.type, type) and self.type.__name__.startswith("vtkMRML")
        self.default = default

    def read(self, node):
        if self.isNode:
            return node.GetNodeReference(self.name)
        text = node.GetParameter(self.name)
        if self.type is bool:
            return text == "True"
        return self.type(text)

    def write(self, node, value) -> None:
        if self.isNode:
            if value is not None and not isinstance(value, self.type):
                raise ValueError(f"{self.name} must be a {self.type.__name__}, not {type(value).__name__}")
            node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
            return
        if not isinstance(value, self.type):
            raise TypeError(f"{self.name} must be {self.type.__name__}, not {type(value).__name__}")
        for validator in self.validators:
            validator.validate(value)
        node.SetParameter(self.name, str(value))


def _connector(widget, field: _Field):
    """(read, write, signal) for a widget, through the widget's own API."""
    kind = widget.className
    if kind == "qMRMLNodeComboBox":
        return widget.currentNode, widget.setCurrentNode, "currentNodeChanged(vtkMRMLNode*)"
    if kind == "QComboBox":
        return (lambda: widget.currentText), widget.setCurrentText, "currentIndexChanged(int)"
    if kind == "QSpinBox":
        return (lambda: widget.value), widget.setValue, "valueChanged(int)"
    if kind == "QCheckBox":
        return (lambda: widget.checked), widget.setChecked, "toggled(bool)"
    raise ValueError(f"Slicer has no connector for a {kind} bound to {field.name}")


def _implementation(release: str) -> type:
    returns_tag = release_api(release)["parameterNodeWrapper"]["connectGuiReturnsTag"]

    class Wrapper:
        def __init__(self, parameterNode):
            self.parameterNode = parameterNode
            self._guis, self._nextTag, self._observers, self._guiObserverCount = {}, 0, {}, 0
            for name, field in self.allParameters.items():
                if not self.isCached(name):
                    field.write(parameterNode, field.default)

        def isCached(self, name):
            field = self.allParameters[name]
            return bool(self.parameterNode.GetNodeReferenceID(name) if field.isNode
                        else self.parameterNode.GetParameterNames().count(name))

        def default(self, name):
            return self.allParameters[name].default

        def getValue(self, name):
            return self.allParameters[name].read(self.parameterNode)

        def setValue(self, name, value):
            self.allParameters[name].write(self.parameterNode, value)

        def connectParametersToGui(self, mapping):
            tag, self._nextTag = self._nextTag, self._nextTag + 1
            bindings = {}
            for name, widget in mapping.items():
                read, write, signal = _connector(widget, self.allParameters[name])
                write(self.getValue(name))

                def changed(*args, name=name, read=read):
                    self.setValue(name, read())
                widget.connect(signal, changed)
                bindings[name] = (widget, signal, changed, write)
            self._guis[tag] = bindings
            self._observers[tag] = self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent,
                                                                  lambda caller, event: self._updateGui())
            self._guiObserverCount += 1
            return tag

        def _updateGui(self):
            for bindings in list(self._guis.values()):
                for name, (_, _, _, write) in bindings.items():
                    write(self.getValue(name))

        def connectGui(self, gui):
            widgets = gui.findChildren("QWidget") if getattr(gui, "isWidgetType", lambda: False)() \
                else list(vars(gui).values())
            mapping = {w.property("SlicerParameterName"): w for w in widgets if w.property("SlicerParameterName")}
            tag = self.connectParametersToGui(mapping)
            return tag if returns_tag else None

        def disconnectGui(self, guiTag):
            for widget, signal, changed, _ in self._guis.pop(guiTag, {}).values():
                widget.disconnect(signal, changed)
            if returns_tag and guiTag in self._observers:  # 5.8 leaves its observer on the node
                self.parameterNode.RemoveObserver(self._observers.pop(guiTag))
                self._guiObserverCount -= 1

        def StartModify(self):
            return self.parameterNode.StartModify()

        def EndModify(self, wasModified):
            return self.parameterNode.EndModify(wasModified)

        def AddObserver(self, event, callback, priority=0.0):
            return self.parameterNode.AddObserver(event, callback, priority)

        def RemoveObserver(self, tag):
            self.parameterNode.RemoveObserver(tag)

        def Modified(self):
            self.parameterNode.Modified()

    return Wrapper


def parameter_node_wrapper_module(release: str) -> types.ModuleType:
    """``slicer.parameterNodeWrapper`` at ``release``: ``parameterNodeWrapper``, ``Choice``, ``WithinRange``;
    its other exports exist but are not played."""
    api = release_api(release)["parameterNodeWrapper"]
    implementation = _implementation(release)

    def parameterNodeWrapper(classtype):
        hints = typing.get_type_hints(classtype, include_extras=True)
        fields = {name: _Field(name, hint, getattr(classtype, name, None)) for name, hint in hints.items()}
        methods = {name: parameters for name, parameters in api["methods"].items() if parameters is not None}
        properties = {name: property(lambda self, name=name: self.getValue(name),
                                     lambda self, value, name=name: self.setValue(name, value)) for name in fields}
        wrapped = strict_class(classtype.__name__, {"__init__": [["self", "positional", False],
                                                                 ["parameterNode", "positional", False]], **methods},
                               implementation, release,
                               extra={"allParameters": fields, "_is_parameter_node_wrapper": True,
                                      "__annotations__": classtype.__annotations__,
                                      "__doc__": classtype.__doc__, "_updateGui": implementation._updateGui,
                                      **properties})
        wrapped.__module__ = classtype.__module__
        return wrapped

    module = types.ModuleType("slicer.parameterNodeWrapper")
    played = {"parameterNodeWrapper": parameterNodeWrapper, "Choice": Choice, "WithinRange": WithinRange}
    for name in api["exports"]:
        setattr(module, name, played.get(name) or strict_function("slicer.parameterNodeWrapper", name, None, None,
                                                                   release))
    return module
