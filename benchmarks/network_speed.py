"""Speed of the CTV network on this machine, against the machine's own fp32 matmul throughput.

Usage: ``python benchmarks/network_speed.py [--patch Z Y X ...] [--widths W ...] [--passes N] [--blocks-per-level N]
[--engine torch|openvino]``

Prints the fp32 matmul GFLOP/s (2048^3, median of 5, on the threads ``configure_runtime``
chooses), then per patch size: parameters, GFLOPs per forward (all passes, batch 1), the median
wall time of 3 forwards after one warm-up (``--engine torch``, the default: the prepared model under
``torch.inference_mode()``; ``--engine openvino``: the graph of a package exported on the spot,
compiled for the patch during the warm-up, through :class:`~ctv_core.model.engines.OpenVINOEngine`), the
achieved GFLOP/s and its ratio to matmul, the peak-RSS increase, and a GPU estimate from the
FLOPs alone. Other processes competing for the cores show up in the load average printed first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory import reset_peak_rss, status_mb  # noqa: E402

from ctv_core.model.network_config import NetworkConfig  # noqa: E402
from ctv_core.model.runtime import configure_runtime, prepare_for_inference, select_device  # noqa: E402
from ctv_core.model.unet3d import UNet3D, count_flops, count_parameters  # noqa: E402

# An A100-class card reaches ~300 TFLOP/s dense bf16 at peak; 3D convolutions with few
# channels rarely use more than ~10% of it, so 30 TFLOP/s effective is assumed.
GPU_EFFECTIVE_TFLOPS = 30.0

PATCHES = ((64, 128, 128), (96, 112, 144), (96, 128, 160), (128, 160, 160))


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs=3, action="append", metavar=("Z", "Y", "X"))
    parser.add_argument("--widths", type=int, nargs="+", default=list(NetworkConfig.widths),
                        help="feature channels per level (default: the method's)")
    parser.add_argument("--passes", type=int, default=NetworkConfig.passes)
    parser.add_argument("--blocks-per-level", type=int, default=NetworkConfig.blocks_per_level)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine", choices=("torch", "openvino"), default="torch")
    args = parser.parse_args(argv)

    device = select_device("cpu")
    configure_runtime(device)
    config = NetworkConfig(widths=tuple(args.widths), passes=args.passes, blocks_per_level=args.blocks_per_level)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f} (other work on the cores slows every number)")
    reference = matmul_gflops()
    print(f"fp32 matmul 2048^3: {reference:.0f} GFLOP/s (median of 5)")
    model = UNet3D(config)
    print(f"network {config.to_dict()}: {count_parameters(model):,} parameters")
    forward = _forward(args.engine, model, config, device)
    print(f"GPU estimate assumes {GPU_EFFECTIVE_TFLOPS:.0f} TFLOP/s effective "
          "(A100-class bf16 at ~10% of peak)")
    print(f"{'patch z,y,x':>15} {'GFLOP':>7} {'median s':>9} {'GFLOP/s':>8} {'/matmul':>8} "
          f"{'peak RSS +MB':>13} {'GPU est. ms':>12}")
    for patch in [tuple(p) for p in args.patch] if args.patch else PATCHES:
        flops = count_flops(config, patch)
        image = torch.randn(1, config.in_channels, *patch)
        baseline = reset_peak_rss()
        forward(image)  # warm-up: oneDNN primitives and memory pools, or OpenVINO's compilation for this shape
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            forward(image)
            times.append(time.perf_counter() - start)
        peak = status_mb("VmHWM") - baseline
        seconds = statistics.median(times)
        achieved = flops / seconds / 1e9
        gpu_ms = flops / (GPU_EFFECTIVE_TFLOPS * 1e12) * 1e3
        print(f"{'x'.join(map(str, patch)):>15} {flops / 1e9:7.1f} {seconds:9.2f} {achieved:8.0f} "
              f"{achieved / reference:8.2f} {peak:13.0f} {gpu_ms:12.1f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def _forward(engine: str, model: UNet3D, config: NetworkConfig, device: torch.device):
    """A function running the network on a ``[1, C, z, y, x]`` tensor with ``engine``."""
    if engine == "torch":
        prepared = prepare_for_inference(model, device)

        def run(image: torch.Tensor) -> None:
            with torch.inference_mode():
                prepared(image)

        return run
    from ctv_core.model.engines import OpenVINOEngine
    from ctv_core.model.package import save_model_package
    from ctv_core.model.settings import ModelSettings

    folder = Path(tempfile.mkdtemp(prefix="network-speed-"))
    package = save_model_package(folder / "pkg", model, "unet3d", config, ModelSettings(), name="speed", version="0",
                                 description="network speed benchmark, untrained weights")
    engine_ = OpenVINOEngine(package)
    print(f"OpenVINO {engine_.version.split('-')[0]}, {engine_.threads} threads, float32")
    return lambda image: engine_.logits(image.numpy())


if __name__ == "__main__":
    main()
