"""The Python packages the module needs in Slicer's Python: checked, and installed only with consent.

The needs are data (``Resources/requirements.txt``: OpenVINO runs the network on the CPU; plus
torch only when the user chose a GPU or the PyTorch engine). ``DependencyLogic.check`` says
for each one whether it is there at a suitable version, from the installed distributions'
metadata (torch is never imported into Slicer's own process); ``plan`` lists what would be
installed (only what is *missing*) and what conflicts (installed at another version: never
replaced, since Slicer's own modules may rely on it; the message says what to do instead).

``startInstall`` returns an :class:`InstallJob`: pip runs in a process of its own (Slicer's
``PythonSlicer``, like the prediction), one command after another, so Slicer never freezes; the
widget polls it from a timer, shows pip's last line and can cancel it (the whole process group
is stopped). Every command carries a constraints file pinning each installed distribution,
Slicer's bundled numpy, pydicom and SimpleITK included, to its present version, so pip cannot
upgrade or downgrade one of them as a dependency of a new package; it fails instead, and the
message says so. torch is installed with light-the-torch (the tool the PyTorch extension uses),
which picks the build for the computer's GPU, in the same process: not through the PyTorch
extension's ``installTorch``, which runs on Slicer's main thread, adds torchvision and imports
torch into Slicer. This works the same on Slicer 5.8, 5.10 and 5.12 (whose ``pip_install``
arguments differ: ``constraints``, ``blocking`` and callbacks exist from 5.12 only).
"""

from __future__ import annotations

import importlib.metadata
import logging
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .PredictionProcess import ProcessRunner, SubprocessRunner, pythonExecutable

logger = logging.getLogger(__name__)

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
TORCH_REQUIREMENT = "torch>=2.1"
#: light-the-torch picks the torch build (CUDA version or CPU) for the computer, as the PyTorch extension does.
LIGHT_THE_TORCH = "light-the-torch>=0.7"


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
    requirements
        Default: ``Resources/requirements.txt``, and torch when ``withTorch``.
    withTorch
        Whether PyTorch is needed: the user chose a GPU (device cuda) or the PyTorch engine. The CPU
        runs the network with OpenVINO, which ``requirements.txt`` lists.
    versionOf, distributions
        How installed versions are looked up (replaceable in tests).
    python
        The interpreter pip runs in (default: ``PythonSlicer`` in Slicer, see ``pythonExecutable``).
    """

    def __init__(self, requirements: Iterable[Requirement] | None = None,
                 versionOf: Callable[[str], str | None] = installedVersion,
                 distributions: Callable[[], dict[str, str]] = installedDistributions, python: str | None = None,
                 withTorch: bool = False):
        self.python = python
        self.withTorch = withTorch
        self.requirements = list(requirements) if requirements is not None else [
            *readRequirements(), *([Requirement(TORCH_REQUIREMENT)] if withTorch else [])]
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
            lines.append(f"Install {plan.torch} (without torchvision) with {LIGHT_THE_TORCH}, which picks the build "
                         "for this computer's GPU, or the CPU build when there is none.")
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

    def commands(self, plan: InstallPlan, constraints: Path, python: str) -> list[list[str]]:
        """The command lines that carry out ``plan`` with ``python``: light-the-torch and torch first
        (when torch is missing), then the other packages; each under ``constraints``."""
        pip = [python, "-m", "pip", "install", "--constraint", str(constraints)]
        steps = []
        if plan.torch:
            steps.append([*pip, LIGHT_THE_TORCH])
            steps.append([python, "-m", "light_the_torch", "install", "--constraint", str(constraints), plan.torch])
        if plan.packages:
            steps.append([*pip, *plan.packages])
        return steps

    def startInstall(self, plan: InstallPlan,
                     runnerFactory: Callable[[], ProcessRunner] = SubprocessRunner) -> InstallJob:
        """Start installing what ``plan`` lists (after the user agreed to ``describe(plan)``); return the job."""
        folder = Path(tempfile.mkdtemp(prefix="CTVDelineation-pip-"))
        job = InstallJob(self.commands(plan, self.writeConstraints(folder), self.python or pythonExecutable()),
                         runnerFactory)
        job.start()
        return job

    def outcome(self, job: InstallJob) -> tuple[bool, str]:
        """``(ok, message)`` for the user once ``job`` has ended."""
        if job.cancelled:
            return False, ("The installation was cancelled. Packages installed before were not changed; run it again "
                           "to finish.")
        if job.returnCode != 0:
            return False, (f"The installation failed (pip returned {job.returnCode}): {job.lastLine or 'no output'}. "
                           "Nothing installed before was changed: a package Slicer ships is never replaced, so a "
                           "requirement that would need another version of one fails here. The details are in "
                           "Slicer's log.")
        still = [s for s in self.check() if not s.satisfied]
        if still:
            return False, ("Still missing or unsuitable after installing: "
                           + ", ".join(f"{s.requirement} (installed: {s.installed or 'none'})" for s in still)
                           + ". Restart Slicer and check again.")
        return True, "Dependencies installed."


class InstallJob:
    """Commands run one after another in a process of their own; every call returns at once.

    ``poll`` (from the widget's timer) returns True while a command runs; ``lastLine`` is pip's
    latest output line (the progress to show), ``returnCode`` the first non-zero exit status or 0.
    """

    def __init__(self, commands: Sequence[Sequence[str]],
                 runnerFactory: Callable[[], ProcessRunner] = SubprocessRunner):
        self.commands = [list(c) for c in commands]
        self.runnerFactory = runnerFactory
        self.lastLine = ""
        self.returnCode: int | None = None
        self.cancelled = False
        self._index = -1
        self._runner: ProcessRunner | None = None

    def start(self) -> None:
        self._next()

    def _next(self) -> None:
        self._index += 1
        if self._index == len(self.commands):
            self.returnCode = 0
            self._runner = None
            return
        logger.info("Installing: %s", " ".join(self.commands[self._index]))
        self._runner = self.runnerFactory()
        try:
            self._runner.start(self.commands[self._index])
        except OSError as error:
            self.lastLine = f"cannot start {self.commands[self._index][0]}: {error}"
            self.returnCode, self._runner = 1, None

    @property
    def running(self) -> bool:
        return self.returnCode is None

    def poll(self) -> bool:
        if self._runner is None:
            return False
        for line in self._runner.readLines():
            if line.strip():
                self.lastLine = line.strip()
                logger.info("pip: %s", self.lastLine)
        code = self._runner.exitCode()
        if code is None:
            return True
        if code != 0 or self.cancelled:
            for line in self._runner.errorOutput().splitlines()[-3:]:
                logger.warning("pip: %s", line)
            self.returnCode, self._runner = code or 1, None
            return False
        self._next()
        return self._runner is not None

    def cancel(self) -> None:
        """Stop the running command (its whole process group) and run no further one."""
        if self._runner is not None:
            self.cancelled = True
            self._runner.terminate()
