"""The shape of ctv_core: stage folders importing only downward, never the Slicer module, Slicer itself only in
``scene/`` and the review station, the CLI alone parsing and printing, small modules that say what they own, and
imports that cost only what is used."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ctv_core"

#: Stage -> the stages it may import (besides itself and the top level: errors, geometry, ...).
#: ``evaluation`` sits below ``training`` so that validation uses the metrics' one Dice, and below ``scene`` and
#: ``service`` so that an approval's edit figures are the metrics' own, and below ``dataset`` so that a training
#: set of approved contours keeps each approval's edit record as ``evaluation.edits`` checks it; ``scene`` (MRML
#: beside ctv_core, for the Slicer module and the review station) sits below ``service``.
ALLOWED = {
    "dicom": set(),
    "structures": {"dicom"},
    "model": set(),
    "inference": {"dicom", "structures", "model"},
    "dataset": {"dicom", "structures", "evaluation"},
    "evaluation": {"dicom", "structures"},
    "training": {"dicom", "structures", "model", "inference", "dataset", "evaluation"},
    "phantom": {"dicom", "structures"},
    "scene": {"dicom", "structures", "model", "evaluation"},
    "service": {"dicom", "structures", "model", "inference", "evaluation", "scene"},
    "cli": {"dicom", "structures", "model", "inference", "dataset", "evaluation", "training", "phantom", "scene",
            "service"},
}
#: Top-level modules every stage may import; they import no stage.
FOUNDATION = {"errors", "geometry", "atomic_files", "output_folder", "strict_config", "noise_fields", "heap", "_version"}
#: The package's front doors (the public API facade, ``python -m ctv_core``) may import any stage.
FRONT = {"__init__", "__main__"}
HEAVY = ("torch", "SimpleITK", "pydicom", "highdicom", "h5py", "matplotlib", "monai", "scipy", "openvino")


def _modules(root: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in root.rglob("*.py"))


def _stage(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else path.stem


def _copy_of_the_package(tmp_path: Path) -> Path:
    """The package's modules copied under ``tmp_path`` (a test plants a fault there, never in the tree that other
    tests and processes read)."""
    copy = tmp_path / "ctv_core"
    shutil.copytree(PACKAGE, copy, ignore=lambda folder, names: [
        n for n in names if n == "__pycache__" or not (n.endswith(".py") or (Path(folder) / n).is_dir())])
    return copy


def _imported_stages(path: Path, root: Path = PACKAGE) -> set[tuple[str, int]]:
    """ctv_core stages (or top-level modules) a module imports, with the line, lazy imports included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(root).parent.parts
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


def _upward_imports(root: Path = PACKAGE) -> list[str]:
    wrong = []
    for path in _modules(root):
        stage = _stage(path, root)
        if stage in FRONT:
            continue
        allowed = set() if stage in FOUNDATION else ALLOWED[stage] | {stage}
        for target, line in _imported_stages(path, root):
            if target in FOUNDATION or target in allowed:
                continue
            wrong.append(f"{path.relative_to(root)}:{line} ({stage}) imports {target}")
    return wrong


def test_stages_import_only_downward():
    wrong = _upward_imports()
    assert not wrong, "\n".join(wrong)


def test_inference_imports_neither_training_nor_dataset():
    for path in (PACKAGE / "inference").glob("*.py"):
        targets = {t for t, _ in _imported_stages(path)}
        assert not targets & {"training", "dataset"}, path


def test_the_direction_test_can_fail(tmp_path):
    copy = _copy_of_the_package(tmp_path)
    assert _upward_imports(copy) == []
    (copy / "inference" / "planted.py").write_text('"""Reaches upward."""\nfrom ..training.loop import train\n')
    (copy / "dicom" / "planted.py").write_text('"""Reaches upward, lazily."""\n\n\ndef f():\n'
                                               '    import ctv_core.service.store\n')
    assert _upward_imports(copy) == ["dicom/planted.py:5 (dicom) imports service",
                                     "inference/planted.py:2 (inference) imports training"]


MODULE_DIR = PACKAGE.parent / "CTVDelineation"
#: The Slicer module's top-level import names: its scripts (``CTVDelineation``, ``CTVDelineationDependencies``,
#: ...) and its ``Logic/`` package as the module loads it (``CTVDelineation.LOGIC_PACKAGE``).
SLICER_MODULE_NAMES = {p.stem for p in MODULE_DIR.glob("*.py")} | {"CTVDelineationLib"}
#: Calls that import a module named by a string (their arguments are scanned), and ``sys.modules`` lookups.
IMPORT_CALLS = {"import_module", "__import__", "find_spec", "spec_from_file_location", "reload"}


def _names_the_slicer_module(value: object) -> bool:
    """True for a string naming the Slicer module or a module inside it (``CTVDelineationLib.Review``), or a path
    into its folder (``.../CTVDelineation/Logic/__init__.py``)."""
    return isinstance(value, str) and (value.split(".")[0] in SLICER_MODULE_NAMES
                                       or "CTVDelineation/" in value.replace("\\", "/"))


def _slicer_module_imports(root: Path = PACKAGE) -> list[str]:
    """Every place in ctv_core that imports the Slicer module: ``import``/``from`` statements (lazy ones
    included), import calls naming it in a string (``importlib.import_module("CTVDelineationLib")``,
    ``__import__``, ``find_spec``, ``spec_from_file_location``) and ``sys.modules`` lookups of it."""
    found = []
    for path in _modules(root):
        where = f"{path.relative_to(root)}"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found += [f"{where}:{node.lineno} imports {a.name}" for a in node.names
                          if _names_the_slicer_module(a.name)]
            elif isinstance(node, ast.ImportFrom) and not node.level and _names_the_slicer_module(node.module or ""):
                found.append(f"{where}:{node.lineno} imports {node.module}")
            elif isinstance(node, ast.Call):
                function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                lookup = (function == "get" and isinstance(node.func, ast.Attribute)
                          and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "modules")
                if function in IMPORT_CALLS or lookup:
                    arguments = [*node.args, *(k.value for k in node.keywords)]
                    found += [f"{where}:{node.lineno} imports {a.value} through {function}()" for a in arguments
                              if isinstance(a, ast.Constant) and _names_the_slicer_module(a.value)]
            elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
                  and node.value.attr == "modules"):
                if isinstance(node.slice, ast.Constant) and _names_the_slicer_module(node.slice.value):
                    found.append(f"{where}:{node.lineno} looks up sys.modules[{node.slice.value!r}]")
    return sorted(found)


def test_ctv_core_never_imports_the_slicer_module():
    """ctv_core is below the Slicer module: the module (and the review station) reach Slicer's MRML through
    ``ctv_core.scene``, never the other way round, so the import graph has no hidden circle."""
    assert "CTVDelineation" in SLICER_MODULE_NAMES and "CTVDelineationLib" in SLICER_MODULE_NAMES
    wrong = _slicer_module_imports()
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("planted", [
    'import importlib\n\n\ndef f():\n    return importlib.import_module("CTVDelineationLib")\n',
    'from importlib import import_module\n\n\ndef f():\n    return import_module("CTVDelineationLib.Review")\n',
    'def f():\n    return __import__("CTVDelineation")\n',
    'import importlib.util\n\n\ndef f():\n'
    '    return importlib.util.spec_from_file_location("x", location="/opt/CTVDelineation/Logic/__init__.py")\n',
    'import sys\n\n\ndef f():\n    return sys.modules["CTVDelineationLib"]\n',
    'import sys\n\n\ndef f():\n    return sys.modules.get("CTVDelineationLib")\n',
    'def f():\n    from CTVDelineationLib.SceneConversion import importMask\n    return importMask\n',
    'import CTVDelineationDependencies\n',
])
def test_the_slicer_module_import_test_can_fail(tmp_path, planted):
    copy = _copy_of_the_package(tmp_path)
    assert _slicer_module_imports(copy) == []
    (copy / "service" / "review" / "planted.py").write_text(f'"""Reaches into the Slicer module."""\n{planted}')
    (found,) = _slicer_module_imports(copy)
    assert found.startswith("service/review/planted.py:"), found


#: Modules of Slicer's application (or of the slicer-core wheel) and of the review station's web stack.
SLICER_LIBRARIES = {"slicer", "vtk", "vtkmodules", "qt", "ctk", "trame", "trame_slicer", "trame_server", "trame_rca",
                    "trame_vuetify", "wslink"}


def _slicer_library_imports(root: Path = PACKAGE) -> list[str]:
    """Imports of Slicer's libraries outside ``scene/`` and ``service/review/``."""
    wrong = []
    for path in _modules(root):
        rel = path.relative_to(root)
        if rel.parts[0] == "scene" or rel.parts[:2] == ("service", "review"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            wrong += [f"{rel}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in SLICER_LIBRARIES]
    return wrong


def test_slicer_is_imported_only_by_the_scene_and_the_review_station(tmp_path):
    assert _slicer_library_imports() == []
    copy = _copy_of_the_package(tmp_path)
    (copy / "inference" / "planted.py").write_text('"""Reaches for Slicer."""\n\n\ndef f():\n    import vtk\n')
    assert _slicer_library_imports(copy) == ["inference/planted.py:5 imports vtk"]


def _private_names_of_other_modules(root: Path = PACKAGE) -> list[str]:
    """Uses, in ``service/``, of a private name (``_x``, not ``__x__``) that the using module does not define
    itself: another module's insides (its connection, its helpers), reached through an attribute or an import
    from ctv_core (pynetdicom's configuration module is ``pynetdicom._config``: an import from a library is its
    own documented affair)."""
    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    wrong = []
    for path in _modules(root / "service"):
        tree = ast.parse(path.read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                    ast.ClassDef))}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Store):
                defined.add(node.id if isinstance(node, ast.Name) else node.attr)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in defined:
                wrong.append(f"{path.relative_to(root)}:{node.lineno} uses .{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("ctv_core")):
                wrong += [f"{path.relative_to(root)}:{node.lineno} imports {a.name}" for a in node.names
                          if private(a.name)]
    return wrong


def test_service_modules_use_only_public_names_of_each_other():
    wrong = _private_names_of_other_modules()
    assert not wrong, "\n".join(wrong)


def _case_status_writes(root: Path = PACKAGE) -> list[str]:
    return [f"{path.relative_to(root)}:{n}" for path in _modules(root)
            for n, line in enumerate(path.read_text().splitlines(), 1) if "UPDATE cases SET status" in line]


def test_a_case_status_is_written_in_one_place():
    (write,) = _case_status_writes()
    assert write.startswith("service/store_transaction.py:"), write


def test_the_store_tests_can_fail(tmp_path):
    copy = _copy_of_the_package(tmp_path)
    assert _private_names_of_other_modules(copy) == [] and len(_case_status_writes(copy)) == 1
    outbox = copy / "service" / "outbox.py"
    outbox.write_text(outbox.read_text() + '\n\ndef planted(store, case_id):\n'
                      '    with store._transaction() as db:\n'
                      '        db.execute("UPDATE cases SET status = \'done\' WHERE id = ?", (case_id,))\n')
    lines = len(outbox.read_text().splitlines())
    assert _private_names_of_other_modules(copy) == [f"service/outbox.py:{lines - 1} uses ._transaction"]
    assert _case_status_writes(copy) == [f"service/outbox.py:{lines}", *_case_status_writes()]


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


#: The functions outside cli/ that use stdout: a prediction process talks to its caller through stdout (a JSON
#: object per line: the prediction-process protocol), so that stream is its protocol, not a print; the worker
#: hands it to the protocol's writer and sends everything else printed to stderr.
STDOUT_WRITERS = {("inference/process_protocol.py", "write_event"), ("inference/worker.py", "main")}


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
    done = subprocess.run([sys.executable, "-c", "import sys, ctv_core.scene; print(sorted({m.split('.')[0] for m in "
                           "sys.modules} & {'slicer', 'vtk', 'vtkmodules', 'SimpleITK', 'numpy'}))"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"  # ctv_core.scene's __init__ costs no Slicer: its modules import it
    assert _loaded_after("from ctv_core.cli import build_parser; build_parser()") == []
    assert _loaded_after("import ctv_core; ctv_core.CTVError; ctv_core.__version__") == []


def test_what_the_slicer_module_reads_before_torch_is_installed_loads_no_heavy_library():
    """The prediction-process protocol and the manifest's reading: the module imports them before its
    dependencies (torch among them) are installed."""
    assert _loaded_after("import ctv_core.inference.process_protocol, ctv_core.model.manifest") == []


def test_predict_loads_what_its_run_needs_and_no_more():
    loaded = _loaded_after("import ctv_core.inference.predict_job")
    assert {"SimpleITK", "pydicom"} <= set(loaded)
    # matplotlib (~40 MB) only when qa.png is drawn, after the network stage has released its memory
    assert "matplotlib" not in loaded
    # the engine's library is imported when a predictor opens it; torch only for the PyTorch engine
    assert "torch" not in loaded and "openvino" not in loaded
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


def test_the_wheel_holds_ctv_core_with_its_data_files_and_not_the_slicer_module(tmp_path):
    """What ``pip install`` puts on a computer: ctv_core with the bundled model and the CTV's terminology file
    (the review station reads it from ctv_core/scene/), and no copy of the Slicer module's Logic (it needs the
    application). Built from a copy of the distribution's files, so that no build folder lands in the tree."""
    import zipfile

    source = tmp_path / "source"
    shutil.copytree(PACKAGE, source / "ctv_core", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(PACKAGE.parent / name, source / name)
    assert not (PACKAGE.parent / "setup.py").exists()  # the packages are listed in pyproject.toml alone
    build = ("import sys; from setuptools import build_meta; "
             "print(build_meta.build_wheel(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", build, str(tmp_path / "dist")], cwd=source, capture_output=True,
                          text=True, check=True)
    names = zipfile.ZipFile(tmp_path / "dist" / done.stdout.strip().splitlines()[-1]).namelist()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"ctv_core"}
    assert "ctv_core/scene/CTVDelineation.term.json" in names and "ctv_core/model/demo/manifest.json" in names
    assert "ctv_core/scene/conversion.py" in names
