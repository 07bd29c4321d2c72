"""Benchmark: ``ctv predict`` stage by stage, wall time and resident memory, on a 512 x 512 x 200 CT.

Usage: .venv/bin/python benchmarks/predict_profile.py [--slices 200] [--engines openvino,torch]
[--formats rtstruct] [--model PKG] [--interval 0.005] [--workdir DIR]

Runs ``ctv predict`` (the job ``run_predict_job``, as the CLI runs it) in a fresh process per engine
on the phantom CT ``predict_e2e.py`` makes, and samples that process's RSS from this one (reading
``/proc/PID/status`` every ``--interval`` seconds, so a sample is taken also while the child holds
its GIL inside NumPy, SimpleITK or OpenVINO; tracemalloc would miss every allocation not made by
Python). The child reports when each stage starts (CLOCK_MONOTONIC, shared by both processes);
the table gives per stage its seconds, the RSS when it starts, the highest RSS sampled during it
and the growth over its start. The last line is the kernel's exact peak (VmHWM) of the child and
its wall time as a process, Python's start-up and imports included.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("imports", "load", "model_load", "preprocessing", "network", "inverse", "postprocessing", "anatomy_check",
          "writing")
PROGRESS_STAGE = {"preprocessing": "preprocessing", "network": "network", "resampling to the CT": "inverse",
                  "post-processing": "postprocessing", "checking the anatomy": "anatomy_check", "done": "writing"}

CHILD = r"""
import json, sys, time
marks = {"imports": time.perf_counter()}
from ctv_core.inference.predict_job import run_predict_job
marks["load"] = time.perf_counter()
names = json.loads(sys.argv[4])
def progress(stage, fraction):
    name = names.get(stage)
    if name and name not in marks:
        marks[name] = time.perf_counter()
result = run_predict_job(sys.argv[1], sys.argv[2], model=sys.argv[3] or None, engine=sys.argv[5],
                         formats=sys.argv[6].split(","), progress=progress)
marks["end"] = time.perf_counter()
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print("PROFILE " + json.dumps({"marks": marks, "seconds": result.report["seconds"], "peak_mb": peak,
                               "engine": result.report["engine"]}))
"""


def rss_mb(pid: int) -> float | None:
    """VmRSS of process ``pid`` in MB, None once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def profile_once(ct_dir: Path, out: Path, model: Path | None, engine: str, formats: str,
                 interval: float) -> dict:
    """Run one ``ctv predict`` in a child process while sampling its RSS; the child's marks and the samples."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ct_dir), str(out), str(model or ""),
                              json.dumps(PROGRESS_STAGE), engine, formats],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, float]] = []
    while child.poll() is None:
        value = rss_mb(child.pid)
        if value is not None:
            samples.append((time.perf_counter(), value))
        time.sleep(interval)
    stdout, stderr = child.communicate()
    process_wall = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"ctv predict failed ({engine}):\n{stderr}")
    result = json.loads(next(line for line in stdout.splitlines() if line.startswith("PROFILE "))[8:])
    marks = result["marks"]
    # the model is loaded just before preprocessing starts; its seconds come from the report
    marks["model_load"] = marks["preprocessing"] - result["seconds"]["model_load"]
    result.update(samples=samples, started=started, process_wall=process_wall)
    return result


def stage_rows(result: dict) -> list[tuple[str, float, float, float]]:
    """Per stage: (name, seconds, RSS at its start MB, highest RSS sampled during it MB)."""
    marks, samples = result["marks"], result["samples"]
    bounds = [(name, marks[name]) for name in STAGES] + [("end", marks["end"])]
    bounds[0] = ("imports", result["started"])  # the interpreter's own start-up belongs to the imports
    rows = []
    for (name, start), (_, stop) in zip(bounds, bounds[1:]):
        during = [mb for t, mb in samples if start <= t <= stop]
        before = [mb for t, mb in samples if t <= start]
        at_start = before[-1] if before else (during[0] if during else 0.0)
        rows.append((name, stop - start, at_start, max(during, default=at_start)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--engines", default="openvino,torch", help="comma-separated engines to run in turn")
    parser.add_argument("--formats", default="rtstruct", help="--formats of ctv predict, comma-separated")
    parser.add_argument("--model", type=Path, default=None, help="a model package (default: the bundled one)")
    parser.add_argument("--interval", type=float, default=0.005, help="RSS sampling interval, seconds")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from ctv_core.phantom import ScanSettings, make_phantom

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        phantom = make_phantom(tmp / "ph", seed=0,
                               settings=ScanSettings(matrix=512, slices=args.slices, slice_thickness_mm=2.0))
        ct_bytes = 512 * 512 * args.slices * 2
        print(f"CT 512 x 512 x {args.slices} ({ct_bytes / 2**20:.0f} MB as int16, {ct_bytes * 2 / 2**20:.0f} MB as "
              f"float32); formats {args.formats}")
        for engine in args.engines.split(","):
            result = profile_once(phantom.ct_dir, tmp / f"out-{engine}", args.model, engine, args.formats,
                                  args.interval)
            print(f"\n[{result['engine']}]  {'stage':<15}{'seconds':>9}{'RSS at start MB':>17}{'peak MB':>9}"
                  f"{'growth MB':>11}")
            for name, seconds, at_start, peak in stage_rows(result):
                print(f"{'':<{len(result['engine']) + 4}}{name:<15}{seconds:>9.2f}{at_start:>17.0f}{peak:>9.0f}"
                      f"{peak - at_start:>11.0f}")
            print(f"  process: {result['process_wall']:.2f} s wall (target <= 3 s), peak RSS (VmHWM) "
                  f"{result['peak_mb']:.0f} MB (target <= 600 MB)")


if __name__ == "__main__":
    main()
