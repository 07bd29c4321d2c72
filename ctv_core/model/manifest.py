"""The manifest of a model package, read strictly and without torch: the one reading of a manifest.

:func:`read_manifest` checks ``manifest.json`` (a JSON object of known keys and types, no NaN or
infinity, bounded size and nesting, a readable format version); :func:`describe_model_package` adds
what a user is told before running a model (the Slicer module's model box, the review station's
model list): the architecture is known, the settings are valid, the weights file is a plain file of
the declared size; :func:`ctv_core.model.package.load_model_package` reads the same manifest the same
way, then checks the network configuration, the fingerprint and the SHA-256 of every file it names
(:func:`check_file`: the weights and, where the package has one, the network's graph) and loads them.
Every file a manifest names is a plain file name of a regular file in the package (no folder, no
``..``, no symbolic link).
Nothing here imports torch: the Slicer module describes a model before its dependencies are
installed. The layout of a package and the manifest's fields: :mod:`ctv_core.model.package`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import ModelPackageError
from .comparison import check_comparison
from .graph import FILE_KEYS, GRAPH_FORMAT, GRAPH_KEYS
from .settings import ModelSettings

FORMAT = "ctv-model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
#: A manifest larger than this, or nested deeper, is not a model's.
MAX_MANIFEST_BYTES = 4 << 20
MAX_MANIFEST_DEPTH = 32
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
BUNDLED = Path(__file__).parent / "demo"

#: The architectures a package may declare (:data:`ctv_core.model.package.ARCHITECTURES` builds them).
ARCHITECTURE_NAMES = ("unet3d", "hu_window")
_REQUIRED = ("format", "format_version", "name", "version", "architecture", "network", "settings", "weights")
#: Every key a manifest may hold, with the JSON type of its value.
_KEYS: dict[str, type | tuple[type, ...]] = {
    "format": str, "format_version": int, "name": str, "version": str, "created": str, "ctv_core_version": str,
    "description": str, "intended_use": str, "architecture": str, "network": dict, "settings": dict,
    "weights": dict, "graph": dict, "training": dict, "metrics": dict, "fingerprint": str, "comparison": dict,
}
_WEIGHT_KEYS: dict[str, type] = {"file": str, "sha256": str, "bytes": int}


def package_error(path: Path, what: str) -> ModelPackageError:
    """The error for a package at ``path`` that cannot be used because of ``what``."""
    return ModelPackageError(f"'{path}' is not a usable model package: {what}.")


def sha256_of(path: Path) -> str:
    """SHA-256 (hex) of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(manifest: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of what decides a package's output: format, architecture,
    network, settings and the weights' SHA-256 (of a manifest, or of the same keys in effect).
    Names, versions, descriptions and records do not enter, so re-labelling a model keeps its
    fingerprint and changing how it runs does not."""
    decisive = {"format": manifest["format"], "architecture": manifest["architecture"],
                "network": manifest["network"], "settings": manifest["settings"],
                "weights_sha256": manifest["weights"]["sha256"]}
    if manifest.get("graph") is not None:  # packages without a graph keep the fingerprint they were exported with
        decisive["graph_sha256"] = [manifest["graph"]["sha256"], manifest["graph"]["constants"]["sha256"]]
    text = json.dumps(decisive, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, stopping once past ``limit``."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in children), default=0)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number a manifest may hold")


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest as a checked dict: JSON object, known keys of the right types, bounded size and nesting."""
    file = path / MANIFEST
    try:
        if file.is_symlink() or not file.is_file():
            raise package_error(path, f"{MANIFEST} is missing or not a regular file; choose the folder that holds "
                                      f"{MANIFEST} and {WEIGHTS} (made by 'ctv export')")
        if file.stat().st_size > MAX_MANIFEST_BYTES:
            raise package_error(path, f"{MANIFEST} is {file.stat().st_size} bytes; a manifest is far smaller")
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise package_error(path, f"{MANIFEST} cannot be read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise package_error(path, f"{MANIFEST} is not UTF-8 text ({exc})") from exc
    try:
        manifest = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise package_error(path, f"{MANIFEST} is not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise package_error(path, f"{MANIFEST} is nested too deeply to be a manifest") from exc
    if not isinstance(manifest, dict):
        raise package_error(path, f"{MANIFEST} does not hold an object")
    if _depth(manifest, MAX_MANIFEST_DEPTH) > MAX_MANIFEST_DEPTH:
        raise package_error(path, f"{MANIFEST} is nested more than {MAX_MANIFEST_DEPTH} levels deep")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise package_error(path, f"{MANIFEST} lacks {', '.join(missing)}")
    unknown = sorted(set(manifest) - set(_KEYS))
    if unknown:
        raise package_error(path, f"{MANIFEST} has unknown field(s) {', '.join(unknown)} (known: {', '.join(_KEYS)})")
    for key, value in manifest.items():
        if not isinstance(value, _KEYS[key]) or isinstance(value, bool):
            raise package_error(path, f"{MANIFEST} field '{key}' must be a JSON {_json_type(_KEYS[key])}, not "
                                      f"{json.dumps(value)[:40]}")
    if manifest["format"] != FORMAT or manifest["format_version"] not in READABLE_VERSIONS:
        raise package_error(path, f"format {manifest['format']!r} version {manifest['format_version']!r} is not "
                                  f"{FORMAT!r} version {' or '.join(map(str, READABLE_VERSIONS))}; this ctv_core "
                                  f"{__version__} cannot read it")
    _check_record(path, manifest["weights"], _WEIGHT_KEYS, "weights")
    if "comparison" in manifest:
        try:
            check_comparison(manifest["comparison"])
        except ValueError as exc:
            raise package_error(path, f"{MANIFEST} has a malformed comparison ({exc}); run 'ctv model compare' "
                                      "again or remove the field") from exc
    if "graph" in manifest:
        graph = manifest["graph"]
        _check_record(path, graph, GRAPH_KEYS, "graph")
        _check_record(path, graph["constants"], FILE_KEYS, "graph.constants")
        if graph["format"] != GRAPH_FORMAT:
            raise package_error(path, f"its graph is of format {graph['format']!r}; this ctv_core {__version__} "
                                      f"reads {GRAPH_FORMAT!r}")
    return manifest


def _check_record(path: Path, record: dict[str, Any], keys: dict[str, type], where: str) -> None:
    """Every key of ``keys`` present in ``record`` with its JSON type, and no other."""
    for key, kind in keys.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise package_error(path, f"{MANIFEST} field '{where}.{key}' must be a JSON {_json_type(kind)}, not "
                                      f"{json.dumps(record.get(key))[:40]}")
    extra = sorted(set(record) - set(keys))
    if extra:
        raise package_error(path, f"{MANIFEST} field '{where}' has unknown key(s) {', '.join(extra)}")


def _json_type(kind: type | tuple[type, ...]) -> str:
    return {str: "string", int: "integer", dict: "object", list: "array"}.get(kind, "value")


def package_file(path: Path, name: str, what: str) -> Path:
    """A file of the package (``what``: "weights", "graph", ...): a plain name of a regular file directly in the
    package, never a link or a path out."""
    if not name or "/" in name or "\\" in name or Path(name).is_absolute() or name.startswith("."):
        raise package_error(path, f"the {what} file {name!r} must be a plain file name inside the package (no "
                                  "folders, no '..', no absolute path)")
    file = path / name
    if file.is_symlink():
        raise package_error(path, f"the {what} file {name!r} is a symbolic link; a package holds its own files")
    if not file.is_file():
        raise package_error(path, f"the {what} file {name!r} named in the manifest is missing")
    return file


def check_file(path: Path, record: dict[str, Any], what: str) -> None:
    """The file named by ``record`` (``file``, ``bytes``, ``sha256``) exists in the package with that size and hash."""
    file = package_file(path, record["file"], what)
    if file.stat().st_size != record["bytes"]:
        raise package_error(path, f"{file.name} has {file.stat().st_size} bytes, the manifest says {record['bytes']} "
                                  "(truncated or replaced)")
    actual = sha256_of(file)
    if actual != record["sha256"]:
        raise package_error(path, f"the SHA-256 of {file.name} is {actual}, the manifest says {record['sha256']}: "
                                  f"the {what} file is corrupt or was replaced. Reinstall or re-export the package")


@dataclass(frozen=True)
class ModelDescription:
    """What a user is told about a model package before running it (read from its manifest only).

    Attributes
    ----------
    path
        The package folder.
    name, version, description, intended_use
        From the manifest (description and intended use "" when absent).
    training, metrics
        The manifest's free-form training and validation records (empty when absent).
    weights_sha256
        SHA-256 of the weights file, as the manifest states it (checked when the model is loaded).
    passes
        The network's recurrent refinement passes (None for an architecture without them).
    test_time_flips
        Whether inference averages with the left-right mirrored prediction.
    bundled
        True for the bundled demonstration model.
    """

    path: Path
    name: str
    version: str
    description: str
    intended_use: str
    training: dict[str, Any]
    metrics: dict[str, Any]
    weights_sha256: str
    passes: int | None
    test_time_flips: bool
    bundled: bool

    def training_data_line(self) -> str:
        """One line: cases, patients, target volumes (cc), voxel spacings (mm); "not recorded" without a record."""
        data = self.training.get("data")
        if not isinstance(data, dict):
            return "not recorded"
        info = data.get("info") if isinstance(data.get("info"), dict) else {}
        parts = [f"{data.get('cases', info.get('cases', '?'))} cases of "
                 f"{data.get('patients', info.get('patients', '?'))} patients"]
        volumes = (info.get("roi_volumes_cc") or {}).get("target") or {}
        if "min" in volumes and "max" in volumes:
            parts.append(f"CTV {volumes['min']:.0f}-{volumes['max']:.0f} cc")
        if info.get("spacing_min") and info.get("spacing_max"):
            low, high = info["spacing_min"], info["spacing_max"]
            parts.append(f"spacing {min(low[:2]):.2f}-{max(high[:2]):.2f} mm in-plane, {low[2]:.2f}-{high[2]:.2f} "
                         "mm between slices")
        return ", ".join(parts)

    def metrics_line(self) -> str:
        """One line: the validation figures recorded (best-of figures left out); "not recorded" without any."""
        figures = [f"{key.replace('_', ' ')} {value:.3f}" for key, value in self.metrics.items()
                   if isinstance(value, float) and "best" not in key]
        if not figures:
            return "not recorded"
        cases = self.metrics.get("validation_cases")
        return ", ".join(figures) + (f" ({cases} held-out cases)" if cases else "")

    def text(self) -> str:
        """Several lines for a person choosing the model (the Slicer module's model box); empty fields left out."""
        lines = [f"{self.name} {self.version}" + (" (bundled demonstration model)" if self.bundled else ""),
                 self.description, f"Intended use: {self.intended_use}", f"Training data: {self.training_data_line()}",
                 f"Metrics: {self.metrics_line()}",
                 f"Weights SHA-256: {self.weights_sha256[:16]}... (checked each time the model is loaded)"]
        return "\n".join(line for line in lines if line.split(":")[-1].strip())


def package_folder(path: str | Path | None) -> Path:
    """The package folder ``path`` names (None: the bundled one), checked to be a folder holding a manifest."""
    if path is None:
        if not (BUNDLED / MANIFEST).is_file():
            raise ModelPackageError(
                "This installation has no bundled model (ctv_core/model/demo). Give a model package with "
                "--model PKG (model=... in Python)."
            )
        return BUNDLED
    path = Path(path)
    if not path.is_dir():
        raise package_error(path, "it is not a folder (a package is a folder with manifest.json and "
                                  "weights.safetensors, made by 'ctv export')")
    return path


def read_package(path: str | Path | None = None) -> tuple[Path, dict[str, Any], ModelSettings]:
    """The folder, checked manifest and settings of the package at ``path`` (None: the bundled one).

    Raises
    ------
    ModelPackageError
        Not a package; a manifest of unknown fields or wrong types, of another format, an unknown
        architecture or an invalid setting; a weights file that is missing, not a plain file of the
        package, or of another size than the manifest says.
    """
    path = package_folder(path)
    manifest = read_manifest(path)
    if manifest["architecture"] not in ARCHITECTURE_NAMES:
        raise package_error(path, f"unknown architecture {manifest['architecture']!r} (known: "
                                  f"{', '.join(ARCHITECTURE_NAMES)})")
    try:
        settings = ModelSettings.from_dict(manifest["settings"])
    except (ValueError, TypeError, KeyError) as exc:
        raise package_error(path, f"its manifest has an invalid setting: {exc}") from exc
    weights = manifest["weights"]
    file = package_file(path, weights["file"], "weights")
    if file.stat().st_size != weights["bytes"]:
        raise package_error(path, f"{file.name} has {file.stat().st_size} bytes, the manifest says {weights['bytes']} "
                                  "(truncated or replaced)")
    return path, manifest, settings


def describe_model_package(path: str | Path | None = None) -> ModelDescription:
    """The description of the package at ``path`` (None: the bundled one), from its strictly read manifest
    (:func:`read_package`; it raises ``ModelPackageError`` for what loading the package would refuse in it)."""
    path, manifest, settings = read_package(path)
    passes = manifest["network"].get("passes")
    return ModelDescription(
        path=path, name=manifest["name"], version=manifest["version"], description=manifest.get("description", ""),
        intended_use=manifest.get("intended_use", ""), training=manifest.get("training", {}),
        metrics=manifest.get("metrics", {}), weights_sha256=manifest["weights"]["sha256"],
        passes=passes if isinstance(passes, int) and not isinstance(passes, bool) else None,
        test_time_flips=bool(settings.inference.test_time_flips), bundled=path.resolve() == BUNDLED.resolve())
