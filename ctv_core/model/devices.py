"""Which device runs the network and how many CPUs this process may use, without importing torch.

``"auto"`` means CUDA when this machine has an NVIDIA driver *and* an installed torch sees a CUDA
device, else the CPU. The driver is looked for first (Linux: ``/proc/driver/nvidia/version``, or
``/dev/dxg`` under WSL2; Windows: ``nvcuda.dll``), so a CPU-only machine never pays torch's import
(about 1.3 s and 250 MB) to learn that it has no GPU.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
#: Files whose presence says an NVIDIA (CUDA) driver is installed.
NVIDIA_DRIVER_FILES = (Path("/proc/driver/nvidia/version"), Path("/dev/dxg"),
                       Path(os.environ.get("SystemRoot", "C:/Windows")) / "System32" / "nvcuda.dll")


def torch_installed() -> bool:
    """Whether torch can be imported here (looked up without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a broken installation, or an import hook refusing it
        return False


def cuda_usable() -> bool:
    """An NVIDIA driver is loaded and torch (installed, with CUDA support) sees a CUDA device."""
    if not any(f.exists() for f in NVIDIA_DRIVER_FILES) or not torch_installed():
        return False
    import torch

    return bool(torch.cuda.is_available())


def device_name(device: str = "auto") -> str:
    """``"cpu"`` or ``"cuda"`` for ``--device`` (``auto``, ``cpu`` or ``cuda``).

    Raises :class:`~ctv_core.errors.DeviceError` for ``"cuda"`` without a usable CUDA device, or an
    unknown name. Only ``"cuda"``, and ``"auto"`` on a machine with an NVIDIA driver, import torch.
    """
    name = str(device).strip().lower()
    if name == "auto":
        return "cuda" if cuda_usable() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda":
        if not torch_installed():
            raise DeviceError("--device cuda needs PyTorch with CUDA support, which is not installed here; install "
                              "it (pip install 'ctv_core[torch]', or a CUDA build of torch for your GPU), or use "
                              "--device cpu")
        if not cuda_usable():
            import torch

            raise DeviceError(
                "CUDA is not available (no CUDA GPU is visible, or this torch build has no CUDA "
                f"support: torch {torch.__version__}); use --device cpu (or device='cpu'), or "
                "--device auto to take the GPU when there is one")
        return "cuda"
    raise DeviceError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}")


def usable_cpu_count() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota if one is set."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota readable: the affinity mask is the limit
    return max(1, count)
