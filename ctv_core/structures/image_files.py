"""Writing an image on a CT's grid as a research image file (NIfTI, NRRD, MetaImage), atomically.

SimpleITK writes the image's own geometry (origin, spacing, direction in LPS) in each format's
convention (NIfTI's RAS qform/sform included), so an image made on the CT's grid
(:meth:`ctv_core.geometry.Grid.image`) reads back onto the CT voxel for voxel.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from ..atomic_files import atomic_file

#: The file endings written here; SimpleITK picks the format by the ending.
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def image_suffix(path: str | Path) -> str:
    """The format ending of ``path`` (``.nii.gz`` counts as one), lower case."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def write_image(image: sitk.Image, path: str | Path, compress: bool = True) -> Path:
    """Write ``image`` with its pixel type and geometry to ``path``; a failure leaves no file and an older one intact."""
    path = Path(path)
    with atomic_file(path) as tmp:
        target = tmp.with_name(tmp.name + image_suffix(path))  # SimpleITK picks the format by the ending
        try:
            sitk.WriteImage(image, str(target), useCompression=compress)
            target.replace(tmp)
        finally:
            target.unlink(missing_ok=True)
    return path
