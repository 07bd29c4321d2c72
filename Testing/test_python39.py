"""The code that runs inside Slicer (ctv_core, the module) parses and runs on Python 3.9, which Slicer 5.8
embeds (3.9.10; 5.10 and 5.12: 3.12.10).

Two checks, since neither sees everything alone:

* ``vermin -t=3.9-`` (a tool made for this): syntax, standard-library names and keyword arguments
  newer than 3.9 (``match``, ``dataclass(slots=...)``, ``zip(strict=...)``, ...). Its union-type
  detection is left off: it flags every ``X | Y`` annotation, also the ones
  ``from __future__ import annotations`` keeps from being evaluated.
* an AST walk for ``X | Y`` types that 3.9 would evaluate: annotations in a file without that
  ``__future__`` import, ``isinstance``/``issubclass`` on a union, and ``| None`` outside annotations.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SLICER_SIDE = [REPO / "ctv_core", REPO / "CTVDelineation"]


def _vermin() -> str:
    path = shutil.which("vermin", path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail("vermin is not installed; run scripts/setup.sh (it comes with the test extra)")
    return path


def test_vermin_finds_nothing_newer_than_python_39():
    done = subprocess.run([_vermin(), "-t=3.9-", "--no-tips", "--violations", *map(str, SLICER_SIDE)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Minimum required versions: 3.9" in done.stdout or "Minimum required versions: 3.0" in done.stdout


def _annotations(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            for argument in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                             arguments.vararg, arguments.kwarg]:
                if argument is not None and argument.annotation is not None:
                    yield argument.annotation
            if node.returns is not None:
                yield node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation


def _has_union(node: ast.AST) -> bool:
    return any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(node))


def runtime_unions(source: str) -> list[int]:
    """Line numbers of ``X | Y`` types Python 3.9 would evaluate (see the module docstring)."""
    tree = ast.parse(source)
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                 and any(a.name == "annotations" for a in n.names) for n in tree.body)
    annotations = list(_annotations(tree))
    inside = {id(n) for a in annotations for n in ast.walk(a)}
    lines = [] if future else [a.lineno for a in annotations if _has_union(a)]
    for node in ast.walk(tree):
        if id(node) in inside:
            continue
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass")
                and len(node.args) == 2 and _has_union(node.args[1])):
            lines.append(node.lineno)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and any(
                isinstance(side, ast.Constant) and side.value is None for side in (node.left, node.right)):
            lines.append(node.lineno)
    return sorted(set(lines))


def test_the_union_check_sees_what_python_39_would_evaluate():
    assert runtime_unions("def f(x: int | None): pass\n") == [1]
    assert runtime_unions("from __future__ import annotations\ndef f(x: int | None): pass\n") == []
    assert runtime_unions("from __future__ import annotations\nisinstance(1, int | str)\n") == [2]
    assert runtime_unions("from __future__ import annotations\nOptional = int | None\n") == [2]
    assert runtime_unions("flags = 1 | 2\n") == []


def test_no_union_type_is_evaluated_on_python_39():
    found = {}
    for folder in SLICER_SIDE:
        for path in folder.rglob("*.py"):
            if lines := runtime_unions(path.read_text(encoding="utf-8")):
                found[str(path.relative_to(REPO))] = lines
    assert not found, f"X | Y evaluated at run time (Python 3.10+), by file and line: {found}"
