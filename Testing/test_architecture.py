"""The shape of ctv_core: stage folders importing only downward, the CLI alone parsing and printing,
small modules that say what they own, and imports that cost only what is used."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ctv_core"

#: Stage -> the stages it may import (besides itself and the top level: errors, geometry, ...).
#: ``evaluation`` sits below ``training`` so that validation uses the metrics' one Dice.
ALLOWED = {
    "dicom": set(),
    "structures": {"dicom"},
    "model": set(),
    "inference": {"dicom", "structures", "model"},
    "dataset": {"dicom", "structures"},
    "evaluation": {"dicom", "structures"},
    "training": {"dicom", "structures", "model", "inference", "dataset", "evaluation"},
    "phantom": {"dicom", "structures"},
    "service": {"dicom", "structures", "model", "inference"},
    "cli": {"dicom", "structures", "model", "inference", "dataset", "evaluation", "training", "phantom", "service"},
}
#: Top-level modules every stage may import; they import no stage.
FOUNDATION = {"errors", "geometry", "atomic_files", "output_folder", "strict_config", "noise_fields", "_version"}
#: The package's front doors (the public API facade, ``python -m ctv_core``) may import any stage.
FRONT = {"__init__", "__main__"}
HEAVY = ("torch", "SimpleITK", "pydicom", "highdicom", "h5py", "matplotlib", "monai", "scipy")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _stage(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def _imported_stages(path: Path) -> set[tuple[str, int]]:
    """ctv_core stages (or top-level modules) a module imports, with the line, lazy imports included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(PACKAGE).parent.parts
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - (node.level - 1)]) if node.level > 1 else list(package)
                target = base + (node.module.split(".") if node.module else [])
                if not target:  # "from .. import x" at the top of the package
                    target = [alias.name for alias in node.names]
            elif node.module and node.module.split(".")[0] == "ctv_core":
                target = node.module.split(".")[1:]
            else:
                continue
            for name in (target[:1] if target else []):
                found.add((name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "ctv_core" and len(parts) > 1:
                    found.add((parts[1], node.lineno))
    return found


def test_stages_import_only_downward():
    wrong = []
    for path in _modules():
        stage = _stage(path)
        if stage in FRONT:
            continue
        allowed = set() if stage in FOUNDATION else ALLOWED[stage] | {stage}
        for target, line in _imported_stages(path):
            if target in FOUNDATION or target in allowed:
                continue
            wrong.append(f"{path.relative_to(PACKAGE)}:{line} ({stage}) imports {target}")
    assert not wrong, "\n".join(wrong)


def test_inference_imports_neither_training_nor_dataset():
    for path in (PACKAGE / "inference").glob("*.py"):
        targets = {t for t, _ in _imported_stages(path)}
        assert not targets & {"training", "dataset"}, path


def test_the_direction_test_can_fail():
    # A stand-in module that reaches upward is caught by the same walk.
    fake = PACKAGE / "inference" / "_probe_for_test.py"
    fake.write_text("from ..training.loop import train\n")
    try:
        assert ("training", 1) in _imported_stages(fake)
    finally:
        fake.unlink()


def test_only_the_cli_parses_arguments_prints_or_owns_a_progress_bar():
    wrong = []
    for path in _modules():
        if _stage(path) in ("cli", *FRONT):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] in ("argparse", "tqdm") for a in node.names):
                wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports argparse/tqdm")
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("argparse", "tqdm"):
                wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports from {node.module}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} prints")
    assert not wrong, "\n".join(wrong)


#: The one function outside cli/ that writes to stdout: the Slicer module's prediction process talks to
#: its caller through stdout (a JSON object per line), so that stream is its protocol, not a print.
STDOUT_WRITERS = {("inference/worker.py", "write_protocol_line")}


def test_only_the_worker_protocol_writes_to_stdout():
    wrong = []
    for path in _modules():
        if _stage(path) in ("cli", *FRONT):
            continue
        rel = str(path.relative_to(PACKAGE))
        tree = ast.parse(path.read_text())
        for function in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] + [tree]:
            body = function.body if function is not tree else [n for n in tree.body if not isinstance(
                n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
            for node in (n for statement in body for n in ast.walk(statement)):
                if (isinstance(node, ast.Attribute) and node.attr in ("stdout", "__stdout__")
                        and isinstance(node.value, ast.Name) and node.value.id == "sys"):
                    name = getattr(function, "name", "<module>")
                    if (rel, name) not in STDOUT_WRITERS:
                        wrong.append(f"{rel}:{node.lineno} ({name}) uses sys.{node.attr}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_modules_stay_small_and_folders_say_what_they_own():
    long = [f"{p.relative_to(PACKAGE)}: {n} lines" for p in _modules()
            if (n := len(p.read_text().splitlines())) > 420]
    assert not long, long
    for folder in sorted(p for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc and "May import" in doc, f"{folder.name}/__init__.py must say what it owns and may import"
    for path in _modules():
        assert ast.get_docstring(ast.parse(path.read_text())) or path.name == "_version.py", path


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in done.stdout.strip().split(",") if m]


def test_import_ctv_core_and_building_the_cli_load_no_heavy_library():
    assert _loaded_after("import ctv_core") == []
    assert _loaded_after("from ctv_core.cli import build_parser; build_parser()") == []
    assert _loaded_after("import ctv_core; ctv_core.CTVError; ctv_core.__version__") == []


def test_predict_loads_what_its_run_needs_and_no_more():
    loaded = _loaded_after("import ctv_core.inference.predict_job")
    assert {"torch", "SimpleITK", "pydicom", "matplotlib"} <= set(loaded)
    assert "monai" not in loaded and "highdicom" not in loaded and "h5py" not in loaded


@pytest.mark.parametrize("name", ["load_ct_series", "write_rtstruct", "read_rtstruct", "write_seg", "read_seg",
                                  "CTVPredictor", "load_model_package", "convert_structures", "CTSeries"])
def test_public_api_names_resolve(name):
    import ctv_core

    assert name in ctv_core.__all__ and callable(getattr(ctv_core, name))


def test_every_error_type_is_a_ctv_error_from_one_module():
    import ctv_core
    from ctv_core import errors

    types = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert len(types) > 15
    for kind in types:
        assert issubclass(kind, ctv_core.CTVError) and kind.__module__ == "ctv_core.errors"
        assert getattr(ctv_core, kind.__name__) is kind
    with pytest.raises(AttributeError):
        ctv_core.no_such_name  # noqa: B018
