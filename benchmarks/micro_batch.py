"""What ``sampling.micro_batch`` costs and saves: seconds per step and peak memory, with and without the QAM.

Usage: ``python benchmarks/micro_batch.py [--widths W ...] [--patch Z Y X] [--batch N] [--steps N]``
(pin it, e.g. ``taskset -c 1``, on a shared machine).

Each configuration runs in a fresh process (so its peak resident memory is its own): the
trainer's own step (:func:`ctv_core.training.step.train_step`: the objective of every pass,
the sample weighting, the micro-batched backward, Adam) on random patches, one warm-up step,
then the median of ``--steps`` steps. Micro-batching keeps the gradient of the whole batch but
holds the activations of ``micro_batch`` samples at a time: it is how a batch that does not fit
in GPU memory still trains; on a CPU, with memory to spare, the smaller passes only cost time.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: (QAM on, micro-batch) pairs measured, the whole batch first.
CASES = ((False, None), (False, 2), (False, 1), (True, None), (True, 2), (True, 1))


def measure(widths: list[int], patch: list[int], batch: int, steps: int, qam: bool, micro: int | None) -> dict:
    """Median seconds per step and peak resident memory (MB) of one configuration, in this process."""
    import torch

    from ctv_core.model.runtime import configure_runtime, select_device, use_channels_last
    from ctv_core.model.unet3d import UNet3D
    from ctv_core.training.checkpoints import NETWORK
    from ctv_core.training.config import TrainingConfig
    from ctv_core.training.objective import DeepSupervisionObjective
    from ctv_core.training.quality import build_weighting
    from ctv_core.training.step import Trainables, train_step

    device = select_device("cpu")
    configure_runtime(device)
    config = TrainingConfig.from_dict({"network": {"widths": widths},
                                       "sampling": {"patch_zyx": patch, "batch_size": batch, "micro_batch": micro},
                                       "quality": {"enabled": qam}})
    torch.manual_seed(0)
    network = UNet3D(config.network)
    use_channels_last(network)
    weighting = build_weighting(config.quality, 2, 3, micro, device)
    optimizers = {NETWORK: torch.optim.Adam(network.parameters(), lr=1e-4), **weighting.optimizers}
    trainables = Trainables({NETWORK: network, **weighting.modules}, optimizers,
                            torch.amp.GradScaler("cuda", enabled=False), network)
    objective = DeepSupervisionObjective(config.pass_weights, 1.0, 1.0, 1.0)
    image = torch.randn(batch, 1, *patch)
    mask = (torch.rand(batch, 1, *patch) > 0.7).float()
    cases = [f"case{n}" for n in range(batch)]
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        train_step(trainables, objective, weighting, image, mask, cases, learning_rates={NETWORK: 1e-4},
                   micro_batch=micro)
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": statistics.median(times[1:]), "peak_mb": peak_mb, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 96, 128])
    parser.add_argument("--patch", type=int, nargs=3, default=[48, 64, 96], metavar=("Z", "Y", "X"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # "qam,micro": measure one, print JSON
    args = parser.parse_args(argv)
    if args.one is not None:
        qam, micro = args.one.split(",")
        print(json.dumps(measure(args.widths, args.patch, args.batch, args.steps, qam == "1",
                                 None if micro == "none" else int(micro))))
        return
    print(f"widths {args.widths}, patch {tuple(args.patch)}, batch {args.batch}, median of {args.steps} steps")
    for qam, micro in CASES:
        command = [sys.executable, __file__, "--widths", *map(str, args.widths), "--patch", *map(str, args.patch),
                   "--batch", str(args.batch), "--steps", str(args.steps),
                   "--one", f"{int(qam)},{'none' if micro is None else micro}"]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        label = f"{'QAM' if qam else 'no QAM'}, {'whole batch' if micro is None else f'micro-batch {micro}'}"
        print(f"  {label:24s} {result['seconds']:6.2f} s/step  peak {result['peak_mb']:6.0f} MB  "
              f"({result['threads']} thread(s))")


if __name__ == "__main__":
    main()
