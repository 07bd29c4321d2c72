"""Training patches: which case and where, drawn per global sample index, and the batches of each step.

The patch of global sample index ``g`` is a pure function of ``(seed, g)`` (its own
``numpy.random.Generator``): which training case, whether it is centred on a random target
voxel (probability ``foreground_probability``) or on a random voxel, whether its image is
synthesised from the case's tissue fractions (probability ``synthesis.probability``,
:mod:`.synthesis`) and how, and its augmentation (the method's, on either image).
Step ``s`` of a run with global batch ``B`` uses samples ``s * B .. s * B + B - 1``; process
``r`` of ``W`` takes the ``r``-th share. Resuming at step ``s`` therefore draws exactly what a
straight run would, whatever the number of workers or processes.

A sample is a :class:`Patch` (image, mask, case id); a DataLoader batch of them is a ``Patch``
of stacked tensors ``[B, 1, z, y, x]`` and a list of ``B`` case ids, so per-sample losses and
weights can be logged by case.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import TrainingError
from ..inference.preprocessing import crop
from .augmentation import IMAGE_FILL, build_augmentation, region_margin
from .cases import CaseStore
from .config import AugmentationConfig, SamplingConfig
from .synthesis import build_synthesis
from .synthesis_config import SynthesisConfig


class Patch(NamedTuple):
    """One training sample, or (collated by the DataLoader) a batch of them.

    Attributes
    ----------
    image
        float32 ``[1, z, y, x]`` normalised image (``[B, 1, z, y, x]`` for a batch).
    mask
        float32 0/1 target of the same shape.
    case_id
        The case the patch comes from (a list of ``B`` ids for a batch).
    """

    image: torch.Tensor
    mask: torch.Tensor
    case_id: str | list[str]


def crop_region(array: np.ndarray, centre: Sequence[int], shape: Sequence[int], fill: float) -> np.ndarray:
    """The ``shape`` region of ``array`` whose central voxel is ``centre`` (``[z, y, x]``); outside is ``fill``.

    Axes before the last three (the tissue classes of ``[C, z, y, x]`` fractions) are kept whole.
    """
    lo = np.asarray(centre) - np.asarray(shape) // 2
    whole = array.shape[:-3]
    return crop(array, (*(0,) * len(whole), *lo), (*whole, *(lo + np.asarray(shape))), fill)


def sample_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The seed of global sample ``index`` of a run seeded ``seed``."""
    return np.random.SeedSequence([int(seed), 0x7A7C, int(index)])


class PatchDataset(Dataset):
    """Training patches indexed by global sample index (see the module docstring).

    ``dataset[g]`` returns a :class:`Patch` of ``sampling.patch_zyx``. Usable with DataLoader
    worker processes. With ``synthesis`` enabled the store must prepare tissue fractions.
    """

    def __init__(self, store: CaseStore, case_ids: Sequence[str], sampling: SamplingConfig,
                 augmentation: AugmentationConfig, seed: int, synthesis: SynthesisConfig | None = None) -> None:
        if not case_ids:
            raise TrainingError("No training cases: the split left none; use more patients or fewer folds.")
        self.store = store
        self.case_ids = list(case_ids)
        self.patch = tuple(int(p) for p in sampling.patch_zyx)
        self.foreground_probability = float(sampling.foreground_probability)
        self.seed = int(seed)
        self.margin = region_margin(self.patch, augmentation)
        self.region = tuple(p + 2 * m for p, m in zip(self.patch, self.margin))
        self.transform = build_augmentation(self.patch, augmentation, store.preprocessing.hu_window)
        self.synthesis_probability = 0.0 if synthesis is None else synthesis.probability
        self.synthesis = None
        if self.synthesis_probability > 0:
            if not store.tissues:
                raise TrainingError("Synthesis needs a case store that prepares tissue fractions (tissues=True).")
            self.synthesis = build_synthesis(store.tissue_classes, synthesis, store.preprocessing.spacing_mm,
                                             store.preprocessing.hu_window)

    def __len__(self) -> int:  # samples are indexed without end; the batch sampler decides how many
        return 2 ** 62

    def sample_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """``(image, mask, case_id)`` numpy arrays ``[z, y, x]`` of global sample ``index``."""
        choose, augment, appearance = sample_seed(self.seed, index).spawn(3)
        rng = np.random.default_rng(choose)
        case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
        case = self.store.get(case_id)
        foreground = case.foreground
        if rng.random() < self.foreground_probability and foreground.size:
            centre = np.unravel_index(int(foreground[rng.integers(foreground.size)]), case.mask.shape)
        else:
            centre = tuple(int(rng.integers(n)) for n in case.mask.shape)
        mask = crop_region(case.mask, centre, self.region, 0)
        decide, synthesise = appearance.spawn(2)
        if self.synthesis is not None and np.random.default_rng(decide).random() < self.synthesis_probability:
            tissues = crop_region(case.tissues, centre, self.region, 0)
            image, _ = self.synthesis.set_random_state(synthesise)(tissues, mask)
        else:
            image = crop_region(case.image, centre, self.region, IMAGE_FILL)
        image, mask = self.transform.set_random_state(augment)(image, mask)
        return image, mask, case_id

    def __getitem__(self, index: int) -> Patch:
        image, mask, case_id = self.sample_arrays(int(index))
        return Patch(torch.from_numpy(image)[None], torch.from_numpy(mask.astype(np.float32))[None], case_id)


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
