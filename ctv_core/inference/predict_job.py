"""The ``ctv predict`` job: one CT series in, the CTV out as files beside a report.

Writes into ``OUT_DIR``: ``rtstruct.dcm`` (and on request ``seg.dcm``, ``ctv.nii.gz``),
``report.json`` (input UIDs, model and its checksum, device, seconds per stage with a
``total``, CTV volume in cc, warnings) and ``qa.png``. Outputs are assembled in a temporary
folder beside ``OUT_DIR`` and moved in only when all are written, so a failure leaves nothing
half-written (files of an earlier run with other names are left alone).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._version import __version__
from ..dicom.ct_series import CTSeries
from ..dicom.series import load_ct_series
from ..errors import StructureSetError
from ..structures.mask_files import write_mask
from .predictor import Cancelled, CTVPredictor, Progress
from .qa_image import write_qa_image
from ..structures.rtstruct import write_rtstruct

OUTPUT_FORMATS = ("rtstruct", "seg", "nifti")
FILE_NAMES = {"rtstruct": "rtstruct.dcm", "seg": "seg.dcm", "nifti": "ctv.nii.gz"}


@dataclass(frozen=True)
class PredictJobResult:
    """Where the outputs went and the report written with them."""

    out_dir: Path
    files: dict[str, Path]
    report: dict


def _check_formats(formats: Sequence[str]) -> list[str]:
    chosen = [f.strip().lower() for f in formats if f.strip()]
    unknown = [f for f in chosen if f not in OUTPUT_FORMATS]
    if unknown or not chosen:
        raise StructureSetError(
            f"Unknown output format(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(OUTPUT_FORMATS)}."
        )
    return chosen


def _check_referenceable(ct: CTSeries, formats: list[str]) -> None:
    """Refuse before predicting when the asked DICOM outputs could not reference this CT."""
    dicom = [f for f in formats if f in ("rtstruct", "seg")]
    if not dicom:
        return
    problems = list(ct.reference.problems_for_referencing())
    if ct.regularization:
        problems.append(f"the CT was resampled when loaded ({ct.regularization})")
    if problems:
        raise StructureSetError(
            f"A {' or '.join(dicom)} cannot be written for this CT: {'; '.join(problems)}. Use a CT with valid "
            "identifiers and untilted, evenly spaced slices, or ask only for --formats nifti."
        )


def run_predict_job(
    ct_dir: str | Path,
    out_dir: str | Path,
    *,
    model: str | Path | None = None,
    device: str = "auto",
    series_uid: str | None = None,
    formats: Sequence[str] = ("rtstruct",),
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> PredictJobResult:
    """Load the CT, predict the CTV, write the outputs and the report (see the module docstring)."""
    formats = _check_formats(formats)
    out_dir = Path(out_dir)
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    start = time.perf_counter()
    ct = load_ct_series(ct_dir, series_uid=series_uid)
    seconds["load"] = time.perf_counter() - start
    _check_referenceable(ct, formats)

    start = time.perf_counter()
    predictor = CTVPredictor(model=model, device=device)
    seconds["model_load"] = time.perf_counter() - start
    prediction = predictor.run(ct.image, progress=progress, cancelled=cancelled)
    seconds.update(prediction.seconds)

    start = time.perf_counter()
    package = predictor.package
    files: dict[str, Path] = {}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        masks = {"CTV": prediction.mask}
        if "rtstruct" in formats:
            files["rtstruct"] = write_rtstruct(ct, masks, staging / FILE_NAMES["rtstruct"], algorithm=package.model_id)
        if "seg" in formats:
            from ..structures.seg import write_seg  # highdicom only when a SEG is asked for

            files["seg"] = write_seg(ct, masks, staging / FILE_NAMES["seg"], algorithm=package.model_id)
        if "nifti" in formats:
            files["nifti"] = write_mask(prediction.mask, staging / FILE_NAMES["nifti"])
        notes = [f"CTV volume: {prediction.volume_cc:.0f} cc", f"Model: {package.model_id}",
                 f"Patient: {ct.reference.patient_study.patient_id}", "Automatic contour: review before use."]
        files["qa"] = write_qa_image(ct.image, prediction.mask, staging / "qa.png",
                                     "CTV auto-delineation (unapproved)",
                                     notes + prediction.warnings + list(ct.warnings))
        seconds["writing"] = time.perf_counter() - start
        seconds["total"] = time.perf_counter() - started
        report = _report(ct, package, prediction, seconds, formats)
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        files["report"] = staging / "report.json"
        out_dir.mkdir(parents=True, exist_ok=True)
        final = {}
        for key, path in files.items():
            target = out_dir / path.name
            os.replace(path, target)
            final[key] = target
    finally:
        for leftover in staging.glob("*"):
            leftover.unlink()
        staging.rmdir()
    return PredictJobResult(out_dir=out_dir, files=final, report=report)


def _report(ct: CTSeries, package, prediction, seconds: dict[str, float], formats: list[str]) -> dict:
    ref = ct.reference
    image = ct.image
    return {
        "ctv_core_version": __version__,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "input": {
            "ct_dir": str(ct.folder),
            "study_instance_uid": ref.study_instance_uid,
            "series_instance_uid": ref.series_instance_uid,
            "frame_of_reference_uid": ref.frame_of_reference_uid,
            "slices": len(ref.slices),
            "size": list(image.GetSize()),
            "spacing_mm": [round(s, 4) for s in image.GetSpacing()],
            "patient_position": ref.patient_position,
        },
        "model": {"name": package.name, "version": package.version, "sha256": package.sha256,
                  "path": str(package.path)},
        "device": prediction.device,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "ctv": {"volume_cc": round(prediction.volume_cc, 1)},
        "outputs": [FILE_NAMES[f] for f in formats] + ["qa.png", "report.json"],
        "warnings": prediction.warnings + list(ct.warnings),
    }
