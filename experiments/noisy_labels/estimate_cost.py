"""What a 2D grid costs before it is run: floating-point operations per optimiser step, per run, per grid.

Usage::

    python experiments/noisy_labels/estimate_cost.py [--config configs/noisy_labels_2d_gpu.json]
        [--tflops 10 25 50] [--step-latency-ms 10]

Each method's optimiser step is executed once, as the runner executes it (``run_2d.build_training``
and the trainer's ``train_step``, QAM passes included), on a random batch of the configuration's
batch size and image size on the CPU, under PyTorch's ``FlopCounterMode`` (multiply-adds counted
as two operations; convolutions and matrix products only, so element-wise work such as batch norm
is left out). The grid's total is the sum over its runs of steps x operations per step (the
evaluation at the end of a run, and the curve points where ``model.curve_every`` is set, add
forward passes over the 82 test and 165 training images, counted too). The printed times are
``operations / throughput`` for the sustained throughputs given (TFLOP/s), but at least
``steps x step latency`` (a small network at a small batch is bound by kernel launches and
synchronisation, not arithmetic; 10 ms per step is the order of a 2D U-Net step of this kind on
a current GPU, an assumption, not a measurement). Both are lower bounds: memory-bound layers are
not counted. The CPU seconds of one step on this machine are printed beside, for scale.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, load_config  # noqa: E402
from jsrt import STRUCTURES  # noqa: E402
from run_2d import Experiment2D, RunSpec, build_training, grid_runs  # noqa: E402

from ctv_core.training.checkpoints import NETWORK  # noqa: E402
from ctv_core.training.step import train_step  # noqa: E402

TEST_CASES, TRAIN_CASES = 82, 165


def step_operations(config: Experiment2D, method: str) -> tuple[float, float]:
    """``(operations, CPU seconds)`` of one optimiser step of ``method`` at the configuration's batch and size."""
    size, batch = config.data.image_size, config.model.batch_size
    network, trainables, weighting, objective = build_training(config, RunSpec(method, 0.0, None, 0),
                                                               torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 1, size, size, generator=generator)
    mask = (torch.rand(batch, len(STRUCTURES), size, size, generator=generator) > 0.5).float()
    cases = [f"case{i}" for i in range(batch)]
    network.train()
    started = time.perf_counter()
    with FlopCounterMode(display=False) as counter:
        train_step(trainables, objective, weighting, image, mask, cases,
                   learning_rates={NETWORK: config.optimisation.learning_rate})
    return float(counter.get_total_flops()), time.perf_counter() - started


def forward_operations(config: Experiment2D) -> float:
    """Operations of the segmentation network's forward pass on one image at the configuration's size."""
    network, _, _, _ = build_training(config, RunSpec("baseline", 0.0, None, 0), torch.device("cpu"))
    network.eval()
    size = config.data.image_size
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        network(torch.zeros(1, 1, size, size))
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "noisy_labels_2d_gpu.json")
    parser.add_argument("--tflops", type=float, nargs="+", default=[10.0, 25.0, 50.0],
                        help="sustained throughputs to convert operations into hours (TFLOP/s)")
    parser.add_argument("--step-latency-ms", type=float, default=10.0,
                        help="the least time of one optimiser step, whatever its operations (ms)")
    args = parser.parse_args(argv)
    config = load_config(Experiment2D, args.config)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    runs = grid_runs(config)
    steps = config.optimisation.steps
    points = len(range(config.model.curve_every, steps + 1, config.model.curve_every)) if config.model.curve_every \
        else 0
    evaluation = forward_operations(config) * (TEST_CASES + points * (TEST_CASES + TRAIN_CASES))
    print(f"{args.config.name}: {config.data.image_size}x{config.data.image_size}, batch {config.model.batch_size}, "
          f"widths {list(config.model.widths)}, {steps} steps ({steps * config.model.batch_size / TRAIN_CASES:.0f} "
          f"epochs of {TRAIN_CASES} images), {len(runs)} runs")
    total = 0.0
    for method in config.grid.methods:
        operations, seconds = step_operations(config, method)
        count = sum(1 for _, spec in runs if spec.method == method)
        run_total = operations * steps + evaluation
        total += count * run_total
        print(f"  {method:8s} {operations / 1e9:9.1f} GFLOP per step ({seconds:.2f} s on this CPU), "
              f"{run_total / 1e15:7.2f} PFLOP per run, {count} runs")
    floor = len(runs) * steps * args.step_latency_ms / 1000
    print(f"grid: {total / 1e15:.1f} PFLOP; at least {floor / 3600:.1f} h at {args.step_latency_ms:g} ms per step")
    for rate in args.tflops:
        seconds = max(total / (rate * 1e12), floor)
        print(f"  at {rate:g} TFLOP/s sustained: {seconds / 3600:.1f} h ({seconds / len(runs) / 60:.0f} min per run "
              f"on average; one GPU, runs one after another)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
