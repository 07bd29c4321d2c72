"""The manifest of a model package, read strictly, and the checks of the files it names.

What a manifest holds is described in :mod:`.package`. Reading is strict and executes nothing:
a JSON object of bounded size and nesting, only known keys with values of the right JSON types
(no NaN or infinity), the format and version this ctv_core reads; every file it names a plain
file name of a regular file in the package (no folder, no ``..``, no symbolic link) of the
declared size and SHA-256. Each problem is a :class:`~ctv_core.errors.ModelPackageError`
saying what and how to fix it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import ModelPackageError
from .graph import FILE_KEYS, GRAPH_FORMAT, GRAPH_KEYS

FORMAT = "ctv-model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
#: A manifest larger than this, or nested deeper, is not a model's.
MAX_MANIFEST_BYTES = 4 << 20
MAX_MANIFEST_DEPTH = 32
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
_REQUIRED = ("format", "format_version", "name", "version", "architecture", "network", "settings", "weights")
#: Every key a manifest may hold, with the JSON type of its value.
_KEYS: dict[str, type | tuple[type, ...]] = {
    "format": str, "format_version": int, "name": str, "version": str, "created": str, "ctv_core_version": str,
    "description": str, "intended_use": str, "architecture": str, "network": dict, "settings": dict,
    "weights": dict, "graph": dict, "training": dict, "metrics": dict, "fingerprint": str,
}
_WEIGHT_KEYS: dict[str, type] = {"file": str, "sha256": str, "bytes": int}




def fail(path: Path, what: str) -> ModelPackageError:
    return ModelPackageError(f"'{path}' is not a usable model package: {what}.")


def sha256_of(path: Path) -> str:
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
            raise fail(path, f"{MANIFEST} is missing or not a regular file")
        if file.stat().st_size > MAX_MANIFEST_BYTES:
            raise fail(path, f"{MANIFEST} is {file.stat().st_size} bytes; a manifest is far smaller")
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(path, f"{MANIFEST} cannot be read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise fail(path, f"{MANIFEST} is not UTF-8 text ({exc})") from exc
    try:
        manifest = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise fail(path, f"{MANIFEST} is not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise fail(path, f"{MANIFEST} is nested too deeply to be a manifest") from exc
    if not isinstance(manifest, dict):
        raise fail(path, f"{MANIFEST} does not hold an object")
    if _depth(manifest, MAX_MANIFEST_DEPTH) > MAX_MANIFEST_DEPTH:
        raise fail(path, f"{MANIFEST} is nested more than {MAX_MANIFEST_DEPTH} levels deep")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise fail(path, f"{MANIFEST} lacks {', '.join(missing)}")
    unknown = sorted(set(manifest) - set(_KEYS))
    if unknown:
        raise fail(path, f"{MANIFEST} has unknown field(s) {', '.join(unknown)} (known: {', '.join(_KEYS)})")
    for key, value in manifest.items():
        if not isinstance(value, _KEYS[key]) or isinstance(value, bool):
            raise fail(path, f"{MANIFEST} field '{key}' must be a JSON {_json_type(_KEYS[key])}, not "
                              f"{json.dumps(value)[:40]}")
    if manifest["format"] != FORMAT or manifest["format_version"] not in READABLE_VERSIONS:
        raise fail(path, f"format {manifest['format']!r} version {manifest['format_version']!r} is not "
                          f"{FORMAT!r} version {' or '.join(map(str, READABLE_VERSIONS))}; this ctv_core "
                          f"{__version__} cannot read it")
    _check_record(path, manifest["weights"], _WEIGHT_KEYS, "weights")
    if "graph" in manifest:
        graph = manifest["graph"]
        _check_record(path, graph, GRAPH_KEYS, "graph")
        _check_record(path, graph["constants"], FILE_KEYS, "graph.constants")
        if graph["format"] != GRAPH_FORMAT:
            raise fail(path, f"its graph is of format {graph['format']!r}; this ctv_core {__version__} reads "
                              f"{GRAPH_FORMAT!r}")
    return manifest


def _check_record(path: Path, record: dict[str, Any], keys: dict[str, type], where: str) -> None:
    """Every key of ``keys`` present in ``record`` with its JSON type, and no other."""
    for key, kind in keys.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise fail(path, f"{MANIFEST} field '{where}.{key}' must be a JSON {_json_type(kind)}, not "
                              f"{json.dumps(record.get(key))[:40]}")
    extra = sorted(set(record) - set(keys))
    if extra:
        raise fail(path, f"{MANIFEST} field '{where}' has unknown key(s) {', '.join(extra)}")


def _json_type(kind: type | tuple[type, ...]) -> str:
    return {str: "string", int: "integer", dict: "object", list: "array"}.get(kind, "value")


def _package_file(path: Path, name: str, what: str) -> Path:
    """A file of the package: a plain name of a regular file directly in the package, never a link or a path out."""
    if not name or "/" in name or "\\" in name or Path(name).is_absolute() or name.startswith("."):
        raise fail(path, f"the {what} file {name!r} must be a plain file name inside the package (no folders, no "
                          "'..', no absolute path)")
    file = path / name
    if file.is_symlink():
        raise fail(path, f"the {what} file {name!r} is a symbolic link; a package holds its own files")
    if not file.is_file():
        raise fail(path, f"the {what} file {name!r} named in the manifest is missing")
    return file


def check_file(path: Path, record: dict[str, Any], what: str) -> None:
    """The file named by ``record`` (``file``, ``bytes``, ``sha256``) exists in the package with that size and hash."""
    file = _package_file(path, record["file"], what)
    if file.stat().st_size != record["bytes"]:
        raise fail(path, f"{file.name} has {file.stat().st_size} bytes, the manifest says {record['bytes']} "
                          "(truncated or replaced)")
    actual = sha256_of(file)
    if actual != record["sha256"]:
        raise fail(path, f"the SHA-256 of {file.name} is {actual}, the manifest says {record['sha256']}: "
                          f"the {what} file is corrupt or was replaced. Reinstall or re-export the package")
