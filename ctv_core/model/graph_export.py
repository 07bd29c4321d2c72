"""Writing a package's network as an OpenVINO IR whose weights are the package's safetensors file.

Used when a package is saved (:func:`~ctv_core.model.package.save_model_package`); needs torch
and openvino. The steps:

1. The PyTorch network, built from the stored weights exactly as the PyTorch engine builds it,
   is traced and translated by OpenVINO's PyTorch front end *without* OpenVINO's offline
   optimisations (those fold batch norms into the convolutions, which would change the weights'
   bytes; the CPU plugin makes the same fusions when it compiles).
2. Every float32 constant that is a float16 tensor of the weights file widened to float32
   becomes that float16 constant followed by a conversion, so its bytes are the file's bytes.
3. The IR is saved, and each constant whose bytes (and element type) equal a tensor of the
   weights file is pointed at that tensor's bytes in the file; the others (shapes, axes,
   scalars) go to ``network_constants.bin`` (:mod:`.graph`).
4. The graph is read back as the OpenVINO engine reads it and compared with the PyTorch network
   on a test input (seeded noise in [-1, 1], the normalised-CT range).
"""

from __future__ import annotations

import hashlib
import json
import struct
import tempfile
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelPackageError
from .graph import (CONSTANTS, GRAPH, GRAPH_FORMAT, graph_shapes, import_openvino, logit_tolerance, read_graph)

#: safetensors dtype -> OpenVINO IR element type.
_ELEMENT_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16", "F64": "f64", "I64": "i64", "I32": "i32",
                  "I16": "i16", "I8": "i8", "U8": "u8", "BOOL": "boolean"}


def _tensors_of(weights_file: Path) -> dict[tuple[str, bytes], int]:
    """(IR element type, bytes) -> absolute offset in the file, for every tensor of a safetensors file."""
    raw = weights_file.read_bytes()
    header_length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + header_length])
    base = 8 + header_length
    found: dict[tuple[str, bytes], int] = {}
    for name, entry in header.items():
        if name == "__metadata__" or entry["dtype"] not in _ELEMENT_TYPES:
            continue
        start, end = entry["data_offsets"]
        found.setdefault((_ELEMENT_TYPES[entry["dtype"]], raw[base + start:base + end]), base + start)
    return found


def _translate(network: nn.Module, in_channels: int, sample_zyx: tuple[int, int, int]):
    """The network as an ``openvino.Model`` with input ``[1, in_channels, ?, ?, ?]``, unoptimised."""
    ov = import_openvino()
    from openvino.frontend import FrontEndManager
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    example = torch.zeros((1, in_channels, *sample_zyx))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the input checks, which hold for every patch
        decoder = TorchScriptPythonDecoder(network, example_input=(example,))
    front_end = FrontEndManager().load_by_framework("pytorch")
    model_input = front_end.load(decoder)
    model_input.set_partial_shape(model_input.get_inputs()[0], ov.PartialShape([1, in_channels, -1, -1, -1]))
    return front_end.convert(model_input)


def _half_constants(model, tensors: dict[tuple[str, bytes], int]) -> None:
    """Replace (in place) each float32 constant that is a float16 tensor of the weights file, widened, by that
    float16 constant and a conversion to float32."""
    ov = import_openvino()
    from openvino import opset13 as ops

    half_tensors = {data for kind, data in tensors if kind == "f16"}
    for node in model.get_ops():
        if node.get_type_name() != "Constant" or node.get_output_element_type(0) != ov.Type.f32:
            continue
        values = node.get_data()
        half = values.astype(np.float16)
        if half.tobytes() in half_tensors and np.array_equal(half.astype(np.float32), values):
            widened = ops.convert(ops.constant(half), ov.Type.f32)
            node.output(0).replace(widened.output(0))


def _point_into_weights(xml_file: Path, bin_file: Path, tensors: dict[tuple[str, bytes], int], weights_bytes: int,
                        out_xml: Path, out_constants: Path) -> int:
    """Write ``out_xml`` with every constant pointing into the weights file or ``out_constants``; returns how many
    constants point into the weights file."""
    blob = bin_file.read_bytes()
    tree = ET.parse(xml_file)
    extra = bytearray()
    extra_offsets: dict[bytes, int] = {}
    shared = 0
    for layer in tree.getroot().iter("layer"):
        data = layer.find("data")
        if layer.get("type") != "Const" or data is None or data.get("offset") is None:
            continue
        offset, size = int(data.get("offset")), int(data.get("size"))
        payload = blob[offset:offset + size]
        key = (data.get("element_type"), payload)
        if key in tensors:
            data.set("offset", str(tensors[key]))
            shared += 1
            continue
        if payload not in extra_offsets:
            extra_offsets[payload] = len(extra)
            extra += payload
        data.set("offset", str(weights_bytes + extra_offsets[payload]))
    tree.write(out_xml, encoding="utf-8", xml_declaration=True)
    out_constants.write_bytes(bytes(extra))
    return shared


def _file_record(path: Path) -> dict[str, Any]:
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}


def _check_against_torch(package_dir: Path, record: dict[str, Any], weights_file: Path, network: nn.Module,
                         in_channels: int, out_channels: int, check_zyx: tuple[int, int, int]) -> dict[str, Any]:
    """Compare the graph (read back as the engine reads it, float32) with ``network`` on seeded noise."""
    ov = import_openvino()
    model = read_graph(package_dir, record, weights_file, in_channels, out_channels)
    model.reshape([1, in_channels, *check_zyx])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    sample = np.random.default_rng(20261206).uniform(-1.0, 1.0, (1, in_channels, *check_zyx)).astype(np.float32)
    graph_logits = np.asarray(compiled(sample)[0])
    with torch.inference_mode():
        torch_logits = network(torch.from_numpy(sample)).float().numpy()
    difference = float(np.max(np.abs(graph_logits - torch_logits)))
    largest = float(np.max(np.abs(torch_logits)))
    tolerance = logit_tolerance(largest)
    if not difference <= tolerance:
        raise ModelPackageError(
            f"The exported graph does not compute the network: its logits differ from PyTorch's by up to "
            f"{difference:.3g} (accepted: {tolerance:.3g}) on a {check_zyx} test input. This is a fault of the export "
            f"with OpenVINO {ov.__version__}; export with another OpenVINO release, or without a graph.")
    return {"input_zyx": list(check_zyx), "max_abs_logit_difference": difference, "max_abs_logit": largest,
            "tolerance": tolerance, "openvino": ov.__version__}


def write_graph(network: nn.Module, in_channels: int, out_channels: int, divisor: int,
                check_zyx: tuple[int, int, int], package_dir: Path, weights_file: Path) -> dict[str, Any]:
    """Write ``network.xml`` and ``network_constants.bin`` into ``package_dir`` and return the manifest's ``graph``
    record. ``network`` (float32, CPU) must carry the weights stored in ``weights_file``; ``check_zyx`` is the test
    input's size (z, y, x; multiples of ``divisor``). Raises ``ModelPackageError`` if the graph's logits differ from
    the network's by more than :func:`~ctv_core.model.graph.logit_tolerance`."""
    ov = import_openvino()
    network = network.eval()
    tensors = _tensors_of(weights_file)
    model = _translate(network, in_channels, (2 * divisor,) * 3)
    _half_constants(model, tensors)
    with tempfile.TemporaryDirectory() as tmp:
        ov.save_model(model, str(Path(tmp) / "raw.xml"), compress_to_fp16=False)
        _point_into_weights(Path(tmp) / "raw.xml", Path(tmp) / "raw.bin", tensors, weights_file.stat().st_size,
                            package_dir / GRAPH, package_dir / CONSTANTS)
    input_shape, output_shape = graph_shapes(in_channels, out_channels)
    record: dict[str, Any] = {"format": GRAPH_FORMAT, **_file_record(package_dir / GRAPH),
                              "constants": _file_record(package_dir / CONSTANTS),
                              "input_shape": input_shape, "output_shape": output_shape}
    record["check"] = _check_against_torch(package_dir, record, weights_file, network, in_channels, out_channels,
                                           check_zyx)
    return record
