"""Seconds per training step of the CTV network on this machine, per memory layout.

Usage: ``python benchmarks/training_step.py [--widths W ...] [--patch Z Y X] [--batch N] [--steps N]``

One step is what ``ctv train`` does per batch on the network: the forward of every recurrent
pass, BCE on each pass, the backward and an Adam update (data loading excluded). Prints the
median of ``--steps`` steps after one warm-up, in the default (NCDHW) layout and in
``channels_last_3d``, which ``ctv train`` uses on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctv_core.model.network_config import NetworkConfig  # noqa: E402
from ctv_core.model.runtime import configure_runtime, select_device, use_channels_last  # noqa: E402
from ctv_core.model.unet3d import UNet3D  # noqa: E402


def step_seconds(config: NetworkConfig, patch: tuple[int, int, int], batch: int, steps: int,
                 channels_last: bool) -> float:
    """Median wall seconds of one optimiser step on random data (seeded)."""
    torch.manual_seed(0)
    network = UNet3D(config)
    if channels_last:
        use_channels_last(network)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
    image = torch.randn(batch, config.in_channels, *patch)
    target = (torch.rand(batch, config.out_channels, *patch) > 0.5).float()
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        logits = network(image, return_all_passes=True)
        loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(out, target) for out in logits)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=list(NetworkConfig.widths))
    parser.add_argument("--patch", type=int, nargs=3, default=[48, 64, 96], metavar=("Z", "Y", "X"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    configure_runtime(select_device("cpu"))
    config = NetworkConfig(widths=tuple(args.widths))
    patch = tuple(args.patch)
    print(f"widths {args.widths}, patch {patch}, batch {args.batch}, {torch.get_num_threads()} threads")
    for channels_last in (False, True):
        seconds = step_seconds(config, patch, args.batch, args.steps, channels_last)
        print(f"  {'channels_last_3d' if channels_last else 'default layout':>16}: {seconds:.2f} s/step")


if __name__ == "__main__":
    main()
