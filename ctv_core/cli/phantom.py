"""``ctv phantom``: write a synthetic pelvic CT with known truth."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .progress import StageBars


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``ctv phantom``."""
    p = sub.add_parser("phantom", parents=[common], help="write a synthetic pelvic CT with known truth")
    p.add_argument("out_dir", type=Path, help="new or empty folder")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same phantom")
    p.add_argument("--matrix", type=int, choices=(256, 512), default=512, help="rows and columns per slice")
    p.add_argument("--slices", type=int, default=None, help="number of slices (default: cover the pelvis)")
    p.add_argument("--position", choices=("HFS", "FFS", "HFP", "FFP"), default="HFS", help="patient position")
    p.add_argument("--slice-thickness", type=float, default=None, metavar="MM", help="default: drawn, 1.25-5")
    p.add_argument("--pixel-spacing", type=float, nargs=2, default=None, metavar=("ROW_MM", "COL_MM"),
                   help="DICOM PixelSpacing (row, column); default: field of view / matrix")
    p.add_argument("--oblique", type=float, default=0.0, metavar="DEG",
                   help="tilt the slice plane about the left-right axis")
    p.add_argument("--metal", action=argparse.BooleanOptionalAction, default=None, help="hip prosthesis streaks")
    p.add_argument("--contrast", action=argparse.BooleanOptionalAction, default=None,
                   help="contrast-enhanced vessels")
    p.add_argument("--appearance", default="realistic", metavar="NAME",
                   help="realistic (default), or an appearance shift no realistic phantom has: hu_offset_+40, "
                        "hu_offset_-40, sharp_kernel, smooth_kernel, noise_x3, excretory, thick_5mm, fov_cut")
    p.set_defaults(func=run_phantom)


def run_phantom(args: argparse.Namespace) -> int:
    """Make the phantom and print where it went."""
    from ..phantom import ScanSettings, make_phantom

    settings = ScanSettings(
        matrix=args.matrix,
        slices=args.slices,
        position=args.position,
        slice_thickness_mm=args.slice_thickness,
        pixel_spacing_mm=tuple(args.pixel_spacing) if args.pixel_spacing else None,
        oblique_deg=args.oblique,
        metal=args.metal,
        contrast=args.contrast,
        appearance=args.appearance,
    )
    start = time.perf_counter()
    with StageBars(args.quiet, {"writing CT slices": "slice"}) as bars:
        phantom = make_phantom(args.out_dir, seed=args.seed, settings=settings,
                               progress=lambda done, total: bars("writing CT slices", done, total))
    g = phantom.grid
    print(f"Phantom (seed {args.seed}) written to {Path(args.out_dir).resolve()} in "
          f"{time.perf_counter() - start:.1f} s")
    print(f"  CT: {phantom.ct_dir} ({g.size[0]} x {g.size[1]} x {g.size[2]} voxels, spacing "
          f"{g.spacing[0]:.3f} x {g.spacing[1]:.3f} x {g.spacing[2]:.2f} mm, {args.position})")
    print(f"  truth masks: {', '.join(sorted(phantom.masks))} in {Path(args.out_dir) / 'masks'}")
    return 0
