"""Benchmark: what measuring an edit costs (AI versus approved, ``ctv_core.evaluation.edits``).

Usage::

    .venv/bin/python benchmarks/edit_figures.py [--size 512 512 200] [--spacing 0.98 0.98 2.5]

An ellipsoid CTV of about 730 cc on a 512 x 512 x 200 CT grid (0.98 x 0.98 x 2.5 mm), and the clinician's edit: two
voxels more in-plane on every slice and the two cranial slices erased. Prints the seconds of
``edit_figures`` in this process (torch and MONAI already imported: the review station's
approval) and of the edit job in a process of its own (``python -m ctv_core.evaluation.edit_job``:
what a Slicer export adds, imports included), with the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctv_core.evaluation.edits import edit_figures  # noqa: E402
from ctv_core.geometry import Grid  # noqa: E402
from ctv_core.structures.mask_files import write_mask  # noqa: E402


def masks(size, spacing) -> tuple[sitk.Image, sitk.Image]:
    grid = Grid(tuple(size), tuple(spacing), (-250.0, -250.0, -250.0))
    k, j, i = np.ogrid[:grid.shape[0], :grid.shape[1], :grid.shape[2]]
    centre = np.asarray(grid.shape) / 2
    radii = np.asarray([70.0, 55.0, 45.0]) / np.asarray(spacing[::-1])  # mm -> voxels, (k, j, i)
    ai = (((k - centre[0]) / radii[0]) ** 2 + ((j - centre[1]) / radii[1]) ** 2
          + ((i - centre[2]) / radii[2]) ** 2 <= 1).astype(np.uint8)
    edited = sitk.GetArrayFromImage(sitk.BinaryDilate(grid.image(ai), (2, 2, 0), sitk.sitkBox))
    top = np.flatnonzero(edited.any(axis=(1, 2)))[-2:]
    edited[top] = 0
    return grid.image(ai), grid.image(edited.astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 200], metavar=("I", "J", "K"))
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.98, 0.98, 2.5], metavar=("I", "J", "K"))
    args = parser.parse_args()
    ai, approved = masks(args.size, args.spacing)
    edit_figures(ai, approved)  # imports torch and MONAI once
    start = time.perf_counter()
    figures = edit_figures(ai, approved)
    in_process = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        write_mask(ai, Path(folder) / "ai.nii.gz")
        write_mask(approved, Path(folder) / "approved.nii.gz")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ctv_core.evaluation.edit_job", folder], check=True)
        job = time.perf_counter() - start
    print(f"grid {tuple(args.size)} voxels of {tuple(args.spacing)} mm; AI CTV {figures['ai_volume_cc']:.0f} cc")
    print(f"edit_figures in process (imports done): {in_process:.2f} s")
    print(f"edit job in its own process (a Slicer export's extra time, imports included): {job:.2f} s")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
