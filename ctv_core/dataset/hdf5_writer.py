"""``DatasetWriter``: writes a CTV training set in the schema of :mod:`.hdf5_schema`, whole or not at all.

The file is written under a temporary name beside its destination and renamed when the
``with`` block ends without an error; an error or interruption removes it and leaves any
previous file in place. ``ctv dataset build`` writes through it, and so do tests that need a
training set, so the schema is written in one place.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import SimpleITK as sitk

from .._version import __version__
from ..atomic_files import atomic_file
from ..errors import DatasetError
from ..evaluation.edits import RECORD_FORMAT, is_edit_record
from ..structures.label_maps import TissueLegend
from .hdf5_schema import APPROVAL, CHUNK_KJI, FORMAT_NAME, FORMAT_VERSION, TARGET_MASK, TISSUE_LABELS

logger = logging.getLogger(__name__)

#: Case attributes that carry provenance (absent from de-identified files).
PROVENANCE_KEYS = ("study_instance_uid", "series_instance_uid", "frame_of_reference_uid",
                   "rtstruct_sop_instance_uid", "rtstruct_series_instance_uid", "ct_source", "rtstruct_source",
                   "ct_warnings")


def _strings(values) -> np.ndarray:
    return np.array(list(values), dtype=h5py.string_dtype())


def _write_array(group: h5py.Group, name: str, array: np.ndarray) -> h5py.Dataset:
    chunks = tuple(min(c, s) for c, s in zip(CHUNK_KJI, array.shape))
    return group.create_dataset(name, data=array, chunks=chunks, compression="gzip", compression_opts=1,
                                shuffle=array.dtype.itemsize > 1, fletcher32=True)


class DatasetWriter:
    """Write a training set: ``with DatasetWriter(path, ...) as w: w.add_case(...)``.

    Parameters
    ----------
    path
        The ``.h5`` file to write (replaced only when the block succeeds).
    target_pattern, target_aliases, extra_rois
        How the target and extra ROIs were chosen (root attributes).
    deidentified
        Whether the file holds no patient data (root attribute; callers then give no provenance).
    source_archive
        The archive's folder (root attribute, omitted when None).
    """

    def __init__(self, path: str | Path, *, target_pattern: str = "", target_aliases: Sequence[str] = (),
                 extra_rois: Mapping[str, str] | None = None, deidentified: bool = False,
                 source_archive: str | Path | None = None) -> None:
        self.path = Path(path)
        self._root = {"target_pattern": target_pattern, "target_aliases": tuple(target_aliases),
                      "extra_rois": dict(extra_rois or {}), "deidentified": bool(deidentified),
                      "source_archive": None if source_archive is None else str(source_archive)}
        self._stack: ExitStack | None = None
        self._h5: h5py.File | None = None
        self._tmp: Path | None = None
        self._skipped: list[tuple[str, str, str]] = []
        self.case_ids: list[str] = []
        self.tissue_legend: TissueLegend | None = None

    def __enter__(self) -> DatasetWriter:
        stack = ExitStack()
        self._tmp = stack.enter_context(atomic_file(self.path))
        self._h5 = stack.enter_context(h5py.File(self._tmp, "w"))
        self._stack = stack
        self._write_root()
        self._h5.create_group("cases")
        return self

    def __exit__(self, kind, value, traceback) -> bool:
        stack, self._stack = self._stack, None
        if kind is None:
            text = h5py.string_dtype()
            table = np.array(self._skipped, dtype=[("source", text), ("category", text), ("reason", text)])
            self._h5.create_dataset("skipped", data=table)
            self._h5.attrs["case_count"] = len(self.case_ids)
            self._h5.close()
        return bool(stack.__exit__(kind, value, traceback))

    def _write_root(self) -> None:
        a, root = self._h5.attrs, self._root
        a["format"] = FORMAT_NAME
        a["format_version"] = FORMAT_VERSION
        a["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        a["ctv_core_version"] = __version__
        a["target_pattern"] = root["target_pattern"] or ""
        a["target_aliases"] = _strings(root["target_aliases"])
        a["extra_rois"] = json.dumps(root["extra_rois"])
        a["deidentified"] = root["deidentified"]
        a["axis_order"] = "k,j,i"
        a["frame"] = "LPS"
        if root["source_archive"] is not None:
            a["source_archive"] = root["source_archive"]

    def add_case(self, case_id: str, image: sitk.Image, masks: Mapping[str, tuple[str, sitk.Image]], *,
                 patient_key: str, patient_position: str = "", extras_missing: Mapping[str, str] | None = None,
                 dropped_contours: Mapping[str, int] | None = None,
                 provenance: Mapping[str, str | Sequence[str]] | None = None,
                 tissue_labels: tuple[np.ndarray, TissueLegend] | None = None,
                 approval: Mapping[str, Any] | None = None) -> None:
        """Write one case.

        Parameters
        ----------
        case_id
            ``case_NNNNN`` (carries no patient data).
        image
            The CT in HU; stored as int16 ``[k, j, i]`` (rounded to whole HU when it is not integral).
        masks
            Stored name -> (ROI name in the RTSTRUCT, mask on ``image``'s grid, non-zero inside);
            must hold ``"target"``.
        patient_key
            The key folds are split by (PatientID, or a salted hash of it).
        patient_position
            DICOM PatientPosition (HFS, FFS, …).
        extras_missing
            Extra ROI name -> why it was not stored.
        dropped_contours
            ROI name -> contours of the RTSTRUCT passed over as damaged (not polygons).
        provenance
            UIDs and sources (keys :data:`PROVENANCE_KEYS`); None for a de-identified file.
        tissue_labels
            The case's tissue label map (uint8 ``[k, j, i]`` on the CT grid) and its legend, which
            must be the legend of every other case of the file (written once, as a root attribute).
        approval
            The edit record of the approval the target contour comes from (``ctv-edit-record/1``: the AI's
            provenance, approver, time, edit figures), stored as the JSON attribute ``approval``; None for a
            contour that was not approved through ctv_core.
        """
        if self._h5 is None:
            raise RuntimeError("DatasetWriter.add_case outside its 'with' block")
        if TARGET_MASK not in masks:
            raise DatasetError(f"Case {case_id} has no '{TARGET_MASK}' mask; every case needs its target.")
        unknown = sorted(set(provenance or {}) - set(PROVENANCE_KEYS))
        if unknown:
            raise ValueError(f"unknown provenance keys {unknown}; known: {PROVENANCE_KEYS}")
        if approval is not None and not is_edit_record(approval):
            raise DatasetError(f"Case {case_id}: its approval is not an edit record ({RECORD_FORMAT}).")
        hu = sitk.GetArrayViewFromImage(image)
        if tissue_labels is not None:
            self._check_tissue_labels(case_id, tissue_labels, hu.shape)
        rounded = hu.dtype != np.int16
        if rounded:
            info = np.iinfo(np.int16)
            hu = np.clip(np.rint(hu), info.min, info.max).astype(np.int16)
            logger.info("%s: HU rounded to whole numbers to store them as int16", case_id)
        group = self._h5["cases"].create_group(case_id)
        _write_array(group, "ct", np.ascontiguousarray(hu))
        voxel_cc = float(np.prod(image.GetSpacing())) / 1000.0
        mask_group = group.create_group("masks")
        for stored, (roi_name, mask) in masks.items():
            array = (sitk.GetArrayViewFromImage(mask) != 0).astype(np.uint8)
            if array.shape != hu.shape:
                raise DatasetError(f"Case {case_id}: mask '{stored}' has shape {array.shape}, the CT {hu.shape}.")
            data = _write_array(mask_group, stored, array)
            count = int(np.count_nonzero(array))
            data.attrs["roi_name"] = roi_name
            data.attrs["voxel_count"] = count
            data.attrs["volume_cc"] = count * voxel_cc
        if tissue_labels is not None:
            _write_array(group, TISSUE_LABELS, np.ascontiguousarray(tissue_labels[0], dtype=np.uint8))
            if self.tissue_legend is None:
                self.tissue_legend = tissue_labels[1]
                self._h5.attrs["tissue_legend"] = tissue_labels[1].to_json()
        missing = dict(extras_missing or {})
        a = group.attrs
        a["spacing"] = np.asarray(image.GetSpacing(), dtype=np.float64)
        a["origin"] = np.asarray(image.GetOrigin(), dtype=np.float64)
        a["direction"] = np.asarray(image.GetDirection(), dtype=np.float64)
        a["roi_name"] = masks[TARGET_MASK][0]
        a["patient_key"] = patient_key
        a["patient_position"] = patient_position
        a["hu_rounded"] = rounded
        a["extra_rois_missing"] = _strings(missing)
        a["extra_rois_missing_reasons"] = _strings(missing.values())
        a["dropped_contours"] = json.dumps(dict(dropped_contours or {}))
        if approval is not None:
            a[APPROVAL] = json.dumps(dict(approval), allow_nan=False)
        for key, value in (provenance or {}).items():
            a[key] = value if isinstance(value, str) else _strings(value)
        self.case_ids.append(case_id)

    def _check_tissue_labels(self, case_id: str, tissue_labels: tuple[np.ndarray, TissueLegend], shape) -> None:
        array, legend = tissue_labels
        if array.shape != tuple(shape) or array.dtype != np.uint8:
            raise DatasetError(f"Case {case_id}: the tissue label map is {array.dtype} {array.shape}; uint8 of the "
                               f"CT's shape {tuple(shape)} is needed.")
        if self.tissue_legend is not None and legend.labels != self.tissue_legend.labels:
            raise DatasetError(f"Case {case_id}: its tissue legend differs from the file's; every case's label map "
                               "must number tissues alike.")

    def add_skipped(self, source: str, category: str, reason: str) -> None:
        """Record a structure set that gave no case (the ``/skipped`` table)."""
        self._skipped.append((source, category, reason))
