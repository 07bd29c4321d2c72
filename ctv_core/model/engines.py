"""The engines that run a package's network: OpenVINO on the CPU, PyTorch on CUDA (or on request).

An engine maps a float32 NumPy batch ``[1, C, z, y, x]`` (the model grid's z, y, x) to the
network's logits ``[1, out_channels, z, y, x]``, float32. The sliding window, flips and
refinement passes around it work on NumPy arrays, so the OpenVINO path imports no torch.

* ``openvino``: the package's graph (:mod:`.graph`), compiled once per window shape for the CPU
  at float32 (``INFERENCE_PRECISION_HINT f32``: OpenVINO would otherwise choose bfloat16 on CPUs
  that have it), latency mode, one inference thread per usable CPU (affinity mask and cgroup
  quota: :func:`~.devices.usable_cpu_count`).
* ``torch``: the PyTorch network prepared by :func:`~.runtime.prepare_for_inference` (batch norms
  folded; channels-last and oneDNN on the CPU; autocast on CUDA), threads as above.
* ``auto``: OpenVINO on the CPU when the package has a graph for the network in effect and
  openvino is installed, PyTorch otherwise (always on CUDA).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..errors import DeviceError, MissingDependencyError
from ..heap import return_free_memory
from .devices import device_name, torch_installed, usable_cpu_count
from .graph import import_openvino

if TYPE_CHECKING:
    from torch import nn

    from .package import ModelPackage

logger = logging.getLogger(__name__)

ENGINE_CHOICES = ("auto", "openvino", "torch")


class Engine(Protocol):
    """What the sliding window needs: ``logits(batch)`` and, for reports, a name and the device."""

    name: str
    device: str

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``[1, out, z, y, x]`` (float32) of the float32 batch ``[1, C, z, y, x]``."""

    def release_memory(self) -> None:
        """Free what the engine holds between predictions (called after the network stage); ``logits``
        still works afterwards, at the cost of preparing the network again."""


class OpenVINOEngine:
    """The package's graph on the CPU through OpenVINO, float32, compiled once per input shape."""

    name = "openvino"
    device = "cpu"

    def __init__(self, package: ModelPackage, threads: int | None = None) -> None:
        ov = import_openvino()
        self.threads = threads or usable_cpu_count()
        self._core = ov.Core()
        self._core.set_property("CPU", {"INFERENCE_NUM_THREADS": self.threads, "INFERENCE_PRECISION_HINT": "f32",
                                        "PERFORMANCE_HINT": "LATENCY"})
        self._model = package.read_graph()
        self._compiled: dict[tuple[int, ...], object] = {}
        self.version = ov.__version__

    def logits(self, batch: np.ndarray) -> np.ndarray:
        shape = tuple(int(s) for s in batch.shape)
        compiled = self._compiled.get(shape)
        if compiled is None:
            self._model.reshape(list(shape))
            compiled = self._compiled[shape] = self._core.compile_model(self._model, "CPU")
            return_free_memory()  # the graph transformations' garbage (~8 MB), before the activations' peak
            logger.debug("OpenVINO: compiled for input %s on %d threads", shape, self.threads)
        return np.asarray(compiled(np.ascontiguousarray(batch, dtype=np.float32))[0], dtype=np.float32)

    def release_memory(self) -> None:
        """Drop the compiled networks and their buffers (about 300 MB for the demo model's window); the next
        ``logits`` compiles again (a fraction of a second)."""
        self._compiled.clear()


class TorchEngine:
    """A PyTorch network on a torch device, prepared for inference (see :mod:`.runtime`)."""

    name = "torch"

    def __init__(self, network: nn.Module, device: str = "cpu") -> None:
        import torch

        from .runtime import configure_runtime, logits_function, prepare_for_inference

        self._torch = torch
        self._device = torch.device(device)
        self.device = self._device.type
        configure_runtime(self._device)
        self._logits_of = logits_function(prepare_for_inference(network, self._device), self._device)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self._device)
            return self._logits_of(tensor).float().cpu().numpy()

    def release_memory(self) -> None:
        """Nothing to free: PyTorch returns a forward's buffers to its allocator when the forward ends."""


def engine_name(engine: str, device: str, package: ModelPackage) -> str:
    """``"openvino"`` or ``"torch"`` for ``--engine`` (``auto``, ``openvino``, ``torch``) on ``device``
    (``"cpu"`` or ``"cuda"``); see the module docstring. Raises ``DeviceError`` for an unknown name."""
    name = str(engine).strip().lower()
    if name not in ENGINE_CHOICES:
        raise DeviceError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINE_CHOICES)}")
    if name != "auto":
        return name
    openvino_here = importlib.util.find_spec("openvino") is not None
    return "openvino" if device == "cpu" and package.has_graph and openvino_here else "torch"


def open_engine(package: ModelPackage, engine: str = "auto", device: str = "auto") -> Engine:
    """The engine that runs ``package``'s network: ``engine`` (see :data:`ENGINE_CHOICES`) on ``device``
    (``auto``, ``cpu``, ``cuda``: :func:`~.devices.device_name`).

    Raises :class:`~ctv_core.errors.DeviceError` for OpenVINO on CUDA or an unknown name,
    :class:`~ctv_core.errors.MissingDependencyError` when the engine's library is not installed, and
    :class:`~ctv_core.errors.ModelPackageError` for ``openvino`` with a package without a usable graph.
    """
    device = device_name(device)
    name = engine_name(engine, device, package)
    if name == "openvino":
        if device != "cpu":
            raise DeviceError("The OpenVINO engine runs on the CPU; for the GPU choose --engine torch (or auto), or "
                              "--device cpu.")
        return OpenVINOEngine(package)
    if not torch_installed():
        why = ("this package has no graph for OpenVINO" if not package.has_graph else
               "OpenVINO is not installed" if importlib.util.find_spec("openvino") is None else "it was asked for")
        raise MissingDependencyError(
            f"Running the network with PyTorch ({why}) needs torch, which is not installed here. Install it with "
            "pip install 'ctv_core[torch]' (or a CUDA build of torch for a GPU), or, on the CPU, use a model package "
            "with a graph and --engine openvino.")
    return TorchEngine(package.build_network(), device)
