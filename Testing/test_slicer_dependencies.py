"""The module's Python dependencies: declared completely, checked, installed only when missing and only
with consent, never replacing an installed package (a fake installer records what would happen)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from slicer_api import RELEASES, release_api
from slicer_support import REPO

RUNTIME_MODULES = ("ctv_core.inference.worker", "ctv_core.inference.predictor", "ctv_core.structures.rtstruct",
                   "ctv_core.dicom.series", "ctv_core.model.package", "ctv_core.evaluation.edit_job")


#: A pip that installs nothing: it records each command and what it would install, and refuses (as pip's
#: resolver does under a constraints file) to install a version other than the pinned one of a package
#: that is installed. "needs-newer-numpy" stands for a package whose dependencies would replace numpy.
FAKE_PYTHON = """#!{python}
import json, sys, time
from pathlib import Path
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
log = Path({log!r})
args = sys.argv[1:]
assert args[0] == "-m" and args[1] in ("pip", "light_the_torch") and args[2] == "install", args
constraints = args[args.index("--constraint") + 1]
pins = dict(line.strip().split("==") for line in Path(constraints).read_text().splitlines() if line.strip())
wanted = [a for a in args[3:] if a != "--constraint" and a != constraints]
DEPENDS = {{"needs-newer-numpy": "numpy>=9"}}
with log.open("a") as out:
    out.write(json.dumps({{"tool": args[1], "install": wanted, "pins": pins}}) + "\\n")
for text in wanted:
    print(f"Collecting {{text}}", flush=True)
    time.sleep({delay})
    for requirement in [Requirement(text)] + ([Requirement(DEPENDS[text])] if text in DEPENDS else []):
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is not None and not requirement.specifier.contains(pinned, prereleases=True):
            print(f"ERROR: Cannot install {{text}} because these package versions have conflicting "
                  f"dependencies: {{requirement}} against the constraint {{requirement.name}}=={{pinned}}", flush=True)
            sys.exit(1)
print("Successfully installed " + " ".join(wanted), flush=True)
"""


def fake_python(folder: Path, delay: float = 0.0) -> tuple[str, Path]:
    """An executable standing in for PythonSlicer whose pip is the fake above; returns it and its log."""
    log = folder / "pip-log.jsonl"
    path = folder / "PythonSlicer"
    path.write_text(FAKE_PYTHON.format(python=sys.executable, log=str(log), delay=delay))
    path.chmod(0o755)
    return str(path), log


def _logic(slicer_lib, installed, python=None, withTorch=False):
    return slicer_lib.DependencyLogic(versionOf=lambda name: installed.get(canonicalize_name(name)),
                                      distributions=lambda: dict(installed), python=python, withTorch=withTorch)


def _finish(job, limit=30.0):
    deadline = time.monotonic() + limit
    while job.poll():
        assert time.monotonic() < deadline, "the installation did not end"
        time.sleep(0.02)
    return job


def test_requirements_match_pyproject(slicer_lib):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(Requirement(r).name): Requirement(r).specifier for r in project["dependencies"]}
    needed = slicer_lib.Dependencies.readRequirements()
    for requirement in needed:
        assert declared[canonicalize_name(requirement.name)] == requirement.specifier, requirement
    # the CPU needs OpenVINO, not PyTorch; torch comes with the extra ctv_core[torch] (and for a GPU in Slicer)
    assert "openvino" in declared and "torch" not in declared
    extra = {canonicalize_name(Requirement(r).name): Requirement(r).specifier
             for r in project["optional-dependencies"]["torch"]}
    assert extra["torch"] == Requirement(slicer_lib.Dependencies.TORCH_REQUIREMENT).specifier


def test_pytorch_is_offered_only_for_a_gpu_or_the_pytorch_engine(slicer_lib):
    cpu = {r.name for r in slicer_lib.DependencyLogic().requirements}
    gpu = {r.name for r in slicer_lib.DependencyLogic(withTorch=True).requirements}
    assert "openvino" in cpu and "torch" not in cpu
    assert gpu - cpu == {"torch"}


def test_requirements_cover_what_the_prediction_and_the_export_import(slicer_lib):
    """Every third-party distribution the worker and the export load is required, comes with one that is,
    or is optional: the same imports succeed with it hidden."""
    imports = "".join(f"import {m}\n" for m in RUNTIME_MODULES)
    probe = "import sys\n" + imports + "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    providers = metadata.packages_distributions()
    used = {canonicalize_name(d) for m in loaded if m not in sys.stdlib_module_names
            for d in providers.get(m, [])} - {"ctv-core"}
    required = {canonicalize_name(r.name) for r in slicer_lib.DependencyLogic().requirements}
    closure, todo = set(required), list(required)
    while todo:  # what the required distributions pull in themselves
        for requirement in metadata.requires(todo.pop()) or []:
            parsed = Requirement(requirement)
            name = canonicalize_name(parsed.name)
            if (parsed.marker is None or parsed.marker.evaluate({"extra": ""})) and name not in closure:
                closure.add(name)
                todo.append(name)
    optional = used - closure
    hidden = sorted(m for m, dists in providers.items() if {canonicalize_name(d) for d in dists} & optional)
    blocker = ("import sys, importlib.abc\n"
               "class Hide(importlib.abc.MetaPathFinder):\n"
               f"    def find_spec(self, name, path=None, target=None):\n"
               f"        if name.split('.')[0] in {hidden!r}: raise ImportError(name)\n"
               "sys.meta_path.insert(0, Hide())\n")
    result = subprocess.run([sys.executable, "-c", blocker + imports], capture_output=True, text=True)
    assert used & required and result.returncode == 0, (sorted(optional), result.stderr[-2000:])


def test_requirements_admit_what_every_supported_slicer_bundles(slicer_lib):
    """Slicer 5.8's, 5.10's and 5.12's own numpy, pydicom and SimpleITK (Testing/slicer_api.json, read from
    Slicer's SuperBuild) satisfy the module's requirements and ctv_core's, and its Python ctv_core's."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(Requirement(r).name): Requirement(r) for r in project["dependencies"]}
    needed = {canonicalize_name(r.name): r for r in slicer_lib.Dependencies.readRequirements()}
    for release in RELEASES:
        bundled = release_api(release)["bundled"]
        assert SpecifierSet(project["requires-python"]).contains(bundled["python"]), (release, bundled)
        for name in ("numpy", "pydicom", "SimpleITK"):
            for requirements in (declared, needed):
                requirement = requirements[canonicalize_name(name)]
                assert requirement.specifier.contains(bundled[name]), (release, requirement, bundled[name])


def test_nothing_to_do_when_everything_is_there(slicer_lib):
    plan = slicer_lib.DependencyLogic().plan()  # this environment has every requirement
    assert plan.empty and not plan.conflicts


def test_only_missing_packages_are_installed_in_a_process_with_everything_installed_pinned(slicer_lib, tmp_path):
    installed = {"numpy": "1.26.4", "scipy": "1.9.0", "simpleitk": "2.3.1", "pydicom": "2.4.4",
                 "pylibjpeg": "2.0.1", "pylibjpeg-libjpeg": "2.3.0", "pylibjpeg-openjpeg": "2.4.0",
                 "pylibjpeg-rle": "2.1.0", "requests": "2.31.0",
                 "openvino": "2025.3.0"}  # Slicer 5.8's own and OpenVINO; safetensors and torch (for a GPU) missing
    python, log = fake_python(tmp_path)
    logic = _logic(slicer_lib, installed, python, withTorch=True)
    plan = logic.plan()
    assert plan.packages == ["safetensors>=0.4"] and plan.torch == "torch>=2.1"
    assert [c.name for c in plan.conflicts] == ["scipy"]
    text = logic.describe(plan)
    assert "scipy 1.9.0 is installed but CTVDelineation needs scipy>=1.10; it is not replaced" in text
    assert "Install into Slicer's Python: safetensors>=0.4." in text and "torch>=2.1 (without torchvision)" in text
    job = _finish(logic.startInstall(plan))
    installed.update({"safetensors": "0.4.5", "torch": "2.13.0"})  # what a real pip would have done
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(c["tool"], c["install"]) for c in calls] == [
        ("pip", ["light-the-torch>=0.7"]), ("light_the_torch", ["torch>=2.1"]), ("pip", ["safetensors>=0.4"])]
    assert all(c["pins"] == {"numpy": "1.26.4", "scipy": "1.9.0", "simpleitk": "2.3.1", "pydicom": "2.4.4",
                             "pylibjpeg": "2.0.1", "pylibjpeg-libjpeg": "2.3.0", "pylibjpeg-openjpeg": "2.4.0",
                             "pylibjpeg-rle": "2.1.0", "requests": "2.31.0", "openvino": "2025.3.0"}
               for c in calls)  # all pinned
    assert job.returnCode == 0 and job.lastLine == "Successfully installed safetensors>=0.4"
    ok, message = logic.outcome(job)
    assert not ok and "scipy>=1.10 (installed: 1.9.0)" in message  # the conflict is left for the user


def test_a_package_that_would_replace_a_bundled_one_fails_and_says_so(slicer_lib, tmp_path):
    installed = {"numpy": "1.26.4"}
    python, log = fake_python(tmp_path)
    logic = slicer_lib.DependencyLogic([Requirement("needs-newer-numpy")],
                                       versionOf=lambda name: installed.get(canonicalize_name(name)),
                                       distributions=lambda: dict(installed), python=python)
    job = _finish(logic.startInstall(logic.plan()))
    ok, message = logic.outcome(job)
    assert not ok and "pip returned 1" in message and "numpy>=9 against the constraint numpy==1.26.4" in message
    assert "never replaced" in message


def test_cancel_stops_the_installation(slicer_lib, tmp_path):
    python, log = fake_python(tmp_path, delay=30)
    logic = _logic(slicer_lib, {}, python)
    job = logic.startInstall(logic.plan())
    deadline = time.monotonic() + 20
    while not job.lastLine:
        assert job.poll() and time.monotonic() < deadline
        time.sleep(0.02)
    job.cancel()
    started = time.monotonic()
    _finish(job, limit=10)
    assert time.monotonic() - started < 10 and job.cancelled
    assert len(log.read_text().splitlines()) == 1  # no further command ran
    ok, message = logic.outcome(job)
    assert not ok and "cancelled" in message
