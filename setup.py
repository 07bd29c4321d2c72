"""Packages of the distribution: ctv_core, and the Slicer module's Logic as the top-level package CTVDelineationLib.

The review station (``ctv review``) runs the Slicer module's own logic (scene conversion, RTSTRUCT
export, terminology, CTV slice stepping) on slicer-core, so the module's ``Logic/`` folder is
installed as ``CTVDelineationLib``, the name the module itself loads it under. The terminology
file the logic reads lives in the module's ``Resources/``; a wheel carries a copy inside the
package (``CTVDelineationLib/Resources/``), where ``Terminology.py`` looks when the module folder
is not beside it. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

TERMINOLOGY = Path("CTVDelineation") / "Resources" / "CTVDelineation.term.json"


class BuildWithTerminology(build_py):
    """build_py that also puts the module's terminology file into the installed CTVDelineationLib."""

    def run(self):
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "CTVDelineationLib" / "Resources"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(TERMINOLOGY, target / TERMINOLOGY.name)


setup(
    packages=find_packages(include=["ctv_core*"]) + ["CTVDelineationLib"],
    package_dir={"CTVDelineationLib": "CTVDelineation/Logic"},
    cmdclass={"build_py": BuildWithTerminology},
)
