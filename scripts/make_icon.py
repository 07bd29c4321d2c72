"""Draw the module's 128 x 128 icon: an axial pelvic CT slice with the CTV outlined in the catalogue's
colour. Run once: .venv/bin/python scripts/make_icon.py (writes CTVDelineation/Resources/Icons/CTVDelineation.png)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Ellipse, PathPatch  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

from ctv_core.structures.catalogue import structure_for  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "CTVDelineation" / "Resources" / "Icons" / "CTVDelineation.png"


def main() -> None:
    ctv = tuple(c / 255 for c in structure_for("CTV").colour)
    fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 128)
    ax.set_ylim(128, 0)
    ax.axis("off")
    fig.patch.set_alpha(0)
    ax.add_patch(Ellipse((64, 66), 118, 92, color="#3a3a3a"))              # body
    ax.add_patch(Ellipse((64, 66), 112, 86, color="#6b6b6b"))              # soft tissue
    for x in (30, 98):                                                      # femoral heads and acetabula
        ax.add_patch(Ellipse((x, 74), 22, 22, color="#efefef"))
    ax.add_patch(Ellipse((64, 100), 30, 12, color="#e6e6e6"))               # sacrum
    ax.add_patch(Ellipse((64, 60), 24, 18, color="#8d8d8d"))                # bladder
    outline = MplPath([(42, 62), (52, 44), (76, 44), (86, 62), (80, 86), (64, 92), (48, 86), (42, 62)],
                      [MplPath.MOVETO] + [MplPath.LINETO] * 6 + [MplPath.CLOSEPOLY])
    ax.add_patch(PathPatch(outline, facecolor=(*ctv, 0.35), edgecolor=ctv, linewidth=2.4))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=100, transparent=True)


if __name__ == "__main__":
    main()
