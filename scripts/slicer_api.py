"""Read a Slicer source checkout and write, as data, the API the CTVDelineation module may use.

For each supported release (a git tag of github.com/Slicer/Slicer) it records:

* the classes of ``Base/Python/slicer/ScriptedLoadableModule.py`` and their methods' parameters,
* every top-level function and class (with its methods) of ``Base/Python/slicer/util.py``,
* the top-level functions of ``Base/Python/slicer/packaging.py`` (absent before 5.12),
* what ``@parameterNodeWrapper`` adds to a class (the ``checkedSetAttr`` names and their
  parameters), the public names the ``slicer.parameterNodeWrapper`` package exports, and
  whether ``connectGui`` returns its tag (it does not on 5.8),
* the Python version Slicer embeds and the numpy, pydicom and SimpleITK it bundles.

Parameters are ``[name, kind, hasDefault]`` with ``kind`` one of ``positional``, ``varargs``,
``keyword`` (keyword-only) and ``varkw``; defaults and annotations are left out (the test
harness checks names and arity, not values). The harness ``Testing/slicer_support.py`` builds its
stand-ins from the file this writes (``Testing/slicer_api.json``, committed).

Usage: ``python scripts/slicer_api.py SLICER_GIT_DIR [--out Testing/slicer_api.json]``
(``SLICER_GIT_DIR`` is a clone, bare or not, that has the release tags).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
from pathlib import Path

#: Supported release -> the tag read (the newest patch release of each line).
RELEASES = {"5.8": "v5.8.1", "5.10": "v5.10.0", "5.12": "v5.12.3"}
PYTHON_PACKAGE = "Base/Python/slicer"
OUT = Path(__file__).resolve().parents[1] / "Testing" / "slicer_api.json"


def show(git_dir: Path, tag: str, path: str) -> str | None:
    """The file at ``tag`` (None when the release has no such file)."""
    result = subprocess.run(["git", "-C", str(git_dir), "show", f"{tag}:{path}"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def parameters(args: ast.arguments) -> list[list]:
    """``[name, kind, hasDefault]`` for each parameter of a function."""
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    found = [[a.arg, "positional", i >= first_default] for i, a in enumerate(positional)]
    if args.vararg:
        found.append([args.vararg.arg, "varargs", False])
    found += [[a.arg, "keyword", d is not None] for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    if args.kwarg:
        found.append([args.kwarg.arg, "varkw", False])
    return found


def functions_and_classes(tree: ast.Module) -> tuple[dict, dict]:
    """Top-level functions -> parameters; top-level classes -> {method -> parameters}."""
    functions, classes = {}, {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions[node.name] = parameters(node.args)
        elif isinstance(node, ast.ClassDef):
            classes[node.name] = {m.name: parameters(m.args) for m in node.body if isinstance(m, ast.FunctionDef)}
    return functions, classes


def exported_names(source: str) -> list[str]:
    """A module's ``__all__``."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return [ast.literal_eval(e) for e in node.value.elts]
    return []


def wrapper_api(git_dir: Path, tag: str) -> dict:
    """What ``@parameterNodeWrapper`` gives a class, and what the package exports."""
    folder = f"{PYTHON_PACKAGE}/parameterNodeWrapper"
    wrapper = ast.parse(show(git_dir, tag, f"{folder}/wrapper.py"))
    functions = {n.name: n for n in wrapper.body if isinstance(n, ast.FunctionDef)}
    methods = {}
    for call in ast.walk(wrapper):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "checkedSetAttr":
            name, value = ast.literal_eval(call.args[1]), call.args[2]
            if isinstance(value, ast.Lambda):
                methods[name] = parameters(value.args)
            elif isinstance(value, ast.Name) and value.id in functions:
                methods[name] = parameters(functions[value.id].args)
            else:  # a value or a property (e.g. allParameters, dataType): present, not a plain method
                methods[name] = None
    connect = functions["_connectGui"]
    returns_tag = any(isinstance(n, ast.Return) and n.value is not None for n in ast.walk(connect))
    init = show(git_dir, tag, f"{folder}/__init__.py")
    exports = []
    for node in ast.parse(init).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.names[0].name == "*":
                exports += exported_names(show(git_dir, tag, f"{folder}/{node.module}.py"))
            else:
                exports += [a.name for a in node.names]
    return {"methods": methods, "connectGuiReturnsTag": returns_tag, "exports": sorted(set(exports))}


def bundled(git_dir: Path, tag: str) -> dict:
    """The Python version and the numpy, pydicom and SimpleITK versions a release bundles."""
    cmake = show(git_dir, tag, "CMakeLists.txt")
    found = {"python": re.search(r'set\(Slicer_REQUIRED_PYTHON_VERSION "([\d.]+)"\)', cmake).group(1)}
    numpy = show(git_dir, tag, "SuperBuild/External_python-numpy.cmake")
    found["numpy"] = re.search(r"numpy==([\w.]+)", numpy).group(1)
    dicom = show(git_dir, tag, "SuperBuild/External_python-dicom-requirements.cmake")
    found["pydicom"] = re.search(r"pydicom==([\w.]+)", dicom).group(1)
    wheel = show(git_dir, tag, "SuperBuild/External_python-SimpleITK.cmake")
    if wheel and (match := re.search(r"simpleitk==([\w.]+)", wheel, re.IGNORECASE)):
        found["SimpleITK"] = match.group(1)
    else:  # built from Slicer's SimpleITK fork: the tag's comment names the release
        source = show(git_dir, tag, "SuperBuild/External_SimpleITK.cmake")
        found["SimpleITK"] = re.search(r"slicer-v(\d+\.\d+\.\d+)", source).group(1)
    return found


def release_api(git_dir: Path, tag: str) -> dict:
    scripted_functions, scripted = functions_and_classes(
        ast.parse(show(git_dir, tag, f"{PYTHON_PACKAGE}/ScriptedLoadableModule.py")))
    util_functions, util_classes = functions_and_classes(ast.parse(show(git_dir, tag, f"{PYTHON_PACKAGE}/util.py")))
    packaging_source = show(git_dir, tag, f"{PYTHON_PACKAGE}/packaging.py")
    return {
        "tag": tag,
        "bundled": bundled(git_dir, tag),
        "ScriptedLoadableModule": scripted,
        "util": {"functions": util_functions, "classes": util_classes},
        "packaging": functions_and_classes(ast.parse(packaging_source))[0] if packaging_source else None,
        "parameterNodeWrapper": wrapper_api(git_dir, tag),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slicer_git_dir", type=Path)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    api = {"source": "github.com/Slicer/Slicer", "releases": {
        release: release_api(args.slicer_git_dir, tag) for release, tag in RELEASES.items()}}
    args.out.write_text(json.dumps(api, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
