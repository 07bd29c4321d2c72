"""Is the predicted CTV shaped like a cervical cancer CTV? Checks that need no truth.

A model meeting a CT unlike its training data rarely fails by drawing nothing: it draws pieces
in the wrong places (on a real CT the first demo model drew five pieces of 187 cc around the
iliac vessels and in front of the lumbar spine). What every definitive cervix CTV has, whatever
the patient (consensus contouring guidelines): it is one connected volume (uterus, cervix,
parametria, upper vagina and the pelvic nodal regions joined); it lies within the bony pelvis,
the nodal regions along the pelvic side walls and in front of the sacrum; and it covers both
sides (the nodal regions are bilateral). :func:`anatomy_check` measures each on the CT, from
the CT's own bones, and says what is off; the warnings join the prediction's other warnings
(:func:`volume_warnings` beside it), so ``report.json``, ``qa.png`` and the Slicer module show them.

Distances are in mm and volumes in cc, in DICOM patient coordinates (LPS: +x the patient's left).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import SimpleITK as sitk

from ..geometry import Grid, nonzero_box
from .morphology import component_sizes, distance_to, label_components

#: A CTV this much smaller than the smallest, or larger than the largest, the model was trained
#: on is reported for review.
VOLUME_MARGIN = 1.25
#: Parts smaller than this (cc) are not counted as parts (post-processing removes most anyway).
MIN_PART_CC = 2.0
#: The largest part must hold at least this fraction of the CTV.
LARGEST_PART_FRACTION = 0.75
#: CT number (HU) above which a voxel of the check grid counts as bone.
BONE_HU = 200.0
#: Bone volume (cc) around the CTV below which no bony pelvis is taken to be there.
MIN_BONE_CC = 30.0
#: A CTV voxel further than this (mm) from bone is outside where a cervix CTV reaches ...
FAR_FROM_BONE_MM = 60.0
#: ... and more than this fraction of the CTV there is reported.
FAR_FRACTION = 0.10
#: Voxels more than this (mm) left or right of the bony midline count for that side.
SIDE_MM = 25.0
#: The smaller side must hold at least this fraction of the larger one.
SIDE_RATIO = 0.2
#: Spacing (mm) of the LPS-aligned grid the bone and side checks run on.
CHECK_SPACING_MM = 4.0


def volume_warnings(volume_cc: float, training_volumes_cc: tuple[float, float] | None) -> list[str]:
    """Warnings for an empty CTV, or one outside the training data's volume range (cc) by more
    than ``VOLUME_MARGIN``: the signs that a model meets a CT unlike those it learned from."""
    if volume_cc <= 0:
        return ["The model drew no CTV. Check that the CT is a pelvic CT covering the whole pelvis "
                "(from above the aortic bifurcation to below the ischial tuberosities) and that the model suits it."]
    if training_volumes_cc is None:
        return []
    low, high = training_volumes_cc
    if volume_cc < low / VOLUME_MARGIN or volume_cc > high * VOLUME_MARGIN:
        side = "smaller" if volume_cc < low else "larger"
        return [f"The CTV ({volume_cc:.0f} cc) is much {side} than those the model was trained on "
                f"({low:.0f}-{high:.0f} cc): check that the CT covers the pelvis as usual and review the contour "
                "with particular care."]
    return []


@dataclass(frozen=True)
class AnatomyCheck:
    """What :func:`anatomy_check` measured, and its warnings.

    Attributes
    ----------
    parts
        Connected parts (26-neighbour, on the CT grid) of at least ``MIN_PART_CC``.
    largest_part_fraction
        Share of the CTV volume in its largest part.
    bone_cc
        Bone (above ``BONE_HU``) from 60 mm below to 60 mm above the CTV, cc.
    far_from_bone_fraction
        Share of the CTV further than ``FAR_FROM_BONE_MM`` from that bone.
    left_cc, right_cc
        CTV volume more than ``SIDE_MM`` to the patient's left / right of the bony midline, cc.
    warnings
        One sentence per finding, for the reviewer.
    """

    parts: int = 0
    largest_part_fraction: float = 1.0
    bone_cc: float = 0.0
    far_from_bone_fraction: float = 0.0
    left_cc: float = 0.0
    right_cc: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Rounded figures for ``report.json`` (warnings are listed with the others)."""
        out = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items() if k != "warnings"}
        return out


def anatomy_check(ct: sitk.Image, mask: np.ndarray) -> AnatomyCheck:
    """Check a predicted CTV (uint8 ``[k, j, i]`` on ``ct``'s grid; ``ct`` in HU) against the anatomy of every CTV.

    Returns an empty check (no warnings) for an empty mask: :func:`volume_warnings` reports that.
    """
    if not mask.any():
        return AnatomyCheck()
    grid = Grid.of_image(ct)
    voxel_cc = float(np.prod(grid.spacing)) / 1000.0
    parts, largest = _parts(mask, voxel_cc)
    points = grid.nonzero_points(mask)  # (x, y, z) mm of every CTV voxel
    bone, local = _bone_around(ct, points)
    bone_cc = float(bone.sum()) * CHECK_SPACING_MM ** 3 / 1000.0
    warnings = []
    if parts > 1 and largest < LARGEST_PART_FRACTION:
        warnings.append(f"The CTV is in {parts} separate parts and the largest holds only {largest:.0%} of it; a "
                        "cervix CTV is one connected volume, so parts may be drawn in the wrong place or be missing. "
                        "Review every part.")
    if bone_cc < MIN_BONE_CC:
        warnings.append("No pelvic bones were found around the CTV: check that the CT is a pelvic CT in Hounsfield "
                        "units and review the contour.")
        return AnatomyCheck(parts, largest, bone_cc, 1.0, 0.0, 0.0, warnings)
    distance = distance_to(bone, CHECK_SPACING_MM)
    index = np.clip(np.rint(local.lps_to_index(points)).astype(int), 0, np.asarray(local.size) - 1)
    far = float(np.mean(distance[index[:, 2], index[:, 1], index[:, 0]] > FAR_FROM_BONE_MM))
    if far > FAR_FRACTION:
        warnings.append(f"{far:.0%} of the CTV lies more than {FAR_FROM_BONE_MM:.0f} mm from the pelvic bones, "
                        "further than a cervix CTV reaches: check that the CT is a pelvic CT and review the contour.")
    left, right = _sides(bone, local, points, voxel_cc)
    big, small = max(left, right), min(left, right)
    if big > 20.0 and small < SIDE_RATIO * big:
        side, other = ("left", "right") if left > right else ("right", "left")
        warnings.append(f"The CTV covers mainly the patient's {side} side ({big:.0f} cc lateral on the {side}, "
                        f"{small:.0f} cc on the {other}); the pelvic nodal regions of both sides belong to it. Review "
                        f"the {other} side.")
    return AnatomyCheck(parts, largest, bone_cc, far, left, right, warnings)


def _parts(mask: np.ndarray, voxel_cc: float) -> tuple[int, float]:
    """Number of 26-connected parts of at least ``MIN_PART_CC`` and the largest part's share of the volume."""
    box = nonzero_box(mask)
    labels, count = label_components(mask[box], fully_connected=True)
    sizes = component_sizes(labels, count) * voxel_cc
    return int(np.sum(sizes >= MIN_PART_CC)), float(sizes.max() / sizes.sum())


def _bone_around(ct: sitk.Image, points: np.ndarray) -> tuple[np.ndarray, Grid]:
    """Bone ``[z, y, x]`` on an LPS-aligned ``CHECK_SPACING_MM`` grid, and the grid: the CT's whole width and depth
    (so the bony midline does not depend on where the CTV is), from 60 mm below to 60 mm above the CTV."""
    low, high = Grid.of_image(ct).lps_bounds()
    low[2], high[2] = points[:, 2].min() - 60.0, points[:, 2].max() + 60.0
    size = np.floor((high - low) / CHECK_SPACING_MM).astype(int) + 1
    local = Grid(size=tuple(int(s) for s in size), spacing=(CHECK_SPACING_MM,) * 3,
                 origin=tuple(float(v) for v in low))
    reference = local.image(np.zeros(local.shape, dtype=np.uint8))
    hu = sitk.GetArrayFromImage(sitk.Resample(ct, reference, sitk.Transform(), sitk.sitkLinear, -1024.0,
                                              sitk.sitkFloat32))
    return hu >= BONE_HU, local


def _sides(bone: np.ndarray, local: Grid, points: np.ndarray, voxel_cc: float) -> tuple[float, float]:
    """CTV volume (cc) lateral to the bony midline on the patient's left (+x) and right, over the CTV's heights."""
    z_of = local.origin[2] + np.arange(local.size[2]) * CHECK_SPACING_MM
    x_of = local.origin[0] + np.arange(local.size[0]) * CHECK_SPACING_MM
    rows = (z_of >= points[:, 2].min()) & (z_of <= points[:, 2].max())
    counts = bone[rows].sum(axis=(0, 1))
    midline = float(np.sum(counts * x_of) / counts.sum()) if counts.sum() else float(np.median(points[:, 0]))
    offset = points[:, 0] - midline
    return float(np.sum(offset > SIDE_MM)) * voxel_cc, float(np.sum(offset < -SIDE_MM)) * voxel_cc
