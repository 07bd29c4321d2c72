"""The network as a graph in a model package: an OpenVINO IR that shares the package's weights file.

Layout in the package::

    network.xml              the OpenVINO IR (the network's operations; no weights of its own)
    network_constants.bin    the few small constants that are not weights (shapes, axes, scalars)

The IR's constants are ``(offset, size)`` references into one byte buffer: here the bytes of
``weights.safetensors`` (an 8-byte header length, a JSON header, then the raw little-endian
tensors) followed by ``network_constants.bin``. Each learned weight is therefore stored once, in
the safetensors file that the PyTorch engine reads too; float16 weights enter the graph as
float16 constants followed by a conversion to float32, exactly as PyTorch casts them on loading.

The manifest's ``graph`` record names both files with their size and SHA-256, the input and
output shapes (``[1, C, -1, -1, -1]``: batch 1, the network's channels, any z, y, x that are
multiples of the network's divisor), and the check made at export (the largest logit difference
to the PyTorch network on a test input). Written by :mod:`.graph_export`; read here without torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ModelPackageError

GRAPH = "network.xml"
CONSTANTS = "network_constants.bin"
GRAPH_FORMAT = "openvino-ir"
#: The graph record's keys and JSON types.
GRAPH_KEYS: dict[str, type] = {"format": str, "file": str, "sha256": str, "bytes": int, "constants": dict,
                               "input_shape": list, "output_shape": list, "check": dict}
FILE_KEYS: dict[str, type] = {"file": str, "sha256": str, "bytes": int}
#: Largest logit difference to PyTorch accepted at export: 1e-4, or 1e-5 of the largest logit
#: (float32 sums over 30 000-term convolutions in another order differ by that much).
ABSOLUTE_TOLERANCE = 1e-4
RELATIVE_TOLERANCE = 1e-5


def logit_tolerance(largest_logit: float) -> float:
    """The accepted logit difference for logits up to ``largest_logit`` in magnitude."""
    return max(ABSOLUTE_TOLERANCE, RELATIVE_TOLERANCE * float(largest_logit))


def graph_shapes(in_channels: int, out_channels: int) -> tuple[list[int], list[int]]:
    """The graph's input and output shapes as recorded in the manifest (-1: any size)."""
    return [1, int(in_channels), -1, -1, -1], [1, int(out_channels), -1, -1, -1]


def import_openvino():
    """The ``openvino`` module, imported with OpenVINO's usage telemetry off; or
    :class:`~ctv_core.errors.MissingDependencyError` saying how to install it.

    ``import openvino`` sends a usage event to Google Analytics unless the user has opted out
    (``openvino_telemetry``, from a forked process): a planning workstation must not call out, and
    the fork, made while the prediction process's stdin is a pipe held by the caller, hangs the
    process at exit (measured: a cancelled ``ctv predict --progress json`` never ended). OpenVINO
    uses its own no-op stand-in when ``openvino_telemetry`` cannot be imported, so this process
    marks it as absent before the first import of ``openvino``.
    """
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # None in sys.modules: "import" raises ImportError
    try:
        import openvino
    except ImportError as exc:
        raise MissingDependencyError(
            f"The OpenVINO engine needs the openvino package, which cannot be imported here ({exc}). Install "
            "ctv_core again (pip install ctv_core brings openvino), or choose --engine torch.") from exc
    return openvino


def weights_buffer(weights_file: Path, constants_file: Path) -> np.ndarray:
    """The bytes the graph's constants point into: the weights file, then the small constants (uint8)."""
    return np.frombuffer(weights_file.read_bytes() + constants_file.read_bytes(), dtype=np.uint8)


def _shape_list(partial_shape) -> list[int]:
    return [int(d.get_length()) if d.is_static else -1 for d in partial_shape]


def read_graph(package_path: Path, record: dict[str, Any], weights_file: Path, in_channels: int,
               out_channels: int):
    """The package's network as an ``openvino.Model`` (not compiled), its shapes checked.

    The files' checksums are checked by the package loader; here the IR is parsed and its one
    input and one output must be ``[1, in_channels, z, y, x]`` and ``[1, out_channels, z, y, x]``.
    Raises :class:`~ctv_core.errors.ModelPackageError` otherwise.
    """
    ov = import_openvino()
    xml = (package_path / record["file"]).read_text(encoding="utf-8")
    buffer = weights_buffer(weights_file, package_path / record["constants"]["file"])
    try:
        model = ov.Core().read_model(xml, ov.Tensor(buffer))
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(exc).__name__  # OpenVINO's last line says what; the first, where
        raise ModelPackageError(f"'{package_path}' is not a usable model package: its graph {record['file']} cannot "
                                f"be read by OpenVINO {ov.__version__.split('-')[0]} ({reason}). Export the package "
                                "again, or choose --engine torch.") from exc
    expected = graph_shapes(in_channels, out_channels)
    found = ([_shape_list(p.get_partial_shape()) for p in model.inputs],
             [_shape_list(p.get_partial_shape()) for p in model.outputs])
    if len(found[0]) != 1 or len(found[1]) != 1 or any(
            f[:2] != e[:2] or len(f) != 5 for f, e in ((found[0][0], expected[0]), (found[1][0], expected[1]))):
        raise ModelPackageError(
            f"'{package_path}' is not a usable model package: its graph {record['file']} takes "
            f"{json.dumps(found[0])} and gives {json.dumps(found[1])}, but the network takes {expected[0]} and gives "
            f"{expected[1]} (batch, channels, z, y, x): the graph belongs to another model. Export the package again.")
    return model
