"""``ctv dataset build`` and ``ctv dataset info``: a training set from a DICOM archive, and its summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .progress import StageBars

#: A folder holding this file is a case store (``ctv review`` / ``ctv node`` --data), not a DICOM archive.
STORE_INDEX = "index.sqlite"


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``ctv dataset build`` and ``ctv dataset info`` to the ``ctv`` parser's subcommands."""
    dataset = sub.add_parser("dataset", help="training set from a DICOM archive (build, info)")
    commands = dataset.add_subparsers(dest="dataset_command", required=True)

    p = commands.add_parser("build", parents=[common], help="DICOM archive (CTs + RTSTRUCTs) -> one HDF5 file",
                            description="Pair every RTSTRUCT with its CT, pick the target ROI by name and write "
                                        "one HDF5 training set; unusable cases are skipped with their reason. "
                                        "A case store (a --data folder of ctv review or ctv node) gives its "
                                        "approved cases, each with its approval's record.")
    p.add_argument("archive", type=Path, help="folder with the CT series and RTSTRUCTs (any layout), or a case "
                                              "store (the folder holding index.sqlite): its approved cases")
    p.add_argument("out", type=Path, help="the .h5 file to write")
    p.add_argument("--roi", default=None, metavar="PATTERN",
                   help="target ROI name as a regular expression (case-insensitive, full match)")
    p.add_argument("--alias", action="append", default=None, metavar="NAME",
                   help="a target ROI name (repeatable; case, spaces, _ - . ignored)")
    p.add_argument("--default-aliases", action="store_true",
                   help="also accept the built-in target names (used anyway when neither --roi nor --alias is given)")
    p.add_argument("--extra-roi", action="append", default=[], metavar="NAME=PATTERN",
                   help="also store this ROI as masks/NAME, e.g. Bladder='bladder|blase' (repeatable)")
    p.add_argument("--deidentify", action="store_true",
                   help="store no patient names, IDs, birth dates, paths or UIDs (patient key hashed)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it exists")
    p.add_argument("--strict", action="store_true",
                   help="skip cases whose ROIs have damaged contours (default: store them without those contours)")
    p.add_argument("--tissue-labels", action="store_true",
                   help="also store each case's tissue label map (tissue_labels.nii.gz beside its RTSTRUCT, as "
                        "ctv phantom writes it) for appearance-randomised training; cases without one are skipped")
    p.add_argument("--approved-only", action="store_true",
                   help="only RTSTRUCTs exported with their approval's record beside them (X.ai-edits.json beside "
                        "X.dcm, as Slicer's Export writes it), the record stored with each case (a case store: "
                        "always its approved cases)")
    p.set_defaults(func=run_dataset_build)

    p = commands.add_parser("info", parents=[common], help="summarise a training set")
    p.add_argument("dataset", type=Path, help="the .h5 file")
    p.add_argument("--json", action="store_true", help="print the info dictionary as JSON")
    p.set_defaults(func=run_dataset_info)


def run_dataset_build(args: argparse.Namespace) -> int:
    """Build the HDF5 file with progress bars and print the summary."""
    from ..dataset.builder import RoiSelection, build_dataset

    if (args.archive / STORE_INDEX).is_file():
        return run_approved_build(args)
    rois = RoiSelection.from_options(pattern=args.roi, aliases=args.alias, default_aliases=args.default_aliases,
                                     extra_rois=args.extra_roi)
    with StageBars(args.quiet, {"scanning": "folder", "building": "RTSTRUCT"}) as bars:
        summary = build_dataset(args.archive, args.out, rois, deidentify=args.deidentify, overwrite=args.overwrite,
                                strict=args.strict, tissue_labels=args.tissue_labels,
                                approved_only=args.approved_only, progress=bars)
    print(summary.describe())
    return 0


def run_approved_build(args: argparse.Namespace) -> int:
    """Build the HDF5 file from a case store's approved cases and print the summary."""
    from ..dataset.approved_build import ApprovedContour, build_approved_dataset
    from ..errors import DatasetError
    from ..service.approvals import approved_versions
    from ..service.store import CaseStore

    options = (("--roi", args.roi), ("--alias", args.alias), ("--extra-roi", args.extra_roi),
               ("--deidentify", args.deidentify), ("--tissue-labels", args.tissue_labels),
               ("--default-aliases", args.default_aliases), ("--strict", args.strict))
    ignored = [flag for flag, given in options if given]
    if ignored:
        raise DatasetError(f"'{args.archive}' is a case store: its approved contours are the targets, with their "
                           f"approval's record; {', '.join(ignored)} does not apply. Leave it out.")
    store = CaseStore(args.archive)
    try:
        contours = [ApprovedContour(f"case {case} version {version}", ct_dir, rtstruct, record)
                    for case, version, ct_dir, rtstruct, record in approved_versions(store)]
    finally:
        store.close()
    with StageBars(args.quiet, {"building": "approved case"}) as bars:
        summary = build_approved_dataset(contours, args.out, where=args.archive, overwrite=args.overwrite,
                                         progress=bars)
    print(summary.describe())
    return 0


def run_dataset_info(args: argparse.Namespace) -> int:
    """Print the dataset's summary (text or JSON)."""
    from ..dataset.hdf5_reader import CTVDataset

    with CTVDataset(args.dataset) as dataset:
        info = dataset.info()
    print(json.dumps(info, indent=2) if args.json else format_dataset_info(info))
    return 0


def format_dataset_info(info: dict[str, Any]) -> str:
    """A few lines summarising ``CTVDataset.info()`` for the command line."""

    def span(lo, hi, fmt) -> str:
        return " x ".join(fmt(a) if a == b else f"{fmt(a)}-{fmt(b)}" for a, b in zip(lo, hi))

    target = []
    if info["target_pattern"]:
        target.append(f"pattern '{info['target_pattern']}'")
    if info["target_aliases"]:
        target.append(f"aliases {', '.join(info['target_aliases'])}")
    lines = [
        f"CTV dataset {info['path']} (format {info['format_version']}, created {info['created']}, "
        f"ctv_core {info['ctv_core_version']}, de-identified: {'yes' if info['deidentified'] else 'no'})",
        f"  target ROI: {' or '.join(target) or '?'}",
        f"  {info['cases']} case(s) from {info['patients']} patient(s)"
        + (", with tissue label maps" if info.get("tissue_labels") else ""),
    ]
    if info["cases"]:
        lines.append(f"  size (i x j x k voxels): {span(info['size_min'], info['size_max'], str)}")
        spacing = span(info["spacing_min"], info["spacing_max"], lambda v: f"{v:.3g}")
        lines.append(f"  spacing (i x j x k mm): {spacing}")
    for name, v in info["roi_volumes_cc"].items():
        extra = f", missing in {info['extra_rois_missing'][name]}" if name in info["extra_rois_missing"] else ""
        lines.append(f"  {name} volume (cc): mean {v['mean']:.1f}, min {v['min']:.1f}, max {v['max']:.1f} "
                     f"({v['count']} case(s){extra})")
    for name, count in info["extra_rois_missing"].items():
        if name not in info["roi_volumes_cc"]:
            lines.append(f"  {name}: missing in all {count} case(s)")
    if info.get("cases_with_dropped_contours"):
        lines.append(f"  {info['cases_with_dropped_contours']} case(s) stored without some damaged contours "
                     "(see case_list; rebuild with --strict to skip them)")
    if info["skipped"]:
        by = ", ".join(f"{cat} {n}" for cat, n in info["skipped_by_category"].items())
        lines.append(f"  skipped {info['skipped']} structure set(s): {by}")
    else:
        lines.append("  skipped: none")
    return "\n".join(lines)
