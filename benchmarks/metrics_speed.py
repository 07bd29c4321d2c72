"""Benchmark: time of every metric between two pelvic-CTV-sized masks on a 512 x 512 x 200 CT grid.

Usage: .venv/bin/python benchmarks/metrics_speed.py [--repeats 3] [--slice-spacing 3.0]

The reference is an ellipsoid of 120 x 100 x 150 mm (left-right, anterior-posterior,
superior-inferior; about 940 cc) on a 0.8 x 0.8 mm x slice-spacing grid, the prediction the
same ellipsoid shifted by 4 mm and grown by 3 mm anteriorly, so that every distance is
non-trivial. Prints the one-off import time of the libraries the metrics load on first use
(torch and MONAI), then the time of ``ctv_core.evaluation.evaluate.evaluate_case`` per run, and the
metrics.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import SimpleITK as sitk

from ctv_core.evaluation.evaluate import evaluate_case


def _ellipsoid(shape, spacing, centre_mm, semi_axes_mm) -> np.ndarray:
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    x = (i * spacing[0] - centre_mm[0]) / semi_axes_mm[0]
    y = (j * spacing[1] - centre_mm[1]) / semi_axes_mm[1]
    z = (k * spacing[2] - centre_mm[2]) / semi_axes_mm[2]
    return (x * x + y * y + z * z <= 1.0).astype(np.uint8)


def _image(array: np.ndarray, spacing) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-204.8, -204.8, -300.0))
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slice-spacing", type=float, default=3.0)
    args = parser.parse_args()

    shape = (200, 512, 512)  # (k, j, i)
    spacing = (0.8, 0.8, args.slice_spacing)
    centre = (204.8, 204.8, 100 * args.slice_spacing)
    reference = _ellipsoid(shape, spacing, centre, (60.0, 50.0, 75.0))
    grown = _ellipsoid(shape, spacing, (centre[0] + 4.0, centre[1] - 3.0, centre[2]), (60.0, 53.0, 75.0))
    shifted = _ellipsoid(shape, spacing, (centre[0] + 4.0, centre[1], centre[2]), (60.0, 50.0, 75.0))
    prediction = np.maximum(shifted, grown)
    ref_image, pred_image = _image(reference, spacing), _image(prediction, spacing)
    print(f"grid 512 x 512 x 200, spacing {spacing} mm; reference {reference.sum() * np.prod(spacing) / 1000:.0f} cc, "
          f"prediction {prediction.sum() * np.prod(spacing) / 1000:.0f} cc")

    start = time.perf_counter()
    import monai.metrics.utils  # noqa: F401  (loaded by the first evaluate_case otherwise)

    print(f"importing torch + MONAI (once per process): {time.perf_counter() - start:.2f} s")
    times = []
    for run in range(args.repeats):
        start = time.perf_counter()
        metrics = evaluate_case(pred_image, ref_image, tolerance_mm=3.0)
        times.append(time.perf_counter() - start)
        print(f"run {run + 1}: evaluate_case {times[-1]:.3f} s")
    print(f"evaluate_case on 512 x 512 x 200: median {statistics.median(times):.3f} s, max {max(times):.3f} s "
          f"over {len(times)} run(s)")
    for key, value in metrics.items():
        print(f"  {key:28s} {value:.4f}")


if __name__ == "__main__":
    main()
