"""The Slicer module's files agree with each other: widget names and the .ui, parameters and their
widgets, CMake lists and the files on disk, the module's metadata, resources, and Logic's rules."""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image
from slicer_support import MODULE_FILE, REPO, import_module_file, module_in_slicer

from ctv_core.model.package import BUNDLED
from ctv_core.structures.catalogue import structure_for

MODULE_DIR = REPO / "CTVDelineation"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "CTVDelineation.ui"


def _ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


def _used_ui_names() -> set[str]:
    """Every ``self.ui.<name>`` the module's scripts use."""
    names = set()
    scripts = "".join(p.read_text() for p in (MODULE_FILE, MODULE_DIR / "CTVDelineationDependencies.py",
                                              MODULE_DIR / "CTVDelineationUncertainty.py"))
    for node in ast.walk(ast.parse(scripts)):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"):
            names.add(node.attr)
    return names


def test_every_widget_the_module_uses_is_in_the_ui_file():
    used = _used_ui_names()
    assert len(used) > 15
    missing = used - set(_ui_widgets())
    assert not missing, f"used in CTVDelineation.py but not in CTVDelineation.ui: {sorted(missing)}"


def test_parameter_bindings_name_real_parameters_and_widgets_exist_for_them():
    module = import_module_file()
    fields = set(module.CTVDelineationParameterNode.__annotations__)
    bound = {}
    for name, widget in _ui_widgets().items():
        for prop in widget.iter("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = name
    assert set(bound) <= fields, set(bound) - fields
    assert fields - set(bound) == {"modelFolder"}  # the path box is synchronised in code (currentPathChanged)
    combo = _ui_widgets()[bound["device"]]
    items = [i.find("property/string").text for i in combo.findall("item")]
    device = module.CTVDelineationParameterNode.__annotations__["device"].__metadata__[0]
    assert tuple(items) == tuple(device.choices) == ("auto", "cpu", "cuda")


def test_ui_declares_every_custom_widget_it_uses():
    root = ET.parse(UI_FILE).getroot()
    classes = {w.get("class") for w in root.iter("widget")}
    declared = {c.find("class").text for c in root.iter("customwidget")}
    assert {c for c in classes if not c.startswith("Q")} == declared


def _cmake_list(text: str, variable: str) -> list[str]:
    body = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S).group(1)
    return [line.strip().replace("${MODULE_NAME}", "CTVDelineation") for line in body.splitlines() if line.strip()]


def test_cmake_lists_every_module_file_and_nothing_else():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    scripts, resources = _cmake_list(text, "MODULE_PYTHON_SCRIPTS"), _cmake_list(text, "MODULE_PYTHON_RESOURCES")
    on_disk = {str(p.relative_to(MODULE_DIR)) for p in MODULE_DIR.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.name != "CMakeLists.txt"}
    assert sorted(scripts + resources) == sorted(on_disk)
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text
    top = (REPO / "CMakeLists.txt").read_text()
    for key in ("project(CTVDelineation)", "EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS",
                "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS",
                "find_package(Slicer REQUIRED)", "add_subdirectory(CTVDelineation)", "Slicer_EXTENSION_CPACK"):
        assert key in top, key
    # ctv_core ships with the extension: every Python file of it, the bundled model and the CTV's terminology
    assert "ctv_core/*.py" in top and "ctv_core/model/demo/*" in top and "ctkMacroCompilePythonScript" in top
    assert "ctv_core/scene/*.term.json" in top and (REPO / "ctv_core" / "scene" / "CTVDelineation.term.json").is_file()
    for url in re.findall(r"raw/main/(\S+?)\"", top):
        assert (REPO / url).is_file(), url


def test_module_imports_with_standins_and_its_metadata_is_complete():
    from slicer_app import ModuleParent

    with module_in_slicer("5.8") as (module, app):
        parent = ModuleParent(app.module_file)
        module.CTVDelineation(parent)
    assert parent.title and parent.categories == ["Radiotherapy"] and parent.contributors
    assert "not for clinical use without local validation" in parent.helpText.lower()
    assert "thesis" in parent.acknowledgementText and "Quality Awareness Module" in parent.acknowledgementText
    for name in ("CTVDelineationWidget", "CTVDelineationTest", "CTVDelineationParameterNode"):
        assert hasattr(module, name)
    assert module.LOGIC_PACKAGE == "CTVDelineationLib"


def test_logic_is_never_a_bare_package_name_and_holds_no_qt():
    for path in [MODULE_FILE, *(MODULE_DIR / "Logic").glob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [(node.module or "").split(".")[0]]
            else:
                continue
            assert "Logic" not in names, f"{path.name}:{node.lineno} imports a bare 'Logic'"
            if path.parent.name == "Logic":
                assert not {"qt", "ctk"} & set(names), f"{path.name}:{node.lineno}: no Qt in Logic"


def test_logic_modules_stay_small_and_say_what_they_own():
    for path in [MODULE_FILE, *(MODULE_DIR / "Logic").glob("*.py")]:
        assert len(path.read_text().splitlines()) <= 420, path.name
        assert ast.get_docstring(ast.parse(path.read_text())), path.name


def test_icon_and_terminology():
    icon = Image.open(MODULE_DIR / "Resources" / "Icons" / "CTVDelineation.png")
    assert icon.size == (128, 128)
    term = json.loads((REPO / "ctv_core" / "scene" / "CTVDelineation.term.json").read_text())
    category = term["SegmentationCodes"]["Category"][0]
    kind = category["Type"][0]
    ctv = structure_for("CTV")  # the terminology says what the catalogue says
    assert (category["CodingSchemeDesignator"], category["CodeValue"]) == (ctv.category.scheme, ctv.category.value)
    assert (kind["CodingSchemeDesignator"], kind["CodeValue"], kind["CodeMeaning"]) == (
        ctv.property_type.scheme, ctv.property_type.value, ctv.property_type.meaning)
    assert tuple(kind["recommendedDisplayRGBValue"]) == ctv.colour and kind["3dSlicerLabel"] == "CTV"


def test_terminology_file_loads_in_slicers_terminology_logic(ctv_scene, slicer_lib):
    terminology = ctv_scene.terminology.CTVTerminology()
    assert "SCT^228792002^Clinical target volume" in terminology.entry
    assert terminology.describes("CTV_45") and not terminology.describes("Bladder")


def test_model_description_for_the_user(slicer_lib, tmp_path):
    from ctv_core import ModelPackageError

    described = slicer_lib.describeModel(None)
    text = described.text()
    assert described.bundled and described.passes == 2 and "Intended use: Research" in text
    manifest = json.loads((BUNDLED / "manifest.json").read_text())
    cases, dice = manifest["training"]["data"]["cases"], manifest["metrics"]["validation_dice"]
    assert f"{cases} cases of {cases} patients" in text and f"validation dice {dice:.3f}" in text
    assert described.weights_sha256[:16] in text
    for bad, message in ((tmp_path, "manifest.json is missing"), (tmp_path / "missing", "it is not a folder")):
        try:
            slicer_lib.describeModel(bad)
        except ModelPackageError as error:
            assert message in str(error)
        else:
            raise AssertionError("a folder without a manifest was accepted")
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    try:
        slicer_lib.describeModel(tmp_path)
    except ModelPackageError as error:
        assert "is not a usable model package: manifest.json lacks format_version" in str(error)
    else:
        raise AssertionError("a manifest of another format was accepted")


def test_readme_picture_exists():
    assert Image.open(REPO / "docs" / "images" / "slicer_ctv.png").size[0] >= 900
    assert Path(REPO / "README.md").read_text().count("docs/images/slicer_ctv.png") >= 1


def test_the_module_loads_without_pydicom_or_torch():
    """Loading the module imports neither (they come with the dependencies it offers to install)."""
    import subprocess
    import sys

    probe = ("import sys; sys.path.insert(0, 'Testing')\n"
             "from slicer_support import logic_package\n"
             "logic_package()\n"
             "print(sorted({'pydicom', 'torch', 'safetensors', 'scipy'} & {m.split('.')[0] for m in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
