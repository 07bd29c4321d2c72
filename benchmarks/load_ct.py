"""Benchmark: load time and peak memory of load_ct_series on a 512 x 512 x 200 phantom CT.

Usage: .venv/bin/python benchmarks/load_ct.py [--slices 200] [--repeats 3] [--workdir DIR]

Prints the phantom render/write time, then per-run load wall time, the header-scan and
pixel-decode split, and the peak resident memory of a separate loading process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ctv_core import load_ct_series
from ctv_core.dicom.files import scan_folder
from ctv_core.phantom import ScanSettings, make_phantom


def _peak_rss_of_load(ct_dir: Path) -> tuple[float, float]:
    """Peak resident memory (MB) of a fresh process while it loads the series, and its RSS before."""
    code = (
        "import sys; sys.path.insert(0, %r); from memory import reset_peak_rss, status_mb; import ctv_core; "
        "base = reset_peak_rss(); ctv_core.load_ct_series(%r); print(status_mb('VmHWM'), base)"
    ) % (str(Path(__file__).parent), str(ct_dir))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        start = time.perf_counter()
        phantom = make_phantom(Path(tmp) / "ph", seed=0,
                               settings=ScanSettings(matrix=512, slices=args.slices, slice_thickness_mm=2.5))
        print(f"phantom 512 x 512 x {args.slices} rendered and written in {time.perf_counter() - start:.1f} s")
        size_mb = sum(p.stat().st_size for p in phantom.ct_dir.iterdir()) / 2**20
        print(f"series on disk: {size_mb:.0f} MB in {len(list(phantom.ct_dir.iterdir()))} files")

        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ct = load_ct_series(phantom.ct_dir)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        scan_folder(phantom.ct_dir)
        scan = time.perf_counter() - start
        print(f"load_ct_series: median {statistics.median(times):.2f} s over {args.repeats} runs "
              f"(min {min(times):.2f}, max {max(times):.2f}); header scan alone {scan:.2f} s")
        print(f"image {ct.image.GetSize()} {ct.image.GetPixelIDTypeAsString()}, "
              f"{ct.image.GetNumberOfPixels() * ct.image.GetSizeOfPixelComponent() / 2**20:.0f} MB in memory")
        peak, base = _peak_rss_of_load(phantom.ct_dir)
        print(f"peak RSS while loading: {peak:.0f} MB ({peak - base:.0f} MB above the process before loading)")


if __name__ == "__main__":
    main()
