"""The module's Python dependencies: declared completely, checked, installed only when missing and only
with consent, never replacing an installed package (a fake installer records what would happen)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from slicer_support import REPO

RUNTIME_MODULES = ("ctv_core.inference.worker", "ctv_core.inference.predictor", "ctv_core.structures.rtstruct",
                   "ctv_core.dicom.series", "ctv_core.model.package")


class FakeInstaller:
    def __init__(self, code=0):
        self.calls, self.code = [], code

    def pipInstall(self, requirements, constraints, done):
        self.calls.append(("pip", list(requirements), Path(constraints).read_text()))
        done(self.code)

    def installTorch(self, requirement, constraints, done):
        self.calls.append(("torch", requirement))
        done(self.code)

    def torchHelper(self):
        return "through the PyTorch extension"


def _logic(slicer_lib, installed, installer):
    return slicer_lib.DependencyLogic(installer, versionOf=lambda name: installed.get(canonicalize_name(name)),
                                      distributions=lambda: dict(installed))


def test_requirements_match_pyproject(slicer_lib):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {canonicalize_name(Requirement(r).name): Requirement(r).specifier for r in project}
    needed = slicer_lib.Dependencies.readRequirements()
    for requirement in needed:
        assert declared[canonicalize_name(requirement.name)] == requirement.specifier, requirement
    assert declared["torch"] == Requirement(slicer_lib.Dependencies.TORCH_REQUIREMENT).specifier


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


def test_nothing_to_do_when_everything_is_there(slicer_lib):
    installer = FakeInstaller()
    logic = slicer_lib.DependencyLogic(installer)  # this environment has every requirement
    outcome = []
    plan = logic.install(lambda text: outcome.append(("asked", text)) or True, lambda ok, text: outcome.append(ok))
    assert plan.empty and outcome == [True] and installer.calls == []


def test_only_missing_packages_are_installed_after_consent_with_everything_else_pinned(slicer_lib):
    installed = {"numpy": "1.26.4", "scipy": "1.9.0", "simpleitk": "2.4.0", "pydicom": "3.0.1",
                 "pylibjpeg": "2.0.1", "pylibjpeg-libjpeg": "2.3.0", "pylibjpeg-openjpeg": "2.4.0",
                 "pylibjpeg-rle": "2.1.0", "requests": "2.31.0"}  # safetensors and torch missing; scipy too old
    installer = FakeInstaller()
    logic = _logic(slicer_lib, installed, installer)
    plan = logic.plan()
    assert plan.packages == ["safetensors>=0.4"] and plan.torch == "torch>=2.1"
    assert [c.name for c in plan.conflicts] == ["scipy"]
    text = logic.describe(plan)
    assert "scipy 1.9.0 is installed but CTVDelineation needs scipy>=1.10; it is not replaced" in text
    assert "through the PyTorch extension" in text

    declined = []
    logic.install(lambda text: False, lambda ok, message: declined.append((ok, message)))
    assert installer.calls == [] and declined == [(False, "Nothing was installed.")]

    finished = []

    def done(ok, message):
        finished.append((ok, message))

    def confirm(text):
        installed.update({"safetensors": "0.4.5", "torch": "2.13.0"})  # what the installer will have done
        return True

    logic.install(confirm, done)
    assert installer.calls[0] == ("torch", "torch>=2.1")
    kind, packages, constraints = installer.calls[1]
    assert kind == "pip" and packages == ["safetensors>=0.4"]
    assert "numpy==1.26.4\n" in constraints and "scipy==1.9.0\n" in constraints  # nothing installed is replaced
    assert finished and not finished[0][0] and "scipy>=1.10 (installed: 1.9.0)" in finished[0][1]


def test_a_failed_installation_says_so(slicer_lib):
    installed = {"numpy": "2.0.0"}
    logic = _logic(slicer_lib, installed, FakeInstaller(code=1))
    finished = []
    logic.install(lambda text: True, lambda ok, message: finished.append((ok, message)))
    assert finished == [(False, "The installation failed (pip returned 1); the details are in Slicer's log. "
                                "Nothing installed before was changed.")]
