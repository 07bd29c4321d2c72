"""Training data: cases on the model grid, the cross-validation split, and the patch sampler.

Each case goes through :func:`ctv_core.preprocessing.prepare_input`, the very code prediction
uses. Its mask is brought onto the same (cropped, padded) model grid by
:func:`ctv_core.preprocessing.resample_ct` (whole-voxel averaging, then linear interpolation:
the fraction of target under each model voxel) and thresholded at >= 0.5, so a mask voxel is
target when at least half of it is, and the image and the mask are resampled by the same
geometry code.

Arrays are ``[z, y, x]`` on the LPS-aligned model grid: images float32 normalised to
[-1, 1], masks uint8 0/1.

Sampling: the patch of global sample index ``g`` is a pure function of ``(seed, g)`` (its own
``numpy.random.Generator``): which training case, whether it is centred on a random target
voxel (probability ``foreground_probability``) or on a random voxel, and its augmentation.
Step ``s`` of a run with global batch ``B`` uses samples ``s * B .. s * B + B - 1``; process
``r`` of ``W`` takes the ``r``-th share. Resuming at step ``s`` therefore draws exactly what a
straight run would, whatever the number of workers or processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..atomic_files import atomic_file
from .augmentation import IMAGE_FILL, build_augmentation, region_margin
from ..geometry import Grid
from ..model.settings import PreprocessingConfig
from ..inference.preprocessing import prepare_input, resample_ct
from .config import AugmentationConfig, SamplingConfig, TrainingError

logger = logging.getLogger(__name__)


def open_dataset(path: str | Path):
    """The read-only HDF5 dataset reader (:class:`ctv_core.hdf5_dataset.CTVDataset`)."""
    from ..dataset.hdf5_reader import CTVDataset

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"The training data '{path}' does not exist; build it with 'ctv dataset build'.")
    return CTVDataset(path)


def _close(reader: Any) -> None:
    close = getattr(reader, "close", None)
    if callable(close):
        close()


def describe_dataset(path: str | Path) -> tuple[dict[str, str], dict[str, Any]]:
    """``({case_id: patient_key}, info)`` of the HDF5 dataset at ``path`` (info made JSON-ready)."""
    reader = open_dataset(path)
    try:
        patients = {str(c): str(reader.patient_key(c)) for c in reader.case_ids}
        info = reader.info() if callable(getattr(reader, "info", None)) else {}
        return patients, json.loads(json.dumps(info, default=str))
    finally:
        _close(reader)


# --------------------------------------------------------------------------- the split


def kfold_split(patients: dict[str, str], folds: int, seed: int) -> list[list[str]]:
    """Cases per fold, split by patient: every case of a patient is in the same fold.

    Patients (sorted, then shuffled with ``seed``) are dealt to the folds in turn, so fold
    sizes differ by at most one patient. Raises ``TrainingError`` with fewer patients than
    folds.
    """
    keys = sorted(set(patients.values()))
    if len(keys) < folds:
        raise TrainingError(f"{folds}-fold cross-validation needs at least {folds} patients, the data has "
                            f"{len(keys)}; lower --folds or add patients.")
    order = np.random.default_rng([seed, 0x5B1]).permutation(len(keys))
    fold_of = {keys[i]: n % folds for n, i in enumerate(order)}
    out: list[list[str]] = [[] for _ in range(folds)]
    for case in sorted(patients):
        out[fold_of[patients[case]]].append(case)
    return out


# --------------------------------------------------------------------------- prepared cases


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
    """

    image: np.ndarray
    mask: np.ndarray
    grid: Grid
    _foreground: np.ndarray | None = None

    @property
    def foreground(self) -> np.ndarray:
        """Flat indices of the target voxels (computed once)."""
        if self._foreground is None:
            self._foreground = np.flatnonzero(self.mask)
        return self._foreground


def prepare_case(image, mask, config: PreprocessingConfig, divisor: int) -> PreparedCase:
    """A CT (HU) and its mask (on the CT grid) as network input and target on the model grid."""
    model_input = prepare_input(image, config, divisor)
    fraction = resample_ct(mask, model_input.grid)  # outside the CT: -1024, i.e. background
    return PreparedCase(image=model_input.array, mask=(fraction >= 0.5).astype(np.uint8), grid=model_input.grid)


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

    Notes
    -----
    The HDF5 file is opened on first need in the process that needs it and never shared: a
    pickled store (a DataLoader worker) carries no file handle and no arrays.
    """

    def __init__(self, data_path: str | Path, preprocessing: PreprocessingConfig, divisor: int, roi: str = "target",
                 cache_dir: str | Path | None = None) -> None:
        self.data_path = Path(data_path)
        self.preprocessing = preprocessing
        self.divisor = int(divisor)
        self.roi = roi
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._reader = None
        self._cases: dict[str, PreparedCase] = {}
        self._stamp = json.dumps({"preprocessing": _plain(preprocessing), "divisor": self.divisor, "roi": roi,
                                  "data": str(self.data_path.resolve())}, sort_keys=True)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"] = None
        state["_cases"] = {}
        return state

    def close(self) -> None:
        """Close the HDF5 file if this process opened it (arrays stay)."""
        if self._reader is not None:
            _close(self._reader)
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
        case = prepare_case(image, mask, self.preprocessing, self.divisor)
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

    def prepare_all(self, case_ids: Sequence[str]) -> None:
        """Prepare (and cache) every case now, then close the HDF5 file (before worker processes start)."""
        for case_id in case_ids:
            self.get(case_id)
        self.close()

    def _save(self, path: Path, case: PreparedCase) -> None:
        with atomic_file(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, image=case.image, mask=case.mask, size=np.asarray(case.grid.size),
                         spacing=np.asarray(case.grid.spacing), origin=np.asarray(case.grid.origin),
                         direction=np.asarray(case.grid.direction), stamp=np.asarray(self._stamp))

    def _load(self, path: Path) -> PreparedCase | None:
        with np.load(path) as data:
            if str(data["stamp"]) != self._stamp:
                return None  # prepared with other settings or data: prepare again
            grid = Grid(size=tuple(int(v) for v in data["size"]), spacing=tuple(float(v) for v in data["spacing"]),
                        origin=tuple(float(v) for v in data["origin"]),
                        direction=tuple(float(v) for v in data["direction"]))
            return PreparedCase(image=data["image"], mask=data["mask"], grid=grid)


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(asdict(obj)))


# --------------------------------------------------------------------------- patches


def crop_region(array: np.ndarray, centre: Sequence[int], shape: Sequence[int], fill: float) -> np.ndarray:
    """The ``shape`` region of ``array`` whose central voxel is ``centre`` (``[z, y, x]``); outside is ``fill``."""
    lo = np.asarray(centre) - np.asarray(shape) // 2
    hi = lo + np.asarray(shape)
    out = np.full(tuple(int(s) for s in shape), fill, dtype=array.dtype)
    src_lo, src_hi = np.maximum(lo, 0), np.minimum(hi, array.shape)
    if (src_hi <= src_lo).any():
        return out
    dst_lo = src_lo - lo
    out[tuple(slice(a, a + (b - c)) for a, b, c in zip(dst_lo, src_hi, src_lo))] = \
        array[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))]
    return out


def sample_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The seed of global sample ``index`` of a run seeded ``seed``."""
    return np.random.SeedSequence([int(seed), 0x7A7C, int(index)])


class PatchDataset(Dataset):
    """Training patches indexed by global sample index (see the module docstring).

    ``dataset[g]`` returns ``(image, mask)`` float32 tensors ``[1, z, y, x]`` of
    ``sampling.patch_zyx``. Usable with DataLoader worker processes.
    """

    def __init__(self, store: CaseStore, case_ids: Sequence[str], sampling: SamplingConfig,
                 augmentation: AugmentationConfig, seed: int) -> None:
        if not case_ids:
            raise TrainingError("No training cases: the split left none; use more patients or fewer folds.")
        self.store = store
        self.case_ids = list(case_ids)
        self.patch = tuple(int(p) for p in sampling.patch_zyx)
        self.foreground_probability = float(sampling.foreground_probability)
        self.seed = int(seed)
        self.margin = region_margin(self.patch, augmentation)
        self.region = tuple(p + 2 * m for p, m in zip(self.patch, self.margin))
        self.transform = build_augmentation(self.patch, augmentation)

    def __len__(self) -> int:  # samples are indexed without end; the batch sampler decides how many
        return 2 ** 62

    def sample_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """``(image, mask, case_id)`` numpy arrays ``[z, y, x]`` of global sample ``index``."""
        choose, augment = sample_seed(self.seed, index).spawn(2)
        rng = np.random.default_rng(choose)
        case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
        case = self.store.get(case_id)
        foreground = case.foreground
        if rng.random() < self.foreground_probability and foreground.size:
            centre = np.unravel_index(int(foreground[rng.integers(foreground.size)]), case.mask.shape)
        else:
            centre = tuple(int(rng.integers(n)) for n in case.mask.shape)
        image = crop_region(case.image, centre, self.region, IMAGE_FILL)
        mask = crop_region(case.mask, centre, self.region, 0)
        image, mask = self.transform.set_random_state(augment)(image, mask)
        return image, mask, case_id

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask, _ = self.sample_arrays(int(index))
        return torch.from_numpy(image)[None], torch.from_numpy(mask.astype(np.float32))[None]


class StepBatchSampler(Sampler[list[int]]):
    """Global sample indices of this process for steps ``start_step .. stop_step - 1``.

    Step ``s`` uses global samples ``s * B .. s * B + B - 1``; process ``rank`` of ``world``
    takes ``B / world`` consecutive ones of them.
    """

    def __init__(self, start_step: int, stop_step: int, global_batch: int, rank: int = 0, world: int = 1) -> None:
        if global_batch % world:
            raise TrainingError(f"The batch size {global_batch} cannot be shared by {world} processes; make "
                                f"sampling.batch_size a multiple of the number of processes.")
        self.start, self.stop = int(start_step), int(stop_step)
        self.global_batch, self.rank, self.world = int(global_batch), int(rank), int(world)
        self.local = self.global_batch // self.world

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            first = step * self.global_batch + self.rank * self.local
            yield list(range(first, first + self.local))
