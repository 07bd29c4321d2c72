"""Slicer's Python API at a supported release, as data, and stand-ins held to it.

``slicer_api.json`` is written by ``scripts/slicer_api.py`` from Slicer's own source at the
release tags (names and parameters of ``ScriptedLoadableModule``, ``slicer.util``,
``slicer.packaging``, ``@parameterNodeWrapper``). :func:`strict_function` and
:func:`strict_class` build stand-ins that have exactly those names with those parameters: a
name the release lacks raises AttributeError, a call Slicer's signature would refuse raises
TypeError, and a name Slicer has but the harness does not play raises NotImplementedError (so a
test never passes on a call nobody checked).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path

API_FILE = Path(__file__).resolve().parent / "slicer_api.json"
RELEASES = ("5.8", "5.10", "5.12")
_KINDS = {"positional": inspect.Parameter.POSITIONAL_OR_KEYWORD, "varargs": inspect.Parameter.VAR_POSITIONAL,
          "keyword": inspect.Parameter.KEYWORD_ONLY, "varkw": inspect.Parameter.VAR_KEYWORD}


@functools.lru_cache(maxsize=None)
def release_api(release: str) -> dict:
    """The recorded API of one release ("5.8", "5.10" or "5.12")."""
    return json.loads(API_FILE.read_text(encoding="utf-8"))["releases"][release]


def signature(parameters: list) -> inspect.Signature:
    """An ``inspect.Signature`` from the recorded ``[name, kind, hasDefault]`` list."""
    return inspect.Signature([
        inspect.Parameter(name, _KINDS[kind], default=None if has_default else inspect.Parameter.empty)
        for name, kind, has_default in parameters])


def _unplayed(owner: str, name: str, release: str) -> Callable:
    def unplayed(*args, **kwargs):
        raise NotImplementedError(f"{owner}.{name} exists in Slicer {release}, but the test harness does not play it")
    return unplayed


def strict_function(owner: str, name: str, parameters: list | None, implementation: Callable | None,
                    release: str) -> Callable:
    """``implementation`` behind Slicer's signature: arguments are bound to the recorded parameters
    first (TypeError as Python would raise it in Slicer), then passed on unchanged."""
    if implementation is None:
        return _unplayed(owner, name, release)
    if parameters is None:
        return implementation
    expected = signature(parameters)

    @functools.wraps(implementation)
    def checked(*args, **kwargs):
        try:
            expected.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{owner}.{name}{expected} in Slicer {release}: {error}") from None
        return implementation(*args, **kwargs)

    checked.__signature__ = expected
    return checked


def strict_class(name: str, methods: dict[str, list], implementation: type | None, release: str,
                 bases: tuple = (), extra: dict | None = None) -> type:
    """A class with exactly ``methods`` (each with its recorded parameters), played by the
    same-named methods of ``implementation``; ``extra`` adds class attributes Slicer sets
    (e.g. ``_is_parameter_node_wrapper``)."""
    namespace = {"__doc__": f"Slicer {release}'s {name}, played by the test harness."}
    for method, parameters in methods.items():
        body = getattr(implementation, method, None) if implementation is not None else None
        if method == "__init__" and body is None:
            body = _unplayed(name, method, release)
        namespace[method] = strict_function(name, method, parameters, body, release)
    namespace.update(extra or {})
    return type(name, bases, namespace)


def scripted_methods(release: str, class_name: str) -> dict[str, list]:
    return release_api(release)["ScriptedLoadableModule"][class_name]


def util_parameters(release: str, name: str) -> list | None:
    """The parameters of ``slicer.util.<name>`` at the release; AttributeError when it has none."""
    functions = release_api(release)["util"]["functions"]
    if name not in functions:
        raise AttributeError(f"module 'slicer.util' has no attribute '{name}' in Slicer {release}")
    return functions[name]


def util_class_methods(release: str, name: str) -> dict[str, list]:
    classes = release_api(release)["util"]["classes"]
    if name not in classes:
        raise AttributeError(f"module 'slicer.util' has no attribute '{name}' in Slicer {release}")
    return classes[name]
