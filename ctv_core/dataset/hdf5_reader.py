"""``CTVDataset``: read-only access to a CTV training set (schema in :mod:`.hdf5_schema`).

Reading from several processes (PyTorch DataLoader workers): ``CTVDataset`` opens the file
lazily and per process (a handle inherited through ``fork`` is never used; pickling drops
it), read-only and without HDF5 file locking (the builder never writes in place: it renames
a finished file), so any number of workers may read one file.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import SimpleITK as sitk

from ..errors import DatasetError
from ..evaluation.edits import RECORD_FORMAT, is_edit_record
from ..geometry import Grid
from ..structures.label_maps import TissueLegend
from .hdf5_schema import APPROVAL, FORMAT_NAME, FORMAT_VERSION, TARGET_MASK, TISSUE_LABELS

logger = logging.getLogger(__name__)



def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _plain(value: Any) -> Any:
    """An HDF5 attribute value as plain Python (str, bool, int, float, lists of them)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.dtype.kind in "OSU" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class CTVDataset:
    """Read-only access to a training set written by ``ctv dataset build``.

    Parameters
    ----------
    path
        The ``.h5`` file. It is checked (format and version) on construction and then opened
        again lazily, once per process, on first read.

    Raises
    ------
    DatasetError
        The file does not exist, is not HDF5, or is not a ctv-dataset of a version this
        reader knows.
    """

    def __init__(self, path: str | Path):
        self._path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        with self._open() as h5:
            attrs = h5.attrs
            fmt = _text(attrs.get("format", ""))
            if fmt != FORMAT_NAME or "cases" not in h5:
                raise DatasetError(
                    f"'{self._path}' is an HDF5 file but not a CTV training set (format '{fmt or 'none'}'). "
                    "Give a file written by 'ctv dataset build'."
                )
            version = int(attrs.get("format_version", -1))
            if version != FORMAT_VERSION:
                raise DatasetError(
                    f"'{self._path}' is ctv-dataset format version {version}; this ctv_core reads version "
                    f"{FORMAT_VERSION}. Rebuild it with this version's 'ctv dataset build'."
                )
            self._root_attrs = {k: _plain(v) for k, v in attrs.items()}
            self._case_ids = tuple(sorted(h5["cases"].keys()))
            self._patient_keys = {c: _text(h5["cases"][c].attrs["patient_key"]) for c in self._case_ids}

    # --- opening -----------------------------------------------------------------------------

    def _open(self) -> h5py.File:
        if not self._path.is_file():
            raise DatasetError(f"'{self._path}' does not exist. Give the .h5 file written by 'ctv dataset build'.")
        try:
            return h5py.File(self._path, "r", locking=False)
        except OSError as exc:
            raise DatasetError(
                f"'{self._path}' cannot be opened as HDF5 ({exc}). The file is damaged or not a dataset; "
                "rebuild it with 'ctv dataset build'."
            ) from exc

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            # A handle inherited through fork belongs to the parent's HDF5 state: drop it, open ours.
            self._file = self._open()
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        """Close this process's handle (reads reopen it)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None

    def __enter__(self) -> CTVDataset:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    # --- what is in the file ----------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes (format, version, created, target pattern, …) as plain Python values."""
        return dict(self._root_attrs)

    @property
    def case_ids(self) -> tuple[str, ...]:
        """Case ids in sorted order."""
        return self._case_ids

    def __len__(self) -> int:
        return len(self._case_ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._case_ids)

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._patient_keys

    def patient_key(self, case_id: str) -> str:
        """The case's patient key: cases of one patient share it (split folds by it)."""
        self._check_case(case_id)
        return self._patient_keys[case_id]

    def patients(self) -> dict[str, list[str]]:
        """Patient key -> case ids of that patient."""
        out: dict[str, list[str]] = {}
        for case_id, key in self._patient_keys.items():
            out.setdefault(key, []).append(case_id)
        return out

    def _check_case(self, case_id: str) -> None:
        if case_id not in self._patient_keys:
            some = ", ".join(self._case_ids[:5]) + (", …" if len(self._case_ids) > 5 else "")
            raise DatasetError(f"No case '{case_id}' in '{self._path}'. Its cases are: {some or '(none)'}.")

    def _group(self, case_id: str) -> h5py.Group:
        self._check_case(case_id)
        return self._h5()["cases"][case_id]

    def mask_names(self, case_id: str) -> tuple[str, ...]:
        """Stored masks of a case: ``"target"`` and the extra ROIs found for it."""
        return tuple(sorted(self._group(case_id)["masks"].keys()))

    def case_attrs(self, case_id: str) -> dict[str, Any]:
        """All attributes of a case (geometry, ROI name, patient key, provenance) as plain values."""
        return {k: _plain(v) for k, v in self._group(case_id).attrs.items()}

    def approval(self, case_id: str) -> dict[str, Any] | None:
        """The edit record of the approval a case's target comes from (see :mod:`.hdf5_schema`); None for a case
        not built from an approved contour.

        Raises
        ------
        DatasetError
            The attribute is not JSON or not an edit record (a damaged or hand-edited file).
        """
        value = self._group(case_id).attrs.get(APPROVAL)
        if value is None:
            return None
        try:
            record = json.loads(_text(value))
        except ValueError as exc:
            raise DatasetError(f"Case '{case_id}' of '{self._path}' has an approval that is not JSON ({exc}); rebuild "
                               "the file with 'ctv dataset build'.") from exc
        if not is_edit_record(record):
            raise DatasetError(f"Case '{case_id}' of '{self._path}' has an approval that is not an edit record "
                               f"({RECORD_FORMAT}); rebuild the file with 'ctv dataset build'.")
        return record

    def grid(self, case_id: str) -> Grid:
        """The case's CT grid (size (i, j, k), spacing mm, origin and direction in LPS)."""
        group = self._group(case_id)
        k, j, i = group["ct"].shape
        return Grid(
            size=(int(i), int(j), int(k)),
            spacing=tuple(float(v) for v in group.attrs["spacing"]),
            origin=tuple(float(v) for v in group.attrs["origin"]),
            direction=tuple(float(v) for v in group.attrs["direction"]),
        )

    # --- arrays and images ------------------------------------------------------------------

    def read_ct(self, case_id: str, region: tuple[slice, ...] | None = None) -> np.ndarray:
        """CT in HU, int16 ``[k, j, i]``; ``region`` (a tuple of slices in k, j, i) reads a patch only."""
        data = self._group(case_id)["ct"]
        return data[...] if region is None else data[region]

    def read_mask(self, case_id: str, name: str = TARGET_MASK, region: tuple[slice, ...] | None = None) -> np.ndarray:
        """A mask, uint8 0/1 ``[k, j, i]`` on the CT grid; ``region`` as in ``read_ct``."""
        masks = self._group(case_id)["masks"]
        if name not in masks:
            raise DatasetError(
                f"Case '{case_id}' has no mask '{name}'; it has {', '.join(sorted(masks.keys()))}. "
                "Extra ROIs are stored only where the structure set had them (see extra_rois_missing)."
            )
        data = masks[name]
        return data[...] if region is None else data[region]

    @property
    def tissue_legend(self) -> TissueLegend | None:
        """The legend of the cases' tissue label maps; None when the file has none."""
        text = self._root_attrs.get("tissue_legend")
        if text is None:
            return None
        try:
            return TissueLegend.from_json(text)
        except ValueError as exc:
            raise DatasetError(f"'{self._path}' has a damaged tissue legend ({exc}); rebuild it with "
                               "'ctv dataset build --tissue-labels'.") from exc

    def read_tissue_labels(self, case_id: str) -> np.ndarray:
        """The case's tissue label map, uint8 ``[k, j, i]`` on the CT grid (numbered by :attr:`tissue_legend`)."""
        group = self._group(case_id)
        if TISSUE_LABELS not in group or self.tissue_legend is None:
            raise DatasetError(f"Case '{case_id}' of '{self._path}' has no tissue label map. Build the dataset with "
                               "'ctv dataset build --tissue-labels' from phantoms (ctv phantom writes the maps).")
        return group[TISSUE_LABELS][...]

    def image(self, case_id: str) -> sitk.Image:
        """The CT as a SimpleITK image in HU (int16) on its stored geometry (LPS)."""
        return self.grid(case_id).image(self.read_ct(case_id))

    def mask(self, case_id: str, name: str = TARGET_MASK) -> sitk.Image:
        """A mask as a uint8 SimpleITK image on the CT's grid."""
        return self.grid(case_id).image(self.read_mask(case_id, name))

    def skipped(self) -> list[dict[str, str]]:
        """Structure sets the build passed over: ``source``, ``category``, ``reason``."""
        table = self._h5()["skipped"][...]
        return [{name: _text(row[name]) for name in table.dtype.names} for row in table]

    # --- summary ----------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """A summary of the dataset, from attributes only (no voxel data is read).

        Keys: ``path``, ``format_version``, ``created``, ``ctv_core_version``,
        ``target_pattern``, ``target_aliases``, ``extra_rois``, ``deidentified``, ``tissue_labels``
        (whether the cases carry tissue label maps), ``cases``,
        ``patients``, ``size_min`` / ``size_max`` (voxels, i, j, k), ``spacing_min`` /
        ``spacing_max`` (mm, i, j, k), ``roi_volumes_cc`` ({mask name: {count, mean, min, max}}),
        ``extra_rois_missing`` ({name: number of cases}), ``cases_with_dropped_contours`` (cases stored
        without some damaged contours), ``skipped`` (count),
        ``skipped_by_category`` ({category: count}), ``skipped_cases`` (list of rows) and
        ``case_list`` (per case: id, patient key, size, spacing, ROI name, volumes in cc, dropped contours).
        """
        h5 = self._h5()
        sizes, spacings, volumes, case_list = [], [], {}, []
        damaged = 0
        missing: Counter = Counter()
        for case_id in self._case_ids:
            group = h5["cases"][case_id]
            k, j, i = group["ct"].shape
            size = [int(i), int(j), int(k)]
            spacing = [float(v) for v in group.attrs["spacing"]]
            sizes.append(size)
            spacings.append(spacing)
            case_volumes = {}
            for name, data in group["masks"].items():
                case_volumes[name] = float(data.attrs["volume_cc"])
                volumes.setdefault(name, []).append(case_volumes[name])
            missing.update(_plain(group.attrs.get("extra_rois_missing", np.zeros(0, dtype=object))))
            dropped = json.loads(_text(group.attrs.get("dropped_contours", "{}")))
            if dropped:
                damaged += 1
            case_list.append({
                "case_id": case_id, "patient_key": self._patient_keys[case_id], "size": size, "spacing": spacing,
                "roi_name": _text(group.attrs["roi_name"]), "volumes_cc": case_volumes, "dropped_contours": dropped,
            })
        skipped = self.skipped()
        attrs = self._root_attrs
        return {
            "path": str(self._path),
            "format_version": int(attrs["format_version"]),
            "created": attrs.get("created", ""),
            "ctv_core_version": attrs.get("ctv_core_version", ""),
            "target_pattern": attrs.get("target_pattern", ""),
            "target_aliases": list(attrs.get("target_aliases", [])),
            "extra_rois": json.loads(attrs.get("extra_rois", "{}")),
            "deidentified": bool(attrs.get("deidentified", False)),
            "tissue_labels": "tissue_legend" in attrs,
            "cases": len(self._case_ids),
            "patients": len(set(self._patient_keys.values())),
            "size_min": np.min(sizes, axis=0).tolist() if sizes else None,
            "size_max": np.max(sizes, axis=0).tolist() if sizes else None,
            "spacing_min": np.min(spacings, axis=0).tolist() if spacings else None,
            "spacing_max": np.max(spacings, axis=0).tolist() if spacings else None,
            "roi_volumes_cc": {
                name: {"count": len(v), "mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
                for name, v in sorted(volumes.items(), key=lambda item: (item[0] != TARGET_MASK, item[0]))
            },
            "extra_rois_missing": dict(sorted(missing.items())),
            "cases_with_dropped_contours": damaged,
            "skipped": len(skipped),
            "skipped_by_category": dict(Counter(row["category"] for row in skipped).most_common()),
            "skipped_cases": skipped,
            "case_list": case_list,
        }
