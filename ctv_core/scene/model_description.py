"""What the user is told about a model before running it: the package's manifest, read as text.

Reads ``manifest.json`` only (no torch, no weights): name, version, description, intended use,
training data, validation metrics, the weights' SHA-256 and the default options. The weights
themselves are checked against that SHA-256 by the prediction process every time it loads
them (``ctv_core.model.package.load_model_package``), and the run's result reports it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ctv_core
from ctv_core.errors import ModelPackageError

BUNDLED = Path(ctv_core.__file__).resolve().parent / "model" / "demo"


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


def _trainingData(training: dict[str, Any]) -> str:
    data = training.get("data") if isinstance(training, dict) else None
    if not isinstance(data, dict):
        return "not recorded"
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    parts = [f"{data.get('cases', info.get('cases', '?'))} cases of {data.get('patients', info.get('patients', '?'))} "
             "patients"]
    volumes = (info.get("roi_volumes_cc") or {}).get("target") or {}
    if "min" in volumes and "max" in volumes:
        parts.append(f"CTV {volumes['min']:.0f}-{volumes['max']:.0f} cc")
    if info.get("spacing_min") and info.get("spacing_max"):
        low, high = info["spacing_min"], info["spacing_max"]
        parts.append(f"spacing {min(low[:2]):.2f}-{max(high[:2]):.2f} mm in-plane, {low[2]:.2f}-{high[2]:.2f} mm "
                     "between slices")
    return ", ".join(parts)


def _metrics(metrics: dict[str, Any]) -> str:
    if not isinstance(metrics, dict) or not metrics:
        return "not recorded"
    figures = [f"{key.replace('_', ' ')} {value:.3f}" for key, value in metrics.items()
               if isinstance(value, float) and "best" not in key]
    cases = metrics.get("validation_cases")
    return ", ".join(figures) + (f" ({cases} held-out cases)" if cases else "") if figures else "not recorded"


def describeModel(folder: str | Path | None = None) -> ModelDescription:
    """The description of the package in ``folder`` (None: the bundled model).

    Raises
    ------
    ModelPackageError
        The folder is not a model package (no readable manifest, or one without the basics).
    """
    path = Path(folder) if folder else BUNDLED
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelPackageError(f"'{path}' is not a model package: it has no manifest.json. Choose the folder that "
                                "holds manifest.json and weights.safetensors (made by 'ctv export').") from exc
    except (OSError, ValueError) as exc:
        raise ModelPackageError(f"The manifest of '{path}' cannot be read ({exc}); export the package again.") from exc
    missing = [key for key in ("name", "version", "weights", "network", "settings") if key not in manifest]
    if missing or manifest.get("format") != "ctv-model":
        raise ModelPackageError(f"'{path}' is not a ctv model package (manifest without "
                                f"{', '.join(missing) or 'format ctv-model'}); export it with 'ctv export'.")
    network = manifest.get("network") or {}
    inference = (manifest.get("settings") or {}).get("inference") or {}
    return ModelDescription(
        path=path, name=str(manifest["name"]), version=str(manifest["version"]),
        description=str(manifest.get("description", "")), intendedUse=str(manifest.get("intended_use", "")),
        trainingData=_trainingData(manifest.get("training") or {}), metrics=_metrics(manifest.get("metrics") or {}),
        sha256=str((manifest.get("weights") or {}).get("sha256", "")),
        passes=network.get("passes") if isinstance(network.get("passes"), int) else None,
        testTimeFlips=bool(inference.get("test_time_flips", False)),
        bundled=path.resolve() == BUNDLED)
