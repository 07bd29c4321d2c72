"""Loading one CT series from a DICOM folder: selection, validation, HU and geometry.

Owns ``load_ct_series``. The rules, each checked and each with its own error:

* Series selection: only single-frame CT Image Storage slices count (localizers, secondary
  captures such as exam summaries, dose reports and RT objects are passed over). One such
  series is used; several raise ``MultipleSeriesError`` listing them unless ``series_uid``
  picks one. Enhanced (multi-frame) CT is refused with ``UnsupportedDicomError``.
* Consistency within the series: the same ImageOrientationPatient (within 1e-4), Rows,
  Columns, PixelSpacing (within 1e-4 mm) and FrameOfReferenceUID, else
  ``InconsistentSeriesError`` with each variant's value and count.
* Slice order, spacing, missing slices, gantry tilt: see :mod:`ctv_core.dicom.slice_geometry`.
* Identical copies of one instance (same SOPInstanceUID, same pixels) are kept once with a
  warning; the same SOPInstanceUID with different pixels is refused.
* Files whose header or pixel data cannot be read are skipped with a warning; when that
  leaves a gap the series is refused (``CorruptDicomError`` naming the file).
* HU = stored value x RescaleSlope + RescaleIntercept, per slice. The image is int16 when
  every slope and intercept is an integer and the HU fit in int16, else float32 (a
  regularized stack is always float32).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from .ct_series import CTReference, CTSeries, PatientStudy, SliceReference
from .files import CT_IMAGE_STORAGE, SeriesFiles, has_slice_geometry, scan_folder
from ..errors import (
    CorruptDicomError,
    DuplicateSliceError,
    InconsistentSeriesError,
    MultipleSeriesError,
    NoDicomFoundError,
    NotCTError,
    SeriesNotFoundError,
    UnsupportedDicomError,
)
from ..geometry import direction_from_iop
from .slice_geometry import analyse_slice_positions, check_missing, regularize_slices

logger = logging.getLogger(__name__)

ORIENTATION_TOLERANCE = 1e-4
PIXEL_SPACING_TOLERANCE_MM = 1e-4
PAD_HU = -1024.0


def load_ct_series(
    folder: str | Path, series_uid: str | None = None, *, allow_resampling_gaps: bool = False,
    checkpoint: Callable[[], None] | None = None,
) -> CTSeries:
    """Load one CT series from a folder of DICOM files (searched recursively).

    Parameters
    ----------
    folder
        A folder holding the series, in any layout, with or without ``.dcm`` endings.
    series_uid
        SeriesInstanceUID of the series to load when the folder holds several CT series.
    allow_resampling_gaps
        Resample across gaps that look like missing slices instead of refusing them.
    checkpoint
        Called before each file is read and each slice decoded (in the thread doing it): a
        caller's budget (e.g. the review station's CPU budget per upload) may raise from it.

    Returns
    -------
    CTSeries
        The image in HU on the DICOM geometry (LPS) and the references writers need.

    Raises
    ------
    DicomInputError
        (a subclass of it) when the folder cannot give one consistent CT series; the message
        says what was found and what to do.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NoDicomFoundError(f"'{folder}' is not a folder. Give the folder that holds the CT's DICOM files.")
    series_list, skipped = scan_folder(folder, checkpoint)
    warnings = [f"skipped {s.path}: {s.reason}" for s in skipped if s.reason.startswith("unreadable")]
    chosen = _select_series(folder, series_list, series_uid, skipped)
    ct = _load_selected(chosen, folder, warnings, allow_resampling_gaps, checkpoint)
    for w in ct.warnings:
        logger.warning(w)
    return ct


def _select_series(
    folder: Path, series_list: list[SeriesFiles], series_uid: str | None, skipped: list
) -> SeriesFiles:
    candidates = [s for s in series_list if s.is_ct_volume_candidate]
    if series_uid is not None:
        for s in series_list:
            if s.key == series_uid:
                if s.is_enhanced_ct:
                    raise _enhanced_error(s)
                if not s.is_ct_volume_candidate:
                    raise NotCTError(f"Series {series_uid} in '{folder}' is not a CT image series: {s.summary()}.")
                return s
        listing = "\n  ".join(s.summary() for s in series_list) or "(none)"
        raise SeriesNotFoundError(
            f"No series with SeriesInstanceUID {series_uid} in '{folder}'. Series found:\n  {listing}"
        )
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        listing = "\n  ".join(s.summary() for s in candidates)
        raise MultipleSeriesError(
            f"'{folder}' holds {len(candidates)} CT series:\n  {listing}\n"
            "Choose one by its SeriesInstanceUID (series_uid=..., or --series on the command line)."
        )
    enhanced = [s for s in series_list if s.is_enhanced_ct]
    if enhanced:
        raise _enhanced_error(enhanced[0])
    if series_list:
        listing = "\n  ".join(s.summary() for s in series_list)
        raise NotCTError(
            f"'{folder}' holds DICOM but no CT image series:\n  {listing}\n"
            "CTV delineation needs the planning CT (axial CT image series); export it from the planning "
            "system or PACS into this folder."
        )
    unreadable = [s for s in skipped if s.reason.startswith("unreadable")]
    hint = f" ({len(unreadable)} file(s) look like broken DICOM, e.g. {unreadable[0].path})" if unreadable else ""
    raise NoDicomFoundError(
        f"No DICOM files found in '{folder}' or its subfolders{hint}. Give the folder that holds the CT's "
        ".dcm files (a DICOM export from the scanner, PACS or planning system)."
    )


def _enhanced_error(s: SeriesFiles) -> UnsupportedDicomError:
    return UnsupportedDicomError(
        f"Series {s.key} is an enhanced multi-frame CT ({s.summary()}), which this version does not load. "
        "Export the CT as classic single-frame CT Image Storage (the usual export option of scanners and "
        "PACS), or convert it, e.g. with dcm4che's emf2sf."
    )


def _load_selected(s: SeriesFiles, folder: Path, warnings: list[str], allow_gaps: bool,
                   checkpoint: Callable[[], None] | None = None) -> CTSeries:
    headers = [(p, ds) for p, ds in s.headers if has_slice_geometry(ds)]
    for p, _ in s.headers:
        if all(p != q for q, _ in headers):
            warnings.append(f"skipped {p}: no image geometry (ImagePositionPatient/Orientation, PixelSpacing)")
    if not headers:
        raise NotCTError(f"Series {s.summary()} has no slice with image geometry; it is not an axial CT volume.")
    _check_consistency(headers)
    pixels, headers = _decode_pixels(headers, warnings, checkpoint)
    headers, pixels = _drop_identical_copies(headers, pixels, warnings)

    first = headers[0][1]
    try:
        direction = direction_from_iop([float(v) for v in first.ImageOrientationPatient])
    except ValueError as exc:
        raise CorruptDicomError(
            f"{headers[0][0]}: {exc}. The slice geometry in the files is damaged; re-export the series."
        ) from exc
    positions = np.asarray([[float(v) for v in ds.ImagePositionPatient] for _, ds in headers])
    labels = [str(p) for p, _ in headers]
    thickness = float(first.get("SliceThickness") or 0) or None
    layout = analyse_slice_positions(positions, direction, labels, default_spacing=thickness)
    _check_gaps_from_corrupt_files(layout, warnings)
    check_missing(layout, allow_gaps)

    ordered = [headers[i] for i in layout.order]
    ordered_pixels = [pixels[i] for i in layout.order]
    hu = _to_hu(ordered, ordered_pixels)
    del pixels, ordered_pixels
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    spacing_ij = (col_spacing, row_spacing)
    origin = positions[layout.order[0]].copy()
    regularization = None
    if layout.needs_regularization:
        volume, grid = regularize_slices(hu, layout, spacing_ij, PAD_HU)
        origin = origin + grid.origin_offset[0] * direction[:, 0] + grid.origin_offset[1] * direction[:, 1]
        regularization = _describe_regularization(layout, first)
        warnings.append(f"resampled onto a rectilinear grid: {regularization}")
    else:
        volume = hu
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((col_spacing, row_spacing, layout.spacing))
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetDirection(tuple(float(v) for v in direction.flatten()))
    reference = _reference(s, ordered, warnings)
    return CTSeries(image=image, reference=reference, folder=folder, regularization=regularization,
                    warnings=tuple(warnings))


def _check_consistency(headers: list[tuple[Path, pydicom.Dataset]]) -> None:
    def variants(key, shown) -> dict:
        """Each variant's key -> (how many slices, the value as the first of them holds it)."""
        found: dict = {}
        for _, ds in headers:
            count, value = found.get(key(ds), (0, shown(ds)))
            found[key(ds)] = (count + 1, value)
        return found

    def numbers(values) -> str:
        return "\\".join(f"{float(v):g}" for v in values)

    checks = {
        "orientation (ImageOrientationPatient)": variants(
            lambda ds: tuple(round(float(v) / ORIENTATION_TOLERANCE) for v in ds.ImageOrientationPatient),
            lambda ds: numbers(ds.ImageOrientationPatient),
        ),
        "image size (Rows x Columns)": variants(lambda ds: (int(ds.Rows), int(ds.Columns)),
                                                lambda ds: f"{int(ds.Rows)} x {int(ds.Columns)}"),
        "pixel spacing (PixelSpacing)": variants(
            lambda ds: tuple(round(float(v) / PIXEL_SPACING_TOLERANCE_MM) for v in ds.PixelSpacing),
            lambda ds: numbers(ds.PixelSpacing) + " mm",
        ),
        "frame of reference (FrameOfReferenceUID)": variants(
            lambda ds: str(ds.get("FrameOfReferenceUID", "")),
            lambda ds: str(ds.get("FrameOfReferenceUID", "")) or "(none)",
        ),
    }
    for what, found in checks.items():
        if len(found) > 1:
            counts = ", ".join(f"{n} slice(s) with {value}"
                               for n, value in sorted(found.values(), key=lambda item: -item[0]))
            example = f"first file {headers[0][0]}, last file {headers[-1][0]}"
            raise InconsistentSeriesError(
                f"The slices of the CT series do not share one {what}: {counts} ({example}). The folder mixes "
                "images of different reconstructions; export the planning CT series on its own."
            )


def _decode_pixels(headers, warnings, checkpoint: Callable[[], None] | None = None):
    """Read pixel data of every slice (two threads); drop files that fail, with a warning."""

    def read(item):
        path, _ = item
        if checkpoint is not None:
            checkpoint()
        try:
            result = pydicom.dcmread(path).pixel_array
        except Exception as exc:  # noqa: BLE001 - reported per file, decided on below
            result = exc
        if checkpoint is not None:
            checkpoint()  # the decoding's CPU time counted at once
        if not isinstance(result, Exception) and result.ndim != 2:
            return UnsupportedDicomError(
                f"{path} holds {result.shape} pixels; only single-frame greyscale CT slices can be loaded."
            )
        return result

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(read, headers))
    kept_headers, pixels = [], []
    for (path, ds), result in zip(headers, results):
        if isinstance(result, UnsupportedDicomError):
            raise result
        if isinstance(result, Exception):
            warnings.append(
                f"skipped {path}: pixel data cannot be decoded ({result.__class__.__name__}: {result})"
            )
            continue
        if result.shape != (int(ds.Rows), int(ds.Columns)):
            warnings.append(f"skipped {path}: pixel data has shape {result.shape}, header says {ds.Rows}x{ds.Columns}")
            continue
        kept_headers.append((path, ds))
        pixels.append(result)
    if not kept_headers:
        raise CorruptDicomError(
            "No slice of the CT series could be decoded: " + "; ".join(warnings[-3:]) + ". The files are "
            "damaged or use an unsupported compression; re-export the series uncompressed."
        )
    return pixels, kept_headers


def _drop_identical_copies(headers, pixels, warnings):
    seen: dict[str, int] = {}
    keep = []
    for idx, (path, ds) in enumerate(headers):
        uid = str(ds.get("SOPInstanceUID", ""))
        if uid and uid in seen:
            other = seen[uid]
            if np.array_equal(pixels[other], pixels[idx]):
                warnings.append(f"skipped {path}: identical copy of {headers[other][0]} (same SOPInstanceUID)")
                continue
            raise DuplicateSliceError(
                f"{headers[other][0]} and {path} carry the same SOPInstanceUID {uid} but different pixel data. "
                "Two versions of one image are in the folder (e.g. a lossy and a lossless copy); keep only one."
            )
        seen[uid] = idx
        keep.append(idx)
    return [headers[i] for i in keep], [pixels[i] for i in keep]


def _check_gaps_from_corrupt_files(layout, warnings) -> None:
    broken = [w for w in warnings if "cannot be decoded" in w or "has shape" in w]
    if broken and layout.missing:
        raise CorruptDicomError(
            "The CT series cannot be used: " + "; ".join(broken) + ". Without that file the series has "
            "missing slices (" + "; ".join(layout.missing) + "). Re-export the series from the scanner or PACS."
        )


def _to_hu(headers, pixels) -> np.ndarray:
    """Stack the slices as HU ``[k, j, i]``: int16 when the rescale is integral and fits, else float32."""
    slopes = [float(ds.get("RescaleSlope", 1) or 1) for _, ds in headers]
    intercepts = [float(ds.get("RescaleIntercept", 0) or 0) for _, ds in headers]
    ends = [sorted((float(p.min()) * m + b, float(p.max()) * m + b)) for p, m, b in zip(pixels, slopes, intercepts)]
    info = np.iinfo(np.int16)
    integral = all(m.is_integer() for m in slopes) and all(b.is_integer() for b in intercepts)
    fits = info.min <= min(lo for lo, _ in ends) and max(hi for _, hi in ends) <= info.max
    dtype = np.int16 if integral and fits else np.float32
    work = np.int32 if dtype == np.int16 else np.float32
    volume = np.empty((len(pixels), *pixels[0].shape), dtype=dtype)
    for k, (p, m, b) in enumerate(zip(pixels, slopes, intercepts)):
        volume[k] = p.astype(work) * work(m) + work(b)
    return volume


def _describe_regularization(layout, first) -> str:
    parts = []
    if layout.tilt_deg > 0:
        tag = first.get("GantryDetectorTilt")
        tag_text = f" (GantryDetectorTilt {float(tag):+.1f})" if tag not in (None, "") else ""
        parts.append(f"gantry tilt of {layout.tilt_deg:.1f} deg{tag_text} removed")
    if layout.irregular:
        gaps = np.diff(layout.normal_mm)
        parts.append(
            f"uneven slice spacing ({gaps.min():.2f} to {gaps.max():.2f} mm) resampled to {layout.spacing:.2f} mm"
        )
    return "; ".join(parts) + " (linear interpolation); voxel slices no longer coincide with the DICOM slices"


def _reference(s: SeriesFiles, ordered, warnings: list[str]) -> CTReference:
    first = ordered[0][1]
    sop_class = str(first.get("SOPClassUID", "")) or CT_IMAGE_STORAGE
    if not str(first.get("SOPClassUID", "")):
        warnings.append(f"SOPClassUID is empty in the files; taken as CT Image Storage ({CT_IMAGE_STORAGE})")
    if s.uid_missing:
        warnings.append(
            "SeriesInstanceUID is empty in the files: the image is usable, but no RTSTRUCT or SEG can reference "
            "this series. Re-export it from the scanner or PACS to get valid identifiers."
        )

    def text(ds, keyword):
        value = ds.get(keyword, "")
        return "" if value is None else str(value)

    patient_study = PatientStudy(
        **{
            name: text(first, keyword)
            for name, keyword in (
                ("patient_name", "PatientName"), ("patient_id", "PatientID"),
                ("issuer_of_patient_id", "IssuerOfPatientID"), ("patient_birth_date", "PatientBirthDate"),
                ("patient_sex", "PatientSex"), ("study_instance_uid", "StudyInstanceUID"),
                ("study_date", "StudyDate"), ("study_time", "StudyTime"), ("study_id", "StudyID"),
                ("accession_number", "AccessionNumber"), ("referring_physician_name", "ReferringPhysicianName"),
                ("study_description", "StudyDescription"),
            )
        }
    )
    slices = tuple(
        SliceReference(
            sop_instance_uid=text(ds, "SOPInstanceUID"),
            sop_class_uid=text(ds, "SOPClassUID") or sop_class,
            position=tuple(float(v) for v in ds.ImagePositionPatient),
            path=path,
        )
        for path, ds in ordered
    )
    return CTReference(
        series_instance_uid="" if s.uid_missing else s.key,
        frame_of_reference_uid=text(first, "FrameOfReferenceUID"),
        patient_study=patient_study,
        slices=slices,
        patient_position=text(first, "PatientPosition"),
        position_reference_indicator=text(first, "PositionReferenceIndicator"),
        manufacturer=text(first, "Manufacturer"),
        modality=text(first, "Modality") or "CT",
        series_description=text(first, "SeriesDescription"),
        series_number=text(first, "SeriesNumber"),
    )

