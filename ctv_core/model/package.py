"""Model packages: a folder that describes itself, loaded without executing code from it.

Layout::

    PKG/
      manifest.json        what the model is (see below)
      weights.safetensors  the parameters (safetensors: tensors only, no pickled code)

``manifest.json`` holds ``format`` ("ctv-model") and ``format_version`` (1); ``name``,
``version``, ``created`` (ISO date), ``description``, ``intended_use``; ``architecture`` (a
key of ``ARCHITECTURES``) and ``network`` (its configuration); ``settings`` (preprocessing,
inference, post-processing: :mod:`ctv_core.model.settings`); ``weights`` (``file``,
``sha256``, ``bytes``); and free-form ``training`` and ``metrics`` records. Loading checks the
format, every section strictly, the weights' size and SHA-256, and that the tensors fit the
architecture exactly; any mismatch raises ``ModelPackageError`` saying what and how to fix it.

``model=None`` everywhere means the bundled package, ``ctv_core/model/demo``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .._version import __version__
from ..atomic_files import atomic_folder
from ..errors import ModelPackageError
from .settings import ModelSettings
from .network_config import NetworkConfig
from .qa_models import HUWindowConfig, HUWindowModel
from .unet3d import UNet3D

FORMAT = "ctv-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
BUNDLED = Path(__file__).parent / "demo"

#: architecture name -> (configuration parser, network factory)
ARCHITECTURES: dict[str, tuple[Callable[[dict], Any], Callable[[Any], nn.Module]]] = {
    "unet3d": (NetworkConfig.from_dict, UNet3D),
    "hu_window": (HUWindowConfig.from_dict, HUWindowModel),
}
_REQUIRED = ("format", "format_version", "name", "version", "architecture", "network", "settings", "weights")


@dataclass(frozen=True)
class ModelPackage:
    """A validated model package (weights checked, not yet loaded into a network).

    Attributes
    ----------
    path
        The package folder.
    manifest
        The manifest as read.
    network_config
        The architecture's configuration object.
    settings
        Preprocessing, inference and post-processing settings.
    """

    path: Path
    manifest: dict[str, Any]
    network_config: Any
    settings: ModelSettings

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def sha256(self) -> str:
        return str(self.manifest["weights"]["sha256"])

    @property
    def model_id(self) -> str:
        """Name and version, as written into generated structures."""
        return f"{self.name} {self.version}"

    @property
    def training_volumes_cc(self) -> tuple[float, float] | None:
        """Smallest and largest target volume (cc) of the training data, from the manifest's
        training record (``training.data.info.roi_volumes_cc.target``); None when not recorded."""
        try:
            target = self.manifest["training"]["data"]["info"]["roi_volumes_cc"]["target"]
            return float(target["min"]), float(target["max"])
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def divisor(self) -> int:
        """Input sizes the network accepts are multiples of this."""
        return int(self.network_config.divisor)

    def build_network(self) -> nn.Module:
        """The network with the package's weights (CPU, eval mode)."""
        _, factory = ARCHITECTURES[self.manifest["architecture"]]
        network = factory(self.network_config)
        try:
            state = load_file(str(self.path / self.manifest["weights"]["file"]))
        except (SafetensorError, OSError) as exc:
            raise ModelPackageError(f"The weights of '{self.path}' cannot be read ({exc}); reinstall the package.") \
                from exc
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise ModelPackageError(
                f"The weights of '{self.path}' do not fit its declared architecture ({first}). The manifest and "
                "weights come from different models; export the package again from its training run."
            ) from exc
        return network.eval()


def _fail(path: Path, what: str) -> ModelPackageError:
    return ModelPackageError(f"'{path}' is not a usable model package: {what}.")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model_package(path: str | Path | None = None) -> ModelPackage:
    """Read and validate a model package (``None``: the bundled one)."""
    if path is None:
        path = BUNDLED
        if not (path / MANIFEST).is_file():
            raise ModelPackageError(
                "This installation has no bundled model (ctv_core/model/demo). Give a model package with "
                "--model PKG (model=... in Python)."
            )
    path = Path(path)
    if not path.is_dir():
        raise _fail(path, "it is not a folder (a package is a folder with manifest.json and weights.safetensors)")
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise _fail(path, f"{MANIFEST} is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, f"{MANIFEST} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise _fail(path, f"{MANIFEST} does not hold an object")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise _fail(path, f"{MANIFEST} lacks {', '.join(missing)}")
    if manifest["format"] != FORMAT or manifest["format_version"] != FORMAT_VERSION:
        raise _fail(path, f"format {manifest['format']!r} version {manifest['format_version']!r} is not "
                          f"{FORMAT!r} version {FORMAT_VERSION}; this ctv_core {__version__} cannot read it")
    if manifest["architecture"] not in ARCHITECTURES:
        raise _fail(path, f"unknown architecture {manifest['architecture']!r} (known: {', '.join(ARCHITECTURES)})")
    parse, _ = ARCHITECTURES[manifest["architecture"]]
    try:
        network_config = parse(manifest["network"])
        settings = ModelSettings.from_dict(manifest["settings"])
    except (ValueError, TypeError, KeyError) as exc:
        raise _fail(path, f"its manifest has an invalid setting: {exc}") from exc
    weights = manifest["weights"]
    file = path / str(weights.get("file", ""))
    if not weights.get("file") or not file.is_file():
        raise _fail(path, f"the weights file {weights.get('file')!r} named in the manifest is missing")
    if "bytes" in weights and file.stat().st_size != int(weights["bytes"]):
        raise _fail(path, f"{file.name} has {file.stat().st_size} bytes, the manifest says {weights['bytes']} "
                          "(truncated or replaced)")
    actual = sha256_of(file)
    if actual != weights.get("sha256"):
        raise _fail(path, f"the SHA-256 of {file.name} is {actual}, the manifest says {weights.get('sha256')}: "
                          "the weights are corrupt or were replaced. Reinstall or re-export the package")
    return ModelPackage(path=path, manifest=manifest, network_config=network_config, settings=settings)


def save_model_package(
    path: str | Path,
    network: nn.Module,
    architecture: str,
    network_config: Any,
    settings: ModelSettings,
    *,
    name: str,
    version: str,
    description: str,
    intended_use: str = "Research and demonstration only; not for clinical use.",
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra_files: dict[str, Path] | None = None,
) -> ModelPackage:
    """Write a model package folder (atomically) and return it, validated by loading it back.

    ``extra_files`` (name in the package -> source file) are copied beside the manifest, e.g.
    the training log and curves; loading ignores them.
    """
    if architecture not in ARCHITECTURES:
        raise ModelPackageError(f"Unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}.")
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise ModelPackageError(f"'{path}' exists and is not empty; choose a new folder for the package.")
    with atomic_folder(path) as staging:
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        save_file(state, str(staging / WEIGHTS))
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": version,
            "created": dt.date.today().isoformat(),
            "ctv_core_version": __version__,
            "description": description,
            "intended_use": intended_use,
            "architecture": architecture,
            "network": network_config.to_dict(),
            "settings": settings.to_dict(),
            "weights": {"file": WEIGHTS, "sha256": sha256_of(staging / WEIGHTS),
                        "bytes": (staging / WEIGHTS).stat().st_size},
            "training": training or {},
            "metrics": metrics or {},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for target, source in (extra_files or {}).items():
            if target in (MANIFEST, WEIGHTS) or "/" in target:
                raise ModelPackageError(f"Extra file name {target!r} is not allowed in a package.")
            shutil.copyfile(source, staging / target)
    return load_model_package(path)
