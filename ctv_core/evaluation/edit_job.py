"""The edit figures in a process of their own, for callers that must not import torch (the Slicer module's process:
the surface distances go through MONAI, which needs torch).

``python -m ctv_core.evaluation.edit_job FOLDER`` reads ``FOLDER/ai.nii.gz`` and
``FOLDER/approved.nii.gz`` (masks on one CT grid, :func:`.edits.edit_figures`) and writes
``FOLDER/figures.json`` (the figures; an infinite HD95 as null), or ``FOLDER/error.txt`` (the
message for the user) and exits with status 2. Both are written whole or not at all.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..atomic_files import atomic_file
from ..errors import CTVError
from .edits import FIGURE_KEYS

AI, APPROVED, FIGURES, ERROR = "ai.nii.gz", "approved.nii.gz", "figures.json", "error.txt"


def run_edit_job(folder: Path) -> dict:
    """Measure the edit from ``folder``'s two masks and write ``figures.json``; returns the figures."""
    import numpy as np

    from ..structures.mask_files import read_mask_image
    from .edits import edit_figures

    figures = edit_figures(read_mask_image(folder / AI), read_mask_image(folder / APPROVED))
    plain = {k: (None if isinstance(figures[k], float) and not np.isfinite(figures[k]) else figures[k])
             for k in FIGURE_KEYS}
    with atomic_file(folder / FIGURES) as tmp:
        tmp.write_text(json.dumps(plain, allow_nan=False), encoding="utf-8")
    return plain


def main(argv: Sequence[str]) -> int:
    """Entry point: 0 with ``figures.json`` written, 2 with ``error.txt``."""
    folder = Path(argv[0])
    try:
        run_edit_job(folder)
    except CTVError as exc:
        with atomic_file(folder / ERROR) as tmp:
            tmp.write_text(str(exc), encoding="utf-8")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
