"""The ``ctv predict`` job: one CT series in, the CTV out as files beside a report.

Writes into ``OUT_DIR``: ``rtstruct.dcm`` (and on request ``seg.dcm``, ``ctv.nii.gz``),
``uncertainty.nii.gz`` (the voxel uncertainty, uint8 percent 0-100 on the CT's grid:
:mod:`.uncertainty`), ``report.json`` (input UIDs, model and its checksum, device and engine,
seconds per stage with a ``total``, CTV volume in cc and the figures of the anatomy check,
warnings, ``uncertainty``: the signal, the per-slice scores in mm, the least certain slices) and
``qa.png`` (with the warnings and the least certain slices). ``OUT_DIR`` always holds one run's
complete set (:mod:`ctv_core.output_folder`): what can be checked is checked before predicting
(the folder can be created and written, no other run holds it, it holds nothing but an earlier
``ctv predict`` set; the CT covers a pelvis and can be referenced), the outputs are staged
inside ``OUT_DIR`` and replace the earlier set as a whole, ``report.json`` last.

With ``supersedes`` (an earlier set of the same CT, e.g. before more slices arrived), the RTSTRUCT
and SEG replace that set's: they continue its series with the next instance number
(:mod:`ctv_core.structures.revision`), so the planning system holds one current structure set.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._version import __version__
from ..dicom.ct_series import CTSeries
from ..dicom.series import load_ct_series
from ..errors import OutputFolderError, StructureSetError, describe_os_error
from ..heap import return_free_memory
from ..output_folder import output_set
from ..structures.image_files import write_image
from ..structures.mask_files import write_mask
from ..structures.revision import SeriesRevision, revision_of
from ..structures.roi_generation import RoiGeneration
from ..structures.rtstruct import write_rtstruct
from .input_checks import check_pelvic_coverage
from .predictor import Cancelled, CTVPredictor, Progress

OUTPUT_FORMATS = ("rtstruct", "seg", "nifti")
FILE_NAMES = {"rtstruct": "rtstruct.dcm", "seg": "seg.dcm", "nifti": "ctv.nii.gz"}
REPORT = "report.json"
UNCERTAINTY_FILE = "uncertainty.nii.gz"
#: Every file a ``ctv predict`` set may hold.
KNOWN_FILES = (*FILE_NAMES.values(), UNCERTAINTY_FILE, "qa.png", REPORT)


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
    engine: str = "auto",
    series_uid: str | None = None,
    formats: Sequence[str] = ("rtstruct",),
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
    supersedes: str | Path | None = None,
) -> PredictJobResult:
    """Load the CT, predict the CTV, write the outputs and the report (see the module docstring).

    ``supersedes``: a folder holding an earlier set of the same CT whose RTSTRUCT (and SEG) these
    replace, continuing their series.

    Raises
    ------
    CTVError
        Every error a user or the environment can cause, before anything in ``out_dir`` is
        replaced: ``OutputFolderError`` (the folder), ``DicomInputError`` (the CT),
        ``InsufficientCoverageError``, ``StructureSetError``, ``ModelPackageError``,
        ``DeviceError``, ``PredictionCancelled``.
    """
    formats = _check_formats(formats)
    out_dir = Path(out_dir)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    with output_set(out_dir, KNOWN_FILES, marker=REPORT, owner="ctv predict") as staging:
        start = time.perf_counter()
        ct = load_ct_series(ct_dir, series_uid=series_uid)
        return_free_memory()  # the slices' freed pixel arrays, ~90 MB the network stage would peak above
        seconds["load"] = time.perf_counter() - start
        check_pelvic_coverage(ct.image)
        _check_referenceable(ct, formats)
        revisions = _revisions(Path(supersedes), ct, formats) if supersedes is not None else {}

        start = time.perf_counter()
        predictor = CTVPredictor(model=model, device=device, engine=engine)
        seconds["model_load"] = time.perf_counter() - start
        prediction = predictor.run(ct.image, progress=progress, cancelled=cancelled)
        seconds.update(prediction.seconds)

        try:
            report = _write_outputs(staging, ct, predictor.package, prediction, formats, seconds, started,
                                    revisions)
        except OSError as exc:
            raise OutputFolderError(describe_os_error(exc, f"writing the outputs into '{out_dir}'") +
                                    " Nothing in the folder was replaced.") from exc
    keys = {FILE_NAMES[f]: f for f in OUTPUT_FORMATS if f in formats} | {UNCERTAINTY_FILE: "uncertainty",
                                                                          "qa.png": "qa", REPORT: "report"}
    files = {key: out_dir / name for name, key in keys.items()}
    return PredictJobResult(out_dir=out_dir, files=files, report=report)


def _revisions(earlier: Path, ct: CTSeries, formats: list[str]) -> dict[str, SeriesRevision]:
    """The series each asked DICOM output continues: that of the same file in ``earlier``, where it has one."""
    asked = [f for f in ("rtstruct", "seg") if f in formats]
    if not asked:
        raise StructureSetError("Replacing an earlier set (--supersedes) concerns the RTSTRUCT or SEG; ask for one "
                                "of them with --formats.")
    found = {f: earlier / FILE_NAMES[f] for f in asked if (earlier / FILE_NAMES[f]).is_file()}
    if not found:
        raise StructureSetError(f"'{earlier}' holds no {' or '.join(FILE_NAMES[f] for f in asked)} to replace; give "
                                "the folder of the earlier ctv predict set of this CT.")
    return {f: revision_of(path, ct) for f, path in found.items()}


def _write_outputs(staging: Path, ct: CTSeries, package, prediction, formats: list[str], seconds: dict[str, float],
                   started: float, revisions: dict[str, SeriesRevision]) -> dict:
    """Write the asked files, ``qa.png`` and ``report.json`` into ``staging``; returns the report."""
    start = time.perf_counter()
    warnings = prediction.warnings + list(ct.warnings)
    if prediction.volume_cc <= 0 and "rtstruct" in formats:
        warnings.append("The RTSTRUCT holds the CTV as an ROI without contours.")
    masks = {"CTV": prediction.mask}
    if "rtstruct" in formats:
        generation = RoiGeneration.from_prediction(package.name, package.version, package.sha256,
                                                   ct.reference.series_instance_uid, edited=False)
        write_rtstruct(ct, masks, staging / FILE_NAMES["rtstruct"], algorithm=package.model_id,
                       revision=revisions.get("rtstruct"), generation={"CTV": generation})
    if "seg" in formats:
        from ..structures.seg import write_seg  # highdicom only when a SEG is asked for

        write_seg(ct, masks, staging / FILE_NAMES["seg"], algorithm=package.model_id, revision=revisions.get("seg"))
    if "nifti" in formats:
        write_mask(prediction.mask, staging / FILE_NAMES["nifti"])
    write_image(prediction.uncertainty.map, staging / UNCERTAINTY_FILE)
    notes = [f"CTV volume: {prediction.volume_cc:.0f} cc", f"Model: {package.model_id}",
             f"Patient: {ct.reference.patient_study.patient_id}", "Automatic contour: review before use."]
    from .qa_image import write_qa_image  # matplotlib (~40 MB) only now, not during the network stage

    write_qa_image(ct.image, prediction.mask, staging / "qa.png", "CTV auto-delineation (unapproved)", notes,
                   warnings=warnings, uncertainty=prediction.uncertainty)
    seconds["writing"] = time.perf_counter() - start
    seconds["total"] = time.perf_counter() - started
    report = _report(ct, package, prediction, seconds, formats, warnings)
    (staging / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def describe_input(ct: CTSeries) -> dict:
    """The ``input`` entry of a report: which CT series, where from, its grid (also in the review station's
    reports of edits)."""
    ref = ct.reference
    image = ct.image
    return {
        "ct_dir": str(ct.folder),
        "study_instance_uid": ref.study_instance_uid,
        "series_instance_uid": ref.series_instance_uid,
        "frame_of_reference_uid": ref.frame_of_reference_uid,
        "slices": len(ref.slices),
        "size": list(image.GetSize()),
        "spacing_mm": [round(s, 4) for s in image.GetSpacing()],
        "patient_position": ref.patient_position,
    }


def _report(ct: CTSeries, package, prediction, seconds: dict[str, float], formats: list[str],
            warnings: list[str]) -> dict:
    return {
        "ctv_core_version": __version__,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "input": describe_input(ct),
        "model": {"name": package.name, "version": package.version, "sha256": package.sha256,
                  "path": str(package.path)},
        "device": prediction.device,
        "engine": prediction.engine,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "ctv": {"volume_cc": round(prediction.volume_cc, 1), "anatomy": prediction.anatomy},
        "outputs": [FILE_NAMES[f] for f in formats] + [UNCERTAINTY_FILE, "qa.png", REPORT],
        "warnings": warnings,
        "uncertainty": prediction.uncertainty.to_report(),
    }
