"""Masks as research image files (NIfTI, NRRD, MetaImage) through SimpleITK.

SimpleITK converts between its LPS geometry and each format's own convention (NIfTI's RAS
qform/sform included), so a mask written here and read back lands on the same voxels. A mask
read for a CT must lie on that CT's grid; it is never resampled silently.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from ..errors import StructureSetError
from ..geometry import Grid
from .image_files import IMAGE_SUFFIXES, write_image
from .writer_checks import check_binary, check_mask_on_grid

MASK_SUFFIXES = IMAGE_SUFFIXES


def is_mask_file(path: str | Path) -> bool:
    """True when the file name ends with a suffix this module reads and writes."""
    return str(path).lower().endswith(MASK_SUFFIXES)


def write_mask(mask: sitk.Image, path: str | Path) -> Path:
    """Write a mask (non-zero = inside) as uint8 0/1, compressed, atomically."""
    path = Path(path)
    if not is_mask_file(path):
        raise StructureSetError(f"'{path.name}': mask files end with one of {', '.join(MASK_SUFFIXES)}.")
    write_image(sitk.Cast(mask != 0, sitk.sitkUInt8), path)
    return path


def read_mask_image(path: str | Path) -> sitk.Image:
    """A mask file as uint8 0/1 on its own grid; 3D, one component, binary (0 and one positive value)."""
    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise StructureSetError(f"'{path}' cannot be read as an image ({exc}).") from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise StructureSetError(f"'{path}' is a {image.GetDimension()}D image with "
                                f"{image.GetNumberOfComponentsPerPixel()} component(s); a mask is 3D with one.")
    check_binary(path.name, image)
    return sitk.Cast(image != 0, sitk.sitkUInt8)


def read_mask(path: str | Path, grid: Grid, name: str | None = None) -> sitk.Image:
    """Read a mask file as uint8 0/1 and check it lies on ``grid`` (raises GridMismatchError)."""
    image = read_mask_image(path)
    check_mask_on_grid(name or Path(path).name, image, grid)
    return grid.image(sitk.GetArrayFromImage(image))


def mask_name(path: str | Path) -> str:
    """The structure name a mask file stands for: its name without the image suffix."""
    name = Path(path).name
    for suffix in MASK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
