"""Render the README's picture: what a Slicer user sees after Apply (the demo CT with the CTV in axial,
coronal and 3D views), headless with slicer-core, the CTV made by the bundled model through the
module's real prediction process.

    .venv/bin/python scripts/render_readme_picture.py [--ct CT_DIR] [--out docs/images/slicer_ctv.png]

Without ``--ct`` the demo CT (the phantom of seed 0, 512 x 512) is made in a temporary folder.
Needs the slicer-core wheel (``pip install -e ".[slicer]"``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Testing"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from slicer_support import load_dicom_volume, logic_package, make_scene  # noqa: E402
from slicer_views import render_3d, render_slice  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, help="a CT DICOM folder (default: the demo phantom, made now)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "slicer_ctv.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        ct_dir = args.ct
        if ct_dir is None:
            from ctv_core.phantom import make_phantom

            ct_dir = make_phantom(Path(folder) / "demo", seed=0).ct_dir
        lib = logic_package()
        scene = make_scene()
        volume = load_dicom_volume(scene, ct_dir, "Planning CT")
        volume.GetDisplayNode().SetAutoWindowLevel(False)
        volume.GetDisplayNode().SetWindowLevel(400, 40)
        logic = lib.CTVDelineationLogic(scene, temporaryDirectory=folder)
        started = time.perf_counter()
        node = logic.run(volume)
        result = logic.lastResult
        print(f"Apply: CTV {result.volumeCC:.0f} cc in {time.perf_counter() - started:.1f} s on {result.device}")
        node.CreateClosedSurfaceRepresentation()

        from ctv_core.scene.conversion import segmentMask
        from ctv_core.scene.patient_frame import gridOfVolume, ijkToRasOfGrid

        mask = segmentMask(node, result.segmentId, gridOfVolume(volume)).array
        k, j, i = np.argwhere(mask).mean(axis=0)
        ijk_to_ras = ijkToRasOfGrid(gridOfVolume(volume))
        centre = (ijk_to_ras @ np.array([i, j, k, 1.0]))[:3]
        panels = [("Axial", render_slice(scene, volume, "Axial", offset=centre[2], size=(512, 512))),
                  ("Coronal", render_slice(scene, volume, "Coronal", offset=centre[1], size=(512, 512))),
                  ("3D", render_3d(scene, size=(512, 512), azimuth=30, elevation=15))]

    figure, axes = plt.subplots(1, 3, figsize=(12.3, 4.6), dpi=100)
    for axis, (title, rgb) in zip(axes, panels):
        axis.imshow(rgb)
        axis.set_title(title, fontsize=12)
        axis.axis("off")
    figure.suptitle(f"CTV Delineation in 3D Slicer after Apply: CTV {result.volumeCC:.0f} cc by "
                    f"{result.model['model_id']} (demo model on a synthetic phantom; not for clinical use)",
                    fontsize=11)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out)
    print(f"Picture: {args.out}")


if __name__ == "__main__":
    main()
