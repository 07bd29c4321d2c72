"""Structures from one format to another on a given CT: RTSTRUCT, DICOM SEG, NIfTI, NRRD.

``read_structures`` and ``write_structures`` pick the reader and writer from the file itself
(DICOM Modality RTSTRUCT or SEG; image-file endings), so the command line, the dataset builder
and scripts share one dispatch. Converted structures keep their names; their origin is
unknown to us, so DICOM outputs do not claim an algorithm (RTSTRUCT ROIGenerationAlgorithm
empty, SEG segments MANUAL).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pydicom
import SimpleITK as sitk

from ..dicom.ct_series import CTSeries
from ..dicom.series import load_ct_series
from ..errors import StructureSetError
from .mask_files import is_mask_file, mask_name, read_mask, write_mask
from .rtstruct import write_rtstruct
from .rtstruct_reader import read_rtstruct_with_notes
from .seg import read_seg, write_seg

FORMATS = ("rtstruct", "seg", "nifti", "nrrd")
_SUFFIX_FORMATS = {".dcm": "rtstruct", ".nii": "nifti", ".nii.gz": "nifti", ".nrrd": "nrrd"}


def read_structures(path: str | Path, ct: CTSeries, roi: str | Sequence[str] | None = None) -> dict[str, sitk.Image]:
    """Masks on ``ct``'s grid from an RTSTRUCT, a SEG or a mask image file.

    For an image file the structure is named ``roi`` when that is a single name, else after the
    file. For DICOM, ``roi`` selects ROIs/segments (None: all).
    """
    path = Path(path)
    if not path.is_file():
        raise StructureSetError(f"'{path}' is not a file. Give an RTSTRUCT, DICOM SEG, NIfTI or NRRD file.")
    if is_mask_file(path):
        name = roi if isinstance(roi, str) else mask_name(path)
        return {name: read_mask(path, ct.grid, name)}
    try:
        modality = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"]).get("Modality", "")
    except Exception as exc:  # noqa: BLE001 - not DICOM and not an image file we know
        raise StructureSetError(
            f"'{path}' is neither DICOM nor a mask image ({', '.join(_SUFFIX_FORMATS)}): {exc}"
        ) from exc
    if modality == "RTSTRUCT":
        masks, notes = read_rtstruct_with_notes(path, ct, roi=roi)
        outside = [name for name, note in notes.items() if note.all_outside]
        if outside:
            z = ct.grid.index_to_lps([[0, 0, 0], [0, 0, ct.grid.size[2] - 1]])[:, 2]
            raise StructureSetError(
                f"Every contour of {', '.join(repr(n) for n in outside)} in '{path.name}' lies beyond this CT's slices "
                f"(z {z.min():.1f} to {z.max():.1f} mm): the structure set was drawn on another, longer scan of this "
                "patient (same frame of reference), or the CT is incomplete. Give the CT it was drawn on.")
        return masks
    if modality == "SEG":
        return read_seg(path, ct, roi=roi)
    raise StructureSetError(f"'{path}' is DICOM {modality or 'without modality'}, not an RTSTRUCT or SEG.")


def output_format(path: str | Path, to: str | None = None) -> str:
    """The format to write: ``to`` if given, else from the file ending (.dcm means RTSTRUCT)."""
    if to is not None:
        if to not in FORMATS:
            raise StructureSetError(f"Unknown output format '{to}'; use one of {', '.join(FORMATS)}.")
        return to
    name = Path(path).name.lower()
    for suffix, fmt in sorted(_SUFFIX_FORMATS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return fmt
    raise StructureSetError(
        f"Cannot tell the output format from '{Path(path).name}'; end it with .dcm, .nii.gz or .nrrd, or give --to."
    )


def write_structures(
    ct: CTSeries, masks: dict[str, sitk.Image], path: str | Path, fmt: str, *, algorithm: str | None = None
) -> Path:
    """Write masks on ``ct``'s grid in format ``fmt`` (see ``FORMATS``)."""
    if fmt == "rtstruct":
        return write_rtstruct(ct, masks, path, algorithm=algorithm)
    if fmt == "seg":
        return write_seg(ct, masks, path, algorithm=algorithm)
    if len(masks) != 1:
        raise StructureSetError(
            f"A {fmt} file holds one structure but {len(masks)} were selected ({', '.join(masks)}); "
            "choose one with --roi."
        )
    wanted = {"nifti": (".nii", ".nii.gz"), "nrrd": (".nrrd",)}[fmt]
    if not str(path).lower().endswith(wanted):
        raise StructureSetError(f"A {fmt} output must end with {' or '.join(wanted)}: '{Path(path).name}'.")
    return write_mask(next(iter(masks.values())), path)


def convert_structures(
    ct_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    *,
    roi: str | Sequence[str] | None = None,
    to: str | None = None,
    series_uid: str | None = None,
) -> Path:
    """Read structures from ``input_path`` on the CT in ``ct_dir`` and write them to ``output_path``."""
    fmt = output_format(output_path, to)
    ct = load_ct_series(ct_dir, series_uid=series_uid)
    masks = read_structures(input_path, ct, roi=roi)
    return write_structures(ct, masks, output_path, fmt)
