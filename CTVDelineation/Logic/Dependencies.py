"""The Python packages the module needs in Slicer's Python: checked, and installed only with consent.

The needs are data (``Resources/requirements.txt``, plus torch). ``DependencyLogic.check`` says
for each one whether it is there at a suitable version; ``plan`` lists what would be installed
(only what is *missing*) and what conflicts (installed at another version: never replaced,
since Slicer's own modules may rely on it; the message says what to do instead). ``install``
asks ``confirm`` first, then installs through a ``PackageInstaller`` with a constraints file
that pins every installed distribution to its present version, so pip cannot upgrade or
downgrade one of them as a dependency of a new package. torch goes through the PyTorch
extension (``PyTorchUtils``), which picks the build for the computer's GPU, when it is present.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import shlex
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

logger = logging.getLogger(__name__)

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
TORCH_REQUIREMENT = "torch>=2.1"


@dataclass(frozen=True)
class DependencyStatus:
    """One requirement and what is installed: ``installed`` is the version or None."""

    requirement: Requirement
    installed: str | None

    @property
    def name(self) -> str:
        return self.requirement.name

    @property
    def satisfied(self) -> bool:
        return self.installed is not None and self.requirement.specifier.contains(self.installed, prereleases=True)

    @property
    def missing(self) -> bool:
        return self.installed is None


@dataclass(frozen=True)
class InstallPlan:
    """What ``install`` would do: pip ``packages``, ``torch`` (a requirement or None), and the
    ``conflicts`` it will not touch."""

    packages: list[str] = field(default_factory=list)
    torch: str | None = None
    conflicts: list[DependencyStatus] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.packages and self.torch is None


class PackageInstaller(Protocol):
    """How packages get into Slicer's Python (a fake in tests)."""

    def pipInstall(self, requirements: list[str], constraints: Path, done: Callable[[int], None]) -> None:
        """Install ``requirements`` under ``constraints``; call ``done(returnCode)`` when finished."""

    def installTorch(self, requirement: str, constraints: Path, done: Callable[[int], None]) -> None:
        """Install torch; call ``done(returnCode)`` when finished."""

    def torchHelper(self) -> str:
        """Which way torch would be installed, for the confirmation text."""


def installedVersion(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def installedDistributions() -> dict[str, str]:
    """Every installed distribution: canonical name -> version."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.setdefault(canonicalize_name(name), dist.version)
    return found


def readRequirements(path: Path = REQUIREMENTS_FILE) -> list[Requirement]:
    """The requirements of a requirements file (comments and blank lines skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [Requirement(line) for line in lines if line]


class DependencyLogic:
    """Checks and installs the module's dependencies (see the module docstring).

    Parameters
    ----------
    installer
        The installer (``SlicerPackageInstaller`` in the application).
    requirements
        Default: ``Resources/requirements.txt`` and torch.
    versionOf, distributions
        How installed versions are looked up (replaceable in tests).
    """

    def __init__(self, installer: PackageInstaller | None = None, requirements: Iterable[Requirement] | None = None,
                 versionOf: Callable[[str], str | None] = installedVersion,
                 distributions: Callable[[], dict[str, str]] = installedDistributions):
        self.installer = installer
        self.requirements = list(requirements) if requirements is not None else [
            *readRequirements(), Requirement(TORCH_REQUIREMENT)]
        self.versionOf = versionOf
        self.distributions = distributions

    def check(self) -> list[DependencyStatus]:
        """Every requirement with the installed version."""
        return [DependencyStatus(r, self.versionOf(r.name)) for r in self.requirements]

    def plan(self) -> InstallPlan:
        """What is missing (to install) and what is there at another version (left alone)."""
        status = self.check()
        missing = [s for s in status if s.missing]
        return InstallPlan(packages=[str(s.requirement) for s in missing if s.name != "torch"],
                           torch=next((str(s.requirement) for s in missing if s.name == "torch"), None),
                           conflicts=[s for s in status if not s.missing and not s.satisfied])

    def describe(self, plan: InstallPlan) -> str:
        """The text the user confirms (or reads when nothing can be done)."""
        lines = []
        if plan.packages:
            lines.append("Install into Slicer's Python: " + ", ".join(plan.packages) + ".")
        if plan.torch:
            helper = self.installer.torchHelper() if self.installer else ""
            lines.append(f"Install {plan.torch} {helper}".rstrip() + ".")
        if not plan.empty:
            lines.append("Packages already installed, Slicer's own included, are kept at their versions.")
        for conflict in plan.conflicts:
            lines.append(f"{conflict.name} {conflict.installed} is installed but CTVDelineation needs "
                         f"{conflict.requirement}; it is not replaced, because Slicer or another extension may rely "
                         f"on it. Use a Slicer release that ships a suitable {conflict.name}, or update it yourself "
                         "in Slicer's Python console if you know it is safe.")
        return "\n".join(lines) or "Every dependency is installed."

    def writeConstraints(self, folder: Path) -> Path:
        """A pip constraints file pinning every installed distribution to its present version."""
        path = Path(folder) / "installed-constraints.txt"
        path.write_text("".join(f"{name}=={version}\n" for name, version in sorted(self.distributions().items())),
                        encoding="utf-8")
        return path

    def install(self, confirm: Callable[[str], bool], done: Callable[[bool, str], None]) -> InstallPlan:
        """Ask ``confirm(text)``; if granted, install what is missing, then call ``done(ok, message)``.

        Nothing is installed without consent, and nothing installed is replaced. Returns the plan.
        """
        plan = self.plan()
        if plan.empty:
            done(not plan.conflicts, self.describe(plan))
            return plan
        if not confirm(self.describe(plan)):
            done(False, "Nothing was installed.")
            return plan
        folder = Path(tempfile.mkdtemp(prefix="CTVDelineation-pip-"))
        constraints = self.writeConstraints(folder)
        steps = ([lambda finish: self.installer.installTorch(plan.torch, constraints, finish)] if plan.torch else []) \
            + ([lambda finish: self.installer.pipInstall(plan.packages, constraints, finish)] if plan.packages else [])

        def runStep(index: int, code: int) -> None:
            if code != 0:
                done(False, f"The installation failed (pip returned {code}); the details are in Slicer's log. "
                            "Nothing installed before was changed.")
                return
            if index == len(steps):
                still = [s for s in self.check() if not s.satisfied]
                done(not still, "Dependencies installed." if not still else
                     "Still missing or unsuitable after installing: "
                     + ", ".join(f"{s.requirement} (installed: {s.installed or 'none'})" for s in still)
                     + ". Restart Slicer and check again.")
                return
            steps[index](lambda returnCode: runStep(index + 1, returnCode))

        runStep(0, 0)
        return plan


class SlicerPackageInstaller:
    """``PackageInstaller`` inside Slicer: ``slicer.util.pip_install`` (non-blocking where the Slicer
    release supports it) and the PyTorch extension's installer for torch."""

    @staticmethod
    def _pytorchLogic():
        try:
            import PyTorchUtils  # the PyTorch extension
        except ImportError:
            return None
        return PyTorchUtils.PyTorchUtilsLogic()

    def torchHelper(self) -> str:
        if self._pytorchLogic() is not None:
            return "through the PyTorch extension (it picks the build for this computer's GPU)"
        return ("from PyPI (no PyTorch extension found: install it from the Extensions Manager to get the build "
                "for this computer's GPU)")

    def pipInstall(self, requirements: list[str], constraints: Path, done: Callable[[int], None]) -> None:
        import slicer

        parameters = inspect.signature(slicer.util.pip_install).parameters
        arguments = " ".join(shlex.quote(r) for r in requirements)
        if "constraints" in parameters:
            extra = {"constraints": str(constraints)}
        else:
            arguments += f" -c {shlex.quote(str(constraints))}"
            extra = {}
        if "blocking" in parameters:  # Slicer >= 5.11: the user interface keeps running
            slicer.util.pip_install(arguments, blocking=False, completedCallback=done, **extra)
            return
        try:
            with slicer.util.WaitCursor():
                slicer.util.pip_install(arguments, **extra)
        except Exception:  # noqa: BLE001 - pip's failure is reported to the user through done()
            logger.exception("pip install %s failed", arguments)
            done(1)
            return
        done(0)

    def installTorch(self, requirement: str, constraints: Path, done: Callable[[int], None]) -> None:
        logic = self._pytorchLogic()
        if logic is None:
            self.pipInstall([requirement], constraints, done)
            return
        specifier = str(Requirement(requirement).specifier)
        try:
            torch = logic.installTorch(askConfirmation=False, torchVersionRequirement=specifier)
        except Exception:  # noqa: BLE001 - reported through done()
            logger.exception("The PyTorch extension could not install torch")
            torch = None
        done(0 if torch is not None else 1)
