"""``ctv report``: what clinicians changed in the AI contour, per model version, from a case store or exports."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EditRecordError


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``ctv report``."""
    p = sub.add_parser(
        "report",
        parents=[common],
        help="edit figures of approved AI contours per model version (for commissioning and monitoring)",
        description=(
            "Summarise what clinicians changed in the AI contour before approving it: Dice, HD95, surface Dice at "
            "2 mm, volume added and removed (cc) and CT slices touched, per model version (name, version, "
            "checksum). SOURCE is a case store (the --data folder of ctv review / ctv node: its approved cases) or "
            "a folder of RTSTRUCTs exported from Slicer (every *.ai-edits.json below it). Writes "
            "OUT_DIR/report.json (n, median, quartiles, min, max per figure), edits.csv (one row per approval) "
            "and edits.png (box and points per figure). Definitions: docs/edit-tracking.md."
        ),
    )
    p.add_argument("source", type=Path, metavar="SOURCE", help="case store folder, or folder of exported RTSTRUCTs")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder for the report (created if needed)")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    """Collect the records, write the report and print its summary."""
    from ..evaluation.edit_report import read_folder_records, write_edit_report

    source = args.source
    if not source.is_dir():
        raise EditRecordError(f"'{source}' is not a folder; give a case store (the --data folder of ctv review or "
                              "ctv node) or a folder of exported RTSTRUCTs with their .ai-edits.json files.")
    if (source / "index.sqlite").is_file():
        from ..service.approvals import approved_records
        from ..service.store import CaseStore

        store = CaseStore(source)
        try:
            records = approved_records(store)
        finally:
            store.close()
        kind = "case store"
    else:
        records = read_folder_records(source)
        kind = "folder of exports"
    report = write_edit_report(records, args.out_dir, str(source))
    print(f"{report['approvals']} approval(s) from the {kind} {source}")
    for key, group in report["models"].items():
        figures = group["figures"]
        print(f"  {key}: {group['n']} approved, {group['unchanged']} unchanged; median Dice "
              f"{figures['dice'].get('median', '-')}, HD95 {figures['hd95_mm'].get('median', '-')} mm, added "
              f"{figures['added_cc'].get('median', '-')} cc, removed {figures['removed_cc'].get('median', '-')} cc, "
              f"{figures['slices_touched'].get('median', '-')} slices touched")
    for name in report["outputs"]:
        print(f"  {args.out_dir / name}")
    return 0
