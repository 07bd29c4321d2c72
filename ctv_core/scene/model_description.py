"""What the user is told about a model before running it: the package's manifest, as the widget shows it.

The manifest is read by ctv_core's one strict reading (``ctv_core.model.manifest.describe_model_package``:
no torch, no weights loaded): a manifest the prediction process would refuse is refused here, with
the same message. Shown: name, version, description, intended use, training data, validation
metrics, the weights' SHA-256 and the default options. The weights themselves are checked against
that SHA-256 by the prediction process every time it loads them
(``ctv_core.model.package.load_model_package``), and the run's result reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ctv_core.model.manifest import describe_model_package


@dataclass(frozen=True)
class ModelDescription:
    """A model package as the widget shows it.

    Attributes
    ----------
    path
        The package folder.
    name, version, description, intendedUse
        From the manifest.
    trainingData
        One line: cases, patients, CTV volumes (cc), voxel spacings.
    metrics
        One line: the validation figures recorded.
    sha256
        SHA-256 of the weights named in the manifest.
    passes, testTimeFlips
        The model's own refinement passes and test-time flip setting (None when not applicable).
    bundled
        True for the demo model shipped with the extension.
    """

    path: Path
    name: str
    version: str
    description: str
    intendedUse: str
    trainingData: str
    metrics: str
    sha256: str
    passes: int | None
    testTimeFlips: bool
    bundled: bool

    def text(self) -> str:
        """Several lines for the widget's model box."""
        lines = [f"{self.name} {self.version}" + (" (bundled demonstration model)" if self.bundled else ""),
                 self.description, f"Intended use: {self.intendedUse}", f"Training data: {self.trainingData}",
                 f"Metrics: {self.metrics}",
                 f"Weights SHA-256: {self.sha256[:16]}... (checked each time the model is loaded)"]
        return "\n".join(line for line in lines if line.split(":")[-1].strip())


def describeModel(folder: str | Path | None = None) -> ModelDescription:
    """The description of the package in ``folder`` (None or "": the bundled model).

    Raises
    ------
    ModelPackageError
        The folder is not a usable model package (ctv_core's message: what is wrong, what to do).
    """
    described = describe_model_package(Path(folder) if folder else None)
    return ModelDescription(
        path=described.path, name=described.name, version=described.version, description=described.description,
        intendedUse=described.intended_use, trainingData=described.training_data_line(),
        metrics=described.metrics_line(), sha256=described.weights_sha256, passes=described.passes,
        testTimeFlips=described.test_time_flips, bundled=described.bundled)
