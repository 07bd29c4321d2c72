"""Which structure files make a case: two files, or two folders of cases matched by name, read as masks.

A case is a structure file (``<case>.nii.gz``, ``<case>.dcm``, ...) or a subfolder ``<case>/``
holding one structure file (or the one named by ``pred_file`` / ``ref_file``). A subfolder with
several structure files, such as those ``ctv predict`` and ``ctv phantom`` write, gives the
first of :data:`PREFERRED_FILES` it holds (see :func:`structure_file`). Mask images are
read with :func:`ctv_core.structures.mask_files.read_mask_image`; DICOM RTSTRUCT or SEG need the
case's CT, onto which every structure of the case is then read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import SimpleITK as sitk

from ..errors import EvaluationError, StructureSetError

#: File endings of structure files in case folders.
STRUCTURE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm")

#: The structure files ctv writes into a case folder, in the order one is taken from a folder
#: holding several: the RTSTRUCT (``rtstruct.dcm`` of ``ctv predict``, ``truth.dcm`` of ``ctv
#: phantom``), the SEG, then the mask image (``ctv.nii.gz``). A case without a CT takes the mask
#: image first, since DICOM structures are read onto a CT. Anything else (a phantom's
#: ``tissue_labels.nii.gz`` is a tissue label map, not a structure) is never taken by this rule.
PREFERRED_FILES = ("rtstruct.dcm", "truth.dcm", "seg.dcm", "ctv.nii.gz")

logger = logging.getLogger(__name__)


def find_cases(folder: str | Path) -> dict[str, Path]:
    """Cases in a folder: ``{name: path}`` for each structure file (name without its ending) and subfolder.

    Hidden entries and files with other endings are ignored.

    Raises
    ------
    EvaluationError
        Not a folder, or one name given both as a file and as a subfolder (or by two files).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"'{folder}' is not a folder of cases.")
    cases: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            name = entry.name
        elif _structure_suffix(entry.name):
            name = entry.name[: -len(_structure_suffix(entry.name))]
        else:
            logger.debug("ignored %s: not a structure file or case folder", entry)
            continue
        if name in cases:
            raise EvaluationError(
                f"Case '{name}' appears twice in '{folder}' ({cases[name].name} and {entry.name}); keep one."
            )
        cases[name] = entry
    return cases


def check_matching(pred_cases: dict[str, Path], ref_cases: dict[str, Path], pred_dir: Path, ref_dir: Path) -> None:
    only_pred = sorted(set(pred_cases) - set(ref_cases))
    only_ref = sorted(set(ref_cases) - set(pred_cases))
    if not only_pred and not only_ref:
        if not ref_cases:
            raise EvaluationError(
                f"'{ref_dir}' holds no case (no structure file {', '.join(STRUCTURE_SUFFIXES)} and no subfolder)."
            )
        return
    parts = []
    if only_ref:
        parts.append(f"no prediction in '{pred_dir}' for {_names(only_ref)}")
    if only_pred:
        parts.append(f"no reference in '{ref_dir}' for {_names(only_pred)}")
    raise EvaluationError(
        f"The case names do not match: {'; '.join(parts)}. Cases are matched by file or folder name; rename them "
        "to match, or evaluate folders that hold the same cases."
    )


def _names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _structure_suffix(name: str) -> str:
    lower = name.lower()
    return next((s for s in STRUCTURE_SUFFIXES if lower.endswith(s)), "")


def case_name(path: Path) -> str:
    suffix = _structure_suffix(path.name)
    return path.name[: -len(suffix)] if suffix else path.name


def structure_file(path: Path, inner: str | None, role: str, case: str, option: str, with_ct: bool = True) -> Path:
    """The structure file of a case entry: the file itself, or the one inside its subfolder.

    Inside a subfolder: the file named by ``inner`` (``--pred-file`` / ``--ref-file``), else the
    only structure file at its top level, else the first of :data:`PREFERRED_FILES` present
    (``ctv.nii.gz`` first when the case has no CT, ``with_ct`` False).
    """
    if path.is_file():
        return path
    if inner is not None:
        chosen = path / inner
        if not chosen.is_file():
            raise EvaluationError(f"Case '{case}': the {role} folder '{path}' has no file '{inner}'; check {option}.")
        return chosen
    found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and _structure_suffix(p.name))
    if len(found) == 1:
        return found[0]
    if not found:
        raise EvaluationError(
            f"Case '{case}': the {role} folder '{path}' holds no structure file ({', '.join(STRUCTURE_SUFFIXES)}) "
            f"at its top level; put one there or name it with {option}."
        )
    order = PREFERRED_FILES if with_ct else ("ctv.nii.gz",) + PREFERRED_FILES
    names = {p.name: p for p in found}
    preferred = next((names[name] for name in order if name in names), None)
    if preferred is not None:
        logger.info("case %s: %s of %s taken as the %s (%s overrides)", case, preferred.name,
                    ", ".join(names), role, option)
        return preferred
    raise EvaluationError(
        f"Case '{case}': the {role} folder '{path}' holds several structure files ({', '.join(p.name for p in found)}) "
        f"and none of those ctv writes ({', '.join(PREFERRED_FILES)}); name the one to use with {option}."
    )


def load_case_ct(case: str, ct_path: Path | None, structure_files: tuple[Path, ...]):
    from ..structures.mask_files import is_mask_file

    if ct_path is None:
        dicom = [p for p in structure_files if not is_mask_file(p)]
        if dicom:
            raise EvaluationError(
                f"Case '{case}': '{dicom[0]}' is not a mask image, so it is read as DICOM RTSTRUCT/SEG, which needs "
                "the CT it was drawn on: give --ct CT_DIR (for folders of cases, CT_DIR/<case> is each case's CT)."
            )
        return None
    if not ct_path.is_dir():
        raise EvaluationError(f"Case '{case}': there is no CT folder '{ct_path}'; check --ct.")
    from ..dicom.series import load_ct_series

    return load_ct_series(ct_path)


def read_one_structure(path: Path, ct, roi: str | None, role: str, option: str) -> sitk.Image:
    """One mask from a structure file: onto ``ct`` when given, else a mask image as it is."""
    if ct is not None:
        from ..structures.convert import read_structures

        masks = read_structures(path, ct, roi=roi)
        if len(masks) != 1:
            raise EvaluationError(
                f"The {role} '{path}' holds {len(masks)} structures ({', '.join(masks)}); choose one with {option} NAME."
            )
        return next(iter(masks.values()))
    from ..structures.mask_files import read_mask_image

    try:
        return read_mask_image(path)
    except StructureSetError as exc:
        raise EvaluationError(f"The {role} could not be used: {exc}") from exc
