"""Model packages: a folder that describes itself, loaded without executing code from it.

Layout::

    PKG/
      manifest.json        what the model is (see below)
      weights.safetensors  the parameters (safetensors: tensors only, no pickled code)
      network.xml          the network as an OpenVINO IR whose constants point into weights.safetensors
      network_constants.bin  the graph's few small non-weight constants (:mod:`.graph`)

``manifest.json`` holds ``format`` ("ctv-model") and ``format_version`` (2; 1 is read too);
``name``, ``version``, ``created`` (ISO date), ``ctv_core_version``, ``description``,
``intended_use``; ``architecture`` (a key of ``ARCHITECTURES``) and ``network`` (its
configuration); ``settings`` (preprocessing, inference, post-processing:
:mod:`ctv_core.model.settings`); ``weights`` (``file``: a plain file name in the package,
``sha256``, ``bytes``; the tensors are float32, or float16 where the package was exported with
half-precision weights, which halves its size: :data:`WEIGHT_DTYPES`); ``graph`` (optional:
packages exported before ctv_core 0.4 have none and run on PyTorch only), the graph files with
their sizes and SHA-256, its input and output shapes and the check against PyTorch made at
export (:mod:`.graph`); free-form ``training`` and ``metrics`` records; and ``fingerprint``, the
SHA-256 of everything that decides the model's output (format, architecture, network, settings,
the weights' SHA-256 and the graph's where there is one; :func:`model_fingerprint`). The
fingerprint is the model's checksum in reports and segment tags: two packages with one
fingerprint predict alike, and a manifest edited after export (say, another number of passes
with the same weights) no longer matches it.

Loading is strict and executes nothing from the package (:mod:`.manifest`): the manifest must be
a JSON object of known keys and types (no NaN or infinity, bounded size and nesting), every
setting within range (:mod:`ctv_core.strict_config`), the weights and graph files regular files
inside the package (no absolute path, no ``..``, no symbolic link) of the declared size and
SHA-256, the weights tensors only (safetensors) fitting the architecture exactly, the graph's
input and output shapes the network's (recorded ones on loading, the IR's own when the OpenVINO
engine reads it). Any problem raises ``ModelPackageError`` saying what and how to fix it.
The manifest is read by :mod:`.manifest` (without torch), as it is for describing a package to a
user before running it (:func:`.manifest.describe_model_package`). Nothing here imports torch: the
OpenVINO engine predicts on the CPU without it.

``model=None`` everywhere means the bundled package, ``ctv_core/model/demo``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from .._version import __version__
from ..atomic_files import atomic_folder
from ..errors import ModelPackageError
from .graph import CONSTANTS, GRAPH, graph_shapes, read_graph
from .manifest import (BUNDLED, FORMAT, FORMAT_VERSION, MANIFEST, WEIGHTS, check_file, model_fingerprint,
                       package_error, read_package, sha256_of)
from .settings import ModelSettings
from .network_config import NetworkConfig
from .qa_config import HUWindowConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

#: How a package may store its parameters. "float16" stores the learned weights in half precision
#: (batch-norm statistics stay float32); loading casts every tensor to the network's float32.
WEIGHT_DTYPES = ("float32", "float16")
#: architecture name -> (configuration parser, "module:class" of the PyTorch network, imported when built)
ARCHITECTURES: dict[str, tuple[Callable[[dict], Any], str]] = {
    "unet3d": (NetworkConfig.from_dict, "ctv_core.model.unet3d:UNet3D"),
    "hu_window": (HUWindowConfig.from_dict, "ctv_core.model.qa_models:HUWindowModel"),
}
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
        """The model's fingerprint: SHA-256 of everything that decides its output (see the module docstring).

        Computed from the configuration in effect, so a package whose settings were changed in
        memory (a user's option, e.g. another number of passes) has another fingerprint.
        """
        return model_fingerprint({"format": FORMAT, "architecture": self.manifest["architecture"],
                                  "network": self.network_config.to_dict(), "settings": self.settings.to_dict(),
                                  "weights": {"sha256": self.weights_sha256}, "graph": self.manifest.get("graph")})

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the weights file alone."""
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

    @property
    def has_graph(self) -> bool:
        """Whether the package carries its network as a graph (the OpenVINO engine's input) that computes the
        network in effect: a package whose network was changed in memory (another number of passes) has none."""
        in_effect = json.dumps(self.network_config.to_dict(), sort_keys=True)
        return "graph" in self.manifest and in_effect == json.dumps(self.manifest["network"], sort_keys=True)

    @property
    def channels(self) -> tuple[int, int]:
        """The network's input and output channels."""
        config = self.network_config
        return int(getattr(config, "in_channels", 1)), int(getattr(config, "out_channels", 1))

    def read_graph(self):
        """The package's network as an ``openvino.Model`` (not compiled; see :func:`~.graph.read_graph`)."""
        if "graph" not in self.manifest:
            raise ModelPackageError(f"The model package '{self.path}' has no graph (it was exported before ctv_core "
                                    "0.4); run it with --engine torch, or export it again to add one.")
        if not self.has_graph:
            raise ModelPackageError(f"The graph of '{self.path}' computes the network of its manifest, not the one "
                                    "asked for (another number of passes); run it with --engine torch.")
        return read_graph(self.path, self.manifest["graph"], self.path / self.manifest["weights"]["file"],
                          *self.channels)

    def build_network(self) -> nn.Module:
        """The PyTorch network with the package's weights (CPU, eval mode); needs torch."""
        from safetensors.torch import load_file

        network = network_factory(self.manifest["architecture"])(self.network_config)
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


def network_factory(architecture: str) -> Callable[[Any], nn.Module]:
    """The PyTorch network class of ``architecture`` (imports torch)."""
    module, name = ARCHITECTURES[architecture][1].split(":")
    return getattr(importlib.import_module(module), name)


def _check_fits(path: Path, network_config: Any, settings: ModelSettings) -> None:
    """Sizes the network cannot take are refused before any CT is prepared for them."""
    divisor = int(getattr(network_config, "divisor", 1))
    shapes = [("settings.inference.patch_zyx", settings.inference.patch_zyx)]
    if settings.preprocessing.fixed_shape_zyx is not None:
        shapes.append(("settings.preprocessing.fixed_shape_zyx", settings.preprocessing.fixed_shape_zyx))
    for where, shape in shapes:
        if any(int(s) % divisor for s in shape):
            raise package_error(path, f"{where} {tuple(shape)} must be multiples of {divisor}, which the network's "
                                      "resolution levels need")


def load_model_package(path: str | Path | None = None) -> ModelPackage:
    """Read and validate a model package (``None``: the bundled one); see the module docstring.

    The manifest is read as :func:`.manifest.describe_model_package` reads it (:func:`.manifest.read_package`),
    then the network configuration, the fingerprint, the graph's shapes and the SHA-256 of the weights and
    the graph are checked.
    """
    path, manifest, settings = read_package(path)
    parse, _ = ARCHITECTURES[manifest["architecture"]]
    try:
        network_config = parse(manifest["network"])
    except (ValueError, TypeError, KeyError) as exc:
        raise package_error(path, f"its manifest has an invalid setting: {exc}") from exc
    _check_fits(path, network_config, settings)
    package = ModelPackage(path=path, manifest=manifest, network_config=network_config, settings=settings)
    if manifest["format_version"] >= 2:
        stated, actual = manifest.get("fingerprint"), package.sha256
        if stated != actual:
            raise package_error(path, f"its fingerprint {stated!r} does not match its architecture, network, settings "
                                      "and weights: the manifest was edited after export, so it would run another "
                                      "model under the same name. Export it again from its training run (or restore "
                                      "the manifest)")
    check_file(path, manifest["weights"], "weights")
    if "graph" in manifest:
        _check_graph_shapes(path, manifest["graph"], *package.channels)
        check_file(path, manifest["graph"], "graph")
        check_file(path, manifest["graph"]["constants"], "graph constants")
    return package


def _check_graph_shapes(path: Path, graph: dict[str, Any], in_channels: int, out_channels: int) -> None:
    """The graph's recorded input and output shapes are the network's (the engine checks the IR itself too)."""
    expected = graph_shapes(in_channels, out_channels)
    if [graph["input_shape"], graph["output_shape"]] != list(expected):
        raise package_error(path, f"its graph takes {graph['input_shape']} and gives {graph['output_shape']}, but "
                                  f"the network takes {expected[0]} and gives {expected[1]} (batch, channels, z, y, "
                                  "x): the graph belongs to another model. Export the package again")


def stored_state(network: nn.Module, weights_dtype: str = "float32") -> dict[str, torch.Tensor]:
    """The tensors a package stores for ``network``: its state dict on the CPU, with the learned
    floating-point parameters in ``weights_dtype`` (one of :data:`WEIGHT_DTYPES`). Batch-norm running
    statistics keep float32: a variance can be smaller than half precision resolves."""
    if weights_dtype not in WEIGHT_DTYPES:
        raise ModelPackageError(f"weights dtype must be one of {', '.join(WEIGHT_DTYPES)}, not {weights_dtype!r}.")
    import torch

    dtype = getattr(torch, weights_dtype)
    state = {}
    for key, value in network.state_dict().items():
        value = value.detach().cpu()
        if value.is_floating_point() and not key.endswith(("running_mean", "running_var")):
            value = value.to(dtype)
        state[key] = value.contiguous()
    return state


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
    weights_dtype: str = "float32",
    graph: bool = True,
) -> ModelPackage:
    """Write a model package folder (atomically) and return it, validated by loading it back.

    ``weights_dtype`` is one of :data:`WEIGHT_DTYPES`. ``graph``: also write the network as an
    OpenVINO IR sharing the weights file (:mod:`.graph_export`), checked against the PyTorch
    network on a test input of up to ``4 * divisor`` voxels a side; needs torch and openvino.

    ``extra_files`` (name in the package -> source file) are copied beside the manifest, e.g.
    the training log and curves; loading ignores them.
    """
    if architecture not in ARCHITECTURES:
        raise ModelPackageError(f"Unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}.")
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise ModelPackageError(f"'{path}' exists and is not empty; choose a new folder for the package.")
    from safetensors.torch import save_file

    with atomic_folder(path) as staging:
        save_file(stored_state(network, weights_dtype), str(staging / WEIGHTS))
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
        if graph:
            manifest["graph"] = _export_graph(staging, architecture, network_config, settings)
        manifest["fingerprint"] = model_fingerprint(manifest)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        for target, source in (extra_files or {}).items():
            if target in (MANIFEST, WEIGHTS, GRAPH, CONSTANTS) or "/" in target:
                raise ModelPackageError(f"Extra file name {target!r} is not allowed in a package.")
            shutil.copyfile(source, staging / target)
    return load_model_package(path)


def add_graph(source: str | Path, path: str | Path) -> ModelPackage:
    """A copy of the package ``source`` (which has no graph, e.g. exported before ctv_core 0.4) with its network
    added as a graph for the OpenVINO engine, written (atomically) to the new folder ``path``; ``source`` is
    left untouched.

    The graph is written and checked against the PyTorch network exactly as :func:`save_model_package` does
    (:mod:`.graph_export`); the weights are copied byte for byte, with the package's other files. The
    fingerprint then covers the graph too, as for any package with one. Needs torch and openvino.

    Raises ``ModelPackageError`` when ``source`` is not a usable package or already has a graph, or ``path``
    exists and is not empty.
    """
    package = load_model_package(source)
    path = Path(path)
    if "graph" in package.manifest:
        raise ModelPackageError(f"The model package '{package.path}' already has a graph; it runs on OpenVINO as it "
                                "is.")
    if path.exists() and any(path.iterdir()):
        raise ModelPackageError(f"'{path}' exists and is not empty; choose a new folder for the package.")
    manifest = json.loads(json.dumps(package.manifest))
    weights = package.path / manifest["weights"]["file"]
    with atomic_folder(path) as staging:
        shutil.copyfile(weights, staging / WEIGHTS)
        manifest["weights"]["file"] = WEIGHTS
        for extra in sorted(package.path.iterdir()):
            if extra.is_file() and not extra.is_symlink() and extra.name not in (MANIFEST, GRAPH, CONSTANTS,
                                                                                  weights.name, WEIGHTS):
                shutil.copyfile(extra, staging / extra.name)
        manifest["graph"] = _export_graph(staging, manifest["architecture"], package.network_config,
                                          package.settings)
        manifest["fingerprint"] = model_fingerprint(manifest)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return load_model_package(path)


def _export_graph(staging: Path, architecture: str, network_config: Any, settings: ModelSettings) -> dict[str, Any]:
    """Write the graph of the network stored in ``staging``'s weights file; its manifest record."""
    from .graph_export import write_graph

    staged = ModelPackage(path=staging, manifest={"architecture": architecture, "weights": {"file": WEIGHTS}},
                          network_config=network_config, settings=settings)
    divisor = int(getattr(network_config, "divisor", 1))
    check_zyx = tuple(min(int(p), 4 * divisor) for p in settings.inference.patch_zyx)
    return write_graph(staged.build_network(), *staged.channels, divisor, check_zyx, staging, staging / WEIGHTS)
