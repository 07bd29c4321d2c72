"""Training cases on the model grid: read from the HDF5 training set, prepared once, kept per process.

Each case goes through :func:`ctv_core.inference.preprocessing.prepare_input`, the very code
prediction uses. Its mask is brought onto the same (cropped, padded) model grid by
:func:`ctv_core.inference.preprocessing.resample_ct` (whole-voxel averaging, then linear
interpolation: the fraction of target under each model voxel) and thresholded at >= 0.5, so a
mask voxel is target when at least half of it is, and the image and the mask are resampled by
the same geometry code.

With appearance randomisation (``synthesis.probability > 0``), each case's tissue label map is
brought onto the model grid as *fractions* (:func:`tissue_fractions`): per tissue class, the
indicator of its labels goes through the same averaging and interpolation as the CT, so each
model voxel holds how much of it each class fills.

Arrays are ``[z, y, x]`` on the LPS-aligned model grid: images float32 normalised to
[-1, 1], masks uint8 0/1, tissue fractions uint8 ``[C, z, y, x]`` (255 = the whole voxel).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_files import atomic_file
from ..errors import TrainingError
from ..geometry import Grid
from ..inference.preprocessing import prepare_input, resample_ct
from ..model.settings import PreprocessingConfig
from ..structures.label_maps import TissueLegend

logger = logging.getLogger(__name__)


def open_dataset(path: str | Path):
    """The read-only HDF5 dataset reader (:class:`ctv_core.dataset.hdf5_reader.CTVDataset`)."""
    from ..dataset.hdf5_reader import CTVDataset

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"The training data '{path}' does not exist; build it with 'ctv dataset build'.")
    return CTVDataset(path)


def dataset_patients(path: str | Path) -> tuple[dict[str, str], dict[str, Any]]:
    """``({case_id: patient_key}, info)`` of the HDF5 training set at ``path`` (info made JSON-ready)."""
    with open_dataset(path) as reader:
        patients = {str(c): str(reader.patient_key(c)) for c in reader.case_ids}
        return patients, json.loads(json.dumps(reader.info(), default=str))


@dataclass
class PreparedCase:
    """One case on the model grid.

    Attributes
    ----------
    image
        float32 ``[z, y, x]``, HU mapped onto [-1, 1] (the network input).
    mask
        uint8 ``[z, y, x]`` target on the same grid.
    grid
        The model grid (LPS-aligned, cropped to the body).
    tissues
        uint8 ``[C, z, y, x]`` tissue fractions (see :func:`tissue_fractions`), or None when
        the training does not synthesise images.
    """

    image: np.ndarray
    mask: np.ndarray
    grid: Grid
    tissues: np.ndarray | None = None
    _foreground: np.ndarray | None = None

    @property
    def foreground(self) -> np.ndarray:
        """Flat indices of the target voxels (computed once)."""
        if self._foreground is None:
            self._foreground = np.flatnonzero(self.mask)
        return self._foreground


def synthesis_classes(legend: TissueLegend) -> tuple[str, ...]:
    """The tissue classes whose fractions a case keeps: the legend's, air excepted (air is the remainder)."""
    return tuple(c for c in legend.classes if c != "air")


def tissue_fractions(labels: np.ndarray, legend: TissueLegend, ct_grid: Grid, grid: Grid) -> np.ndarray:
    """Tissue fractions on the model grid: uint8 ``[C, z, y, x]``, C = :func:`synthesis_classes`.

    ``labels`` is the uint8 ``[k, j, i]`` tissue label map on ``ct_grid``. Each class's
    indicator is averaged and interpolated onto ``grid`` exactly as the CT is
    (:func:`~ctv_core.inference.preprocessing.resample_ct`; nothing beyond the CT), then stored
    as 0..255.
    """
    table = legend.class_table()
    index = table[labels]
    order = {c: n for n, c in enumerate(legend.classes)}
    out = np.zeros((len(synthesis_classes(legend)), *grid.shape), dtype=np.uint8)
    for row, name in enumerate(synthesis_classes(legend)):
        indicator = ct_grid.image((index == order[name]).astype(np.uint8))
        fraction = resample_ct(indicator, grid, outside=0.0)
        np.rint(np.clip(fraction, 0.0, 1.0) * 255.0, out=fraction)
        out[row] = fraction.astype(np.uint8)
    return out


def prepare_case(image, mask, config: PreprocessingConfig, divisor: int,
                 tissue_labels: tuple[np.ndarray, TissueLegend] | None = None) -> PreparedCase:
    """A CT (HU) and its mask (on the CT grid) as network input and target on the model grid; with
    ``tissue_labels`` (the label map on the CT grid and its legend) also the tissue fractions."""
    model_input = prepare_input(image, config, divisor)
    fraction = resample_ct(mask, model_input.grid)  # outside the CT: -1024, i.e. background
    tissues = None
    if tissue_labels is not None:
        tissues = tissue_fractions(tissue_labels[0], tissue_labels[1], Grid.of_image(image), model_input.grid)
    return PreparedCase(image=model_input.array, mask=(fraction >= 0.5).astype(np.uint8), grid=model_input.grid,
                        tissues=tissues)


def _safe_name(case_id: str) -> str:
    digest = hashlib.sha1(case_id.encode()).hexdigest()[:10]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", case_id)[:60] + "-" + digest


class CaseStore:
    """Prepared cases of one HDF5 dataset, read lazily (read-only) and kept per process.

    Parameters
    ----------
    data_path
        The HDF5 dataset.
    preprocessing, divisor
        The model's preprocessing and its network's size divisor.
    roi
        The dataset's mask used as target.
    cache_dir
        Folder of ``.npz`` files (``cache="disk"``), or None to prepare in memory.
    tissues
        Also prepare the tissue fractions (the dataset must hold tissue label maps).

    Notes
    -----
    The HDF5 file is opened on first need in the process that needs it and never shared: a
    pickled store (a DataLoader worker) carries no file handle and no arrays.
    """

    def __init__(self, data_path: str | Path, preprocessing: PreprocessingConfig, divisor: int, roi: str = "target",
                 cache_dir: str | Path | None = None, tissues: bool = False) -> None:
        self.data_path = Path(data_path)
        self.preprocessing = preprocessing
        self.divisor = int(divisor)
        self.roi = roi
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.tissues = bool(tissues)
        self._reader = None
        self._cases: dict[str, PreparedCase] = {}
        self.tissue_classes: tuple[str, ...] = ()
        if self.tissues:
            with open_dataset(self.data_path) as reader:
                legend = reader.tissue_legend
            if legend is None:
                raise TrainingError(
                    f"synthesis.probability > 0 needs tissue label maps, and '{self.data_path}' has none. Build the "
                    "dataset with 'ctv dataset build --tissue-labels' from phantoms (ctv phantom writes the maps), "
                    "or set synthesis.probability to 0.")
            self.tissue_classes = synthesis_classes(legend)
        self._stamp = json.dumps({"preprocessing": _plain(preprocessing), "divisor": self.divisor, "roi": roi,
                                  "data": str(self.data_path.resolve()), "tissues": list(self.tissue_classes)},
                                 sort_keys=True)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"] = None
        state["_cases"] = {}
        return state

    def close(self) -> None:
        """Close the HDF5 file if this process opened it (arrays stay)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _read(self, case_id: str) -> PreparedCase:
        if self._reader is None:
            self._reader = open_dataset(self.data_path)
        try:
            image = self._reader.image(case_id)
            mask = self._reader.mask(case_id, self.roi)
        except KeyError as exc:
            raise TrainingError(f"Case {case_id!r} of '{self.data_path}' has no {self.roi!r} mask or image ({exc}); "
                                "set data.roi to a mask the dataset has.") from exc
        labels = (self._reader.read_tissue_labels(case_id), self._reader.tissue_legend) if self.tissues else None
        case = prepare_case(image, mask, self.preprocessing, self.divisor, labels)
        if not case.mask.any():
            logger.warning("case %s has an empty %s mask on the model grid; its patches are background only",
                           case_id, self.roi)
        return case

    def get(self, case_id: str) -> PreparedCase:
        """The prepared case (from memory, else the disk cache, else the HDF5 file)."""
        case = self._cases.get(case_id)
        if case is not None:
            return case
        path = self.cache_dir / f"{_safe_name(case_id)}.npz" if self.cache_dir is not None else None
        if path is not None and path.is_file():
            case = self._load(path)
        if case is None:
            case = self._read(case_id)
            if path is not None:
                self._save(path, case)
        self._cases[case_id] = case
        return case

    def prepare_all(self, case_ids: Sequence[str], progress: Callable[[int, int], None] | None = None) -> None:
        """Prepare (and cache) every case now, then close the HDF5 file (before worker processes start).

        ``progress(done, total)`` is called after each case.
        """
        for n, case_id in enumerate(case_ids, 1):
            self.get(case_id)
            if progress is not None:
                progress(n, len(case_ids))
        self.close()

    def _save(self, path: Path, case: PreparedCase) -> None:
        with atomic_file(path) as tmp:
            tissues = {} if case.tissues is None else {"tissues": case.tissues}
            with open(tmp, "wb") as handle:
                np.savez(handle, image=case.image, mask=case.mask, size=np.asarray(case.grid.size),
                         spacing=np.asarray(case.grid.spacing), origin=np.asarray(case.grid.origin),
                         direction=np.asarray(case.grid.direction), stamp=np.asarray(self._stamp), **tissues)

    def _load(self, path: Path) -> PreparedCase | None:
        with np.load(path) as data:
            if str(data["stamp"]) != self._stamp:
                return None  # prepared with other settings or data: prepare again
            grid = Grid(size=tuple(int(v) for v in data["size"]), spacing=tuple(float(v) for v in data["spacing"]),
                        origin=tuple(float(v) for v in data["origin"]),
                        direction=tuple(float(v) for v in data["direction"]))
            tissues = data["tissues"] if self.tissues else None
            return PreparedCase(image=data["image"], mask=data["mask"], grid=grid, tissues=tissues)


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(asdict(obj)))
