"""Benchmark: ``ctv predict`` end to end on a 512 x 512 x 200 phantom CT with the default model.

Usage: .venv/bin/python benchmarks/predict_e2e.py [--slices 200] [--repeats 3] [--model PKG | --untrained]
[--engines openvino,torch] [--profile]

The model is the one ``ctv predict`` uses by default, the bundled package, unless --model names
another; --untrained makes a package with the method's default architecture and settings and
untrained weights on the spot (the work done is the same as with trained weights). Runs ``ctv predict`` in
a fresh process per repeat and engine (``--engine``; default both, OpenVINO first) and prints per
engine: wall time, peak RSS of that process, per-stage seconds
from report.json, the network's achieved GFLOP/s next to this machine's fp32 matmul GFLOP/s
measured in the same run, and what the network would take on a GPU from its FLOPs.
--profile adds the top functions by cumulative time (cProfile) of one in-process run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

GPU_EFFECTIVE_TFLOPS = 25.0  # assumed: A100-class card, bf16 convolutions at ~8% of its 312 TFLOP/s peak


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Median fp32 matmul GFLOP/s on this machine (2 threads, as the predictor uses)."""
    torch.set_num_threads(2)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        a @ b
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def default_package(path: Path):
    from ctv_core.model.settings import ModelSettings
    from ctv_core.model.package import save_model_package
    from ctv_core.model.network_config import NetworkConfig
    from ctv_core.model.unet3d import UNet3D

    torch.manual_seed(0)
    config = NetworkConfig()
    return save_model_package(path, UNet3D(config), "unet3d", config, ModelSettings(), name="default-untrained",
                              version="0", description="default architecture, untrained weights (benchmark)")


def network_flops(package, ct_dir: Path) -> tuple[float, tuple[int, ...], int]:
    """FLOPs of the network over the windows the predictor will run, the input shape, the window count."""
    from ctv_core import load_ct_series
    from ctv_core.inference.preprocessing import prepare_input
    from ctv_core.inference.sliding_window import window_starts
    from ctv_core.model.unet3d import count_flops

    ct = load_ct_series(ct_dir)
    model_input = prepare_input(ct.image, package.settings.preprocessing, package.divisor)
    inference = package.settings.inference
    window = tuple(min(p, s) for p, s in zip(inference.patch_zyx, model_input.array.shape))
    starts = [window_starts(s, w, inference.overlap) for s, w in zip(model_input.array.shape, window)]
    count = len(list(itertools.product(*starts))) * (2 if inference.test_time_flips else 1)
    return count_flops(package.network_config, window) * count, model_input.array.shape, count


def run_once(ct_dir: Path, out: Path, model: Path, engine: str = "auto") -> dict:
    """One ``ctv predict`` in a fresh process under /usr/bin/time-like accounting; returns report + figures."""
    code = (
        "import sys, time; sys.path.insert(0, %r); from memory import reset_peak_rss, status_mb; "
        "from ctv_core.cli.main import main; start = time.perf_counter(); "
        "rc = main(['predict', %r, %r, '--model', %r, '--engine', %r, '-q']); "
        "print('BENCH', time.perf_counter() - start, status_mb('VmHWM'), rc)"
    ) % (str(Path(__file__).parent), str(ct_dir), str(out), str(model), engine)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ctv predict failed:\n{done.stderr}")
    process_wall = time.perf_counter() - start
    line = next(line for line in done.stdout.splitlines() if line.startswith("BENCH"))
    _, inside, peak, rc = line.split()
    report = json.loads((out / "report.json").read_text())
    return {"wall": float(inside), "process_wall": process_wall, "peak_mb": float(peak), "rc": int(rc),
            "report": report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--model", type=Path, default=None, help="a model package (default: the bundled one)")
    models.add_argument("--untrained", action="store_true",
                        help="the method's default architecture with untrained weights")
    parser.add_argument("--engines", default="openvino,torch", help="comma-separated engines to run in turn")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from ctv_core.model.package import load_model_package
    from ctv_core.phantom import ScanSettings, make_phantom

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        phantom = make_phantom(tmp / "ph", seed=0,
                               settings=ScanSettings(matrix=512, slices=args.slices, slice_thickness_mm=2.0))
        package = default_package(tmp / "model") if args.untrained else load_model_package(args.model)
        flops, shape, windows = network_flops(package, phantom.ct_dir)
        g = phantom.grid
        print(f"CT {g.size[0]} x {g.size[1]} x {g.size[2]} ({g.spacing[0]:.3f} x {g.spacing[1]:.3f} x "
              f"{g.spacing[2]:.2f} mm); model {package.model_id}: input {shape} (z, y, x) at "
              f"{package.settings.preprocessing.spacing_mm} mm, {windows} window(s), {flops / 1e9:.1f} GFLOP")
        rate = matmul_gflops()
        print(f"fp32 matmul on this machine: {rate:.0f} GFLOP/s (2 threads)")
        for engine in args.engines.split(","):
            runs = [run_once(phantom.ct_dir, tmp / f"out-{engine}{n}", package.path, engine)
                    for n in range(args.repeats)]
            stages = {k: statistics.median(r["report"]["seconds"][k] for r in runs)
                      for k in runs[0]["report"]["seconds"]}
            wall = statistics.median(r["wall"] for r in runs)
            print(f"[{runs[0]['report']['engine']}] ctv predict: median "
                  f"{statistics.median(r['process_wall'] for r in runs):.2f} s as a process (target <= 3 s), "
                  f"{wall:.2f} s inside it; peak RSS {max(r['peak_mb'] for r in runs):.0f} MB (target <= 600 MB)")
            print("  stages (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
            network_rate = flops / stages["network"] / 1e9
            print(f"  network (target <= 1 s): {stages['network']:.2f} s, {network_rate:.0f} GFLOP/s, "
                  f"{network_rate / rate:.2f} of the matmul rate")
        gpu = flops / (GPU_EFFECTIVE_TFLOPS * 1e12)
        print(f"on a GPU at an assumed {GPU_EFFECTIVE_TFLOPS:.0f} TFLOP/s effective: network ~{gpu * 1000:.0f} ms")
        if args.profile:
            from ctv_core.cli.main import main as cli_main

            profiler = cProfile.Profile()
            profiler.enable()
            cli_main(["predict", str(phantom.ct_dir), str(tmp / "profiled"), "--model", str(package.path), "-q"])
            profiler.disable()
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(25)
            print(stream.getvalue())


if __name__ == "__main__":
    main()
