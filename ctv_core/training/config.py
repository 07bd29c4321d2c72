"""How a network is trained: a frozen configuration, written once to ``RUN_DIR/config.json``.

``TrainingConfig`` groups small dataclasses (data, sampling, augmentation, appearance
synthesis, optimisation, schedule, quality) with the network's architecture (:class:`~ctv_core.model.network_config.NetworkConfig`)
and the model settings (:class:`~ctv_core.model.settings.ModelSettings`). The preprocessing
used for training *is* the package's preprocessing: ``settings`` is copied unchanged into the
exported model package, so training and prediction cannot drift apart.

``from_dict`` and :func:`load_training_config` are strict: an unknown key or a bad value
raises :class:`TrainingError` naming it (no silent fallbacks). Every key may be left out
(its default is used). Patch sizes are ``(z, y, x)`` voxels of the model grid.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import TrainingError
from ..model.settings import ModelSettings
from ..strict_config import from_plain, is_int, is_number, strict_kwargs
from ..model.network_config import NetworkConfig
from .quality_config import QualityConfig
from .schedule_config import ScheduleConfig
from .synthesis_config import SynthesisConfig


CACHE_CHOICES = ("disk", "memory")


@dataclass(frozen=True)
class DataConfig:
    """Which cases train and validate, and how prepared cases are kept.

    Attributes
    ----------
    folds
        Cross-validation folds (patients are split, never cases). 1 trains on every case and
        never validates.
    fold
        The fold held out for validation, 0 .. folds - 1.
    seed
        Seed of the split, of the network's initial weights and of every sample's RNG.
    cache
        ``"disk"``: each case is prepared once (model grid) into ``RUN_DIR/cache/*.npz`` before
        training, and each process (DataLoader workers included) loads what it needs from
        there. ``"memory"``: each process prepares the cases it needs from the HDF5 file and
        keeps them in memory (nothing written; with workers each worker prepares its own).
    num_workers
        DataLoader worker processes (0: samples are made in the training process).
    roi
        The mask of the HDF5 dataset that is the target.
    """

    folds: int = 3
    fold: int = 0
    seed: int = 0
    cache: str = "disk"
    num_workers: int = 0
    roi: str = "target"

    def __post_init__(self) -> None:
        if not is_int(self.folds) or self.folds < 1:
            raise ValueError(f"data.folds must be an integer >= 1, not {self.folds!r}")
        if not is_int(self.fold) or not 0 <= self.fold < self.folds:
            raise ValueError(f"data.fold must be an integer within 0..{self.folds - 1} (folds={self.folds}), "
                             f"not {self.fold!r}")
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"data.seed must be an integer >= 0, not {self.seed!r}")
        if self.cache not in CACHE_CHOICES:
            raise ValueError(f"data.cache must be one of {', '.join(CACHE_CHOICES)}, not {self.cache!r}")
        if not is_int(self.num_workers) or self.num_workers < 0:
            raise ValueError(f"data.num_workers must be an integer >= 0, not {self.num_workers!r}")
        if not isinstance(self.roi, str) or not self.roi:
            raise ValueError(f"data.roi must be a mask name, not {self.roi!r}")


@dataclass(frozen=True)
class SamplingConfig:
    """How training patches are drawn.

    Attributes
    ----------
    patch_zyx
        Patch size (z, y, x) in voxels of the model grid; multiples of the network's divisor.
    batch_size
        Global batch per step: with N processes (torchrun), each takes batch_size / N of it.
    foreground_probability
        Fraction of patches centred on a random target voxel (the rest on a random voxel).
    sync_batch_norm
        With several processes, compute batch-norm statistics over the global batch (torch's
        SyncBatchNorm on CUDA, an all-reduce of the moments on the CPU), so the result does
        not depend on how the batch is split. False: per-process statistics.
    micro_batch
        Samples per forward and backward pass; a step's batch is processed in micro-batches of
        this size and their gradients accumulated before the one optimiser step (memory of a
        micro-batch, the gradient of the whole batch; batch norm sees the micro-batch). None:
        the whole batch at once. With ``quality.enabled`` this is how a 3D network that fits
        only one patch at a time still has its samples weighed against a batch
        (:mod:`ctv_core.training.quality`).
    """

    patch_zyx: tuple[int, int, int] = (48, 128, 128)
    batch_size: int = 2
    foreground_probability: float = 0.33
    sync_batch_norm: bool = True
    micro_batch: int | None = None

    def __post_init__(self) -> None:
        if len(self.patch_zyx) != 3 or any(not is_int(p) or p < 8 for p in self.patch_zyx):
            raise ValueError(f"sampling.patch_zyx must be three integers >= 8 (z, y, x), not {self.patch_zyx!r}")
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"sampling.batch_size must be an integer >= 1, not {self.batch_size!r}")
        if not is_number(self.foreground_probability) or not 0.0 <= self.foreground_probability <= 1.0:
            raise ValueError(
                f"sampling.foreground_probability must be within 0..1, not {self.foreground_probability!r}")
        if not isinstance(self.sync_batch_norm, bool):
            raise ValueError(f"sampling.sync_batch_norm must be true or false, not {self.sync_batch_norm!r}")
        if self.micro_batch is not None and (not is_int(self.micro_batch) or self.micro_batch < 1):
            raise ValueError(f"sampling.micro_batch must be null or an integer >= 1, not {self.micro_batch!r}")


@dataclass(frozen=True)
class AugmentationConfig:
    """The method's augmentation (see :mod:`ctv_core.training.augmentation`); probabilities are per patch.

    Attributes
    ----------
    enabled
        False: patches are cropped and nothing else.
    flip_axes
        Axes (0 = z, 1 = y, 2 = x) that may be mirrored, each with ``flip_probability``.
    flip_probability
        Probability of mirroring along each axis of ``flip_axes``.
    rotation_probability
        Probability of a rotation.
    rotation_deg
        Largest rotation about the z axis (in the axial plane), degrees.
    tilt_deg
        Largest rotation about the y and x axes (small tilts of the axial plane), degrees.
    translation_voxels
        Largest shift along each axis, voxels of the model grid (uniform integer).
    noise_variance
        Variance of the Gaussian noise added to the normalised image.
    noise_probability
        Probability of adding noise.
    intensity_scale
        The normalised image is multiplied by U(low, high).
    intensity_probability
        Probability of intensity scaling.
    hu_offset, hu_offset_probability
        Largest CT-number offset (HU) added to a whole patch, as a miscalibrated scanner shifts
        it, and the probability of an offset; 0 (the default, the method's) adds none.
    """

    enabled: bool = True
    flip_axes: tuple[int, ...] = (0, 1, 2)
    flip_probability: float = 0.5
    rotation_probability: float = 0.5
    rotation_deg: float = 10.0
    tilt_deg: float = 5.0
    translation_voxels: int = 8
    noise_variance: float = 0.001
    noise_probability: float = 0.5
    intensity_scale: tuple[float, float] = (0.9, 1.1)
    intensity_probability: float = 0.5
    hu_offset: float = 0.0
    hu_offset_probability: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"augmentation.enabled must be true or false, not {self.enabled!r}")
        if any(a not in (0, 1, 2) for a in self.flip_axes) or len(set(self.flip_axes)) != len(self.flip_axes):
            raise ValueError(f"augmentation.flip_axes must be distinct axes among 0 (z), 1 (y), 2 (x), "
                             f"not {self.flip_axes!r}")
        for name in ("flip_probability", "rotation_probability", "noise_probability", "intensity_probability",
                     "hu_offset_probability"):
            value = getattr(self, name)
            if not is_number(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"augmentation.{name} must be within 0..1, not {value!r}")
        for name, high, unit in (("rotation_deg", 45, "degrees"), ("tilt_deg", 45, "degrees"), ("hu_offset", 500, "HU")):
            value = getattr(self, name)
            if not is_number(value) or not 0.0 <= value <= high:
                raise ValueError(f"augmentation.{name} must be within 0..{high:g} {unit}, not {value!r}")
        if not is_int(self.translation_voxels) or self.translation_voxels < 0:
            raise ValueError(
                f"augmentation.translation_voxels must be an integer >= 0, not {self.translation_voxels!r}")
        if not is_number(self.noise_variance) or self.noise_variance < 0:
            raise ValueError(f"augmentation.noise_variance must be >= 0, not {self.noise_variance!r}")
        low_high = self.intensity_scale
        if len(low_high) != 2 or not all(is_number(v) for v in low_high) or not 0 < low_high[0] <= low_high[1]:
            raise ValueError(f"augmentation.intensity_scale must be (low, high) with 0 < low <= high, "
                             f"not {low_high!r}")


LEARNING_RATE_DECAYS = ("constant", "poly", "step")


@dataclass(frozen=True)
class OptimisationConfig:
    """Adam and the loss.

    Attributes
    ----------
    learning_rate
        Adam's (initial) learning rate.
    learning_rate_decay
        ``"constant"`` (the method's) or ``"poly"``: step s of S (counted from 0) uses
        ``learning_rate * (1 - s / S) ** 0.9``, nnU-Net's schedule, which settles the weights
        at the end of a short run; or ``"step"``: ``learning_rate * step_decay_factor ** (s //
        step_decay_every)``, a staircase (the schedule of the public code the noisy-label
        experiment's GPU setting follows). A function of the step alone, so a resumed run continues
        it exactly (changing ``steps`` on resume stretches the rest of a poly schedule).
    step_decay_every, step_decay_factor
        The staircase of ``"step"``: every ``step_decay_every`` optimiser steps the learning rate
        is multiplied by ``step_decay_factor`` (in (0, 1]). Unused by the other decays.
    weight_decay
        Adam's L2 weight decay.
    steps
        Optimiser steps of the whole run (a resumed run continues up to this).
    bce_weight, dice_weight
        Loss = bce_weight * BCE + dice_weight * soft Dice loss, per pass.
    pass_weights
        Weight of each recurrent pass's loss (deep supervision), first pass first; None gives
        0.5 to every earlier pass and 1 to the last.
    dice_smooth
        Added to the numerator and denominator of the soft Dice (patches without target).
    initial_weights
        A model package (folder) whose weights start the run instead of a seeded random
        initialisation (fine-tuning; its network must be the run's). None: random.
    """

    learning_rate: float = 1e-4
    learning_rate_decay: str = "constant"
    step_decay_every: int = 1000
    step_decay_factor: float = 0.95
    weight_decay: float = 0.0
    steps: int = 20000
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    pass_weights: tuple[float, ...] | None = None
    dice_smooth: float = 1.0
    initial_weights: str | None = None

    def __post_init__(self) -> None:
        if not is_number(self.learning_rate) or not 0 < self.learning_rate < 1:
            raise ValueError(f"optimisation.learning_rate must be within (0, 1), not {self.learning_rate!r}")
        if self.learning_rate_decay not in LEARNING_RATE_DECAYS:
            raise ValueError(f"optimisation.learning_rate_decay must be one of {', '.join(LEARNING_RATE_DECAYS)}, "
                             f"not {self.learning_rate_decay!r}")
        if not is_int(self.step_decay_every) or self.step_decay_every < 1:
            raise ValueError(f"optimisation.step_decay_every must be an integer >= 1 (optimiser steps), "
                             f"not {self.step_decay_every!r}")
        if not is_number(self.step_decay_factor) or not 0 < self.step_decay_factor <= 1:
            raise ValueError(f"optimisation.step_decay_factor must be within (0, 1], not {self.step_decay_factor!r}")
        for name in ("weight_decay", "bce_weight", "dice_weight", "dice_smooth"):
            value = getattr(self, name)
            if not is_number(value) or value < 0:
                raise ValueError(f"optimisation.{name} must be a number >= 0, not {value!r}")
        if self.bce_weight == 0 and self.dice_weight == 0:
            raise ValueError("optimisation.bce_weight and dice_weight cannot both be 0")
        if not is_int(self.steps) or self.steps < 1:
            raise ValueError(f"optimisation.steps must be an integer >= 1, not {self.steps!r}")
        if self.initial_weights is not None and (not isinstance(self.initial_weights, str) or
                                                 not self.initial_weights):
            raise ValueError(f"optimisation.initial_weights must be a model package folder, not "
                             f"{self.initial_weights!r}")
        if self.pass_weights is not None:
            if (not all(is_number(w) and w >= 0 for w in self.pass_weights) or not self.pass_weights
                    or self.pass_weights[-1] <= 0):
                raise ValueError(f"optimisation.pass_weights must be numbers >= 0 with the last > 0, "
                                 f"not {self.pass_weights!r}")

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0 for the first) of ``steps``."""
        if self.learning_rate_decay == "poly":
            return self.learning_rate * (1.0 - min(step, self.steps) / self.steps) ** 0.9
        if self.learning_rate_decay == "step":
            return self.learning_rate * self.step_decay_factor ** (step // self.step_decay_every)
        return self.learning_rate

    def weights_for(self, passes: int) -> tuple[float, ...]:
        """Loss weight of each of ``passes`` recurrent passes."""
        if self.pass_weights is None:
            return (0.5,) * (passes - 1) + (1.0,)
        return tuple(float(w) for w in self.pass_weights)


#: The plain sections of a training configuration, by key.
_SECTIONS = {"data": DataConfig, "sampling": SamplingConfig, "augmentation": AugmentationConfig,
             "synthesis": SynthesisConfig, "optimisation": OptimisationConfig, "schedule": ScheduleConfig,
             "quality": QualityConfig}

#: Settings that may change when a run is resumed (everything else must match config.json).
RESUMABLE_CHANGES = ("optimisation.steps", "schedule", "data.num_workers", "data.cache")


@dataclass(frozen=True)
class TrainingConfig:
    """Everything a training run needs besides the data file and the run folder."""

    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    optimisation: OptimisationConfig = field(default_factory=OptimisationConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    settings: ModelSettings = field(default_factory=ModelSettings)

    def __post_init__(self) -> None:
        divisor = self.network.divisor
        if any(p % divisor for p in self.sampling.patch_zyx):
            raise ValueError(
                f"sampling.patch_zyx {tuple(self.sampling.patch_zyx)} must be multiples of {divisor} (the network "
                f"has {self.network.depth} levels)")
        if any(int(p) % divisor for p in self.settings.inference.patch_zyx):
            raise ValueError(
                f"settings.inference.patch_zyx {tuple(self.settings.inference.patch_zyx)} must be multiples of "
                f"{divisor} (the network has {self.network.depth} levels)")
        if self.quality.enabled and self.sampling.batch_size < 2:
            raise ValueError(
                "quality.enabled needs sampling.batch_size >= 2: the sample weights are a softmax over the batch, "
                "and a batch of one always weighs 1. For a network that fits one patch at a time, set "
                "sampling.micro_batch to 1 and sampling.batch_size to the number of samples to weigh against each "
                "other (e.g. 8)")
        weights = self.optimisation.pass_weights
        if weights is not None and len(weights) != self.network.passes:
            raise ValueError(f"optimisation.pass_weights has {len(weights)} values but the network makes "
                             f"{self.network.passes} passes; give one weight per pass")

    @property
    def pass_weights(self) -> tuple[float, ...]:
        """Loss weight per recurrent pass, first pass first."""
        return self.optimisation.weights_for(self.network.passes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        data = {f.name: asdict(getattr(self, f.name)) for f in fields(self) if f.name not in ("network", "settings")}
        data["network"] = self.network.to_dict()
        data["settings"] = self.settings.to_dict()
        return json.loads(json.dumps(data))  # tuples -> lists

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """Inverse of :meth:`to_dict`; missing keys take defaults, unknown keys or bad values raise."""
        try:
            strict_kwargs(cls, data, "config")
            parts: dict[str, Any] = {name: from_plain(kind, data.get(name, {}), name)
                                     for name, kind in _SECTIONS.items()}
            parts.update({
                "network": NetworkConfig.from_dict(data.get("network", {})),
                "settings": ModelSettings.from_dict(data.get("settings", {})),
            })
            return cls(**parts)
        except (ValueError, TypeError) as exc:
            raise TrainingError(f"Invalid training configuration: {exc}. Fix that setting in the --config file.") \
                from exc

    def with_fold(self, folds: int | None = None, fold: int | None = None) -> TrainingConfig:
        """A copy with ``data.folds`` / ``data.fold`` replaced (None keeps the value)."""
        try:
            data = replace(self.data, folds=self.data.folds if folds is None else folds,
                           fold=self.data.fold if fold is None else fold)
        except ValueError as exc:
            raise TrainingError(f"Invalid --folds/--fold: {exc}.") from exc
        return replace(self, data=data)

    def with_initial_weights(self, package: str | Path) -> TrainingConfig:
        """A copy starting from the weights of the model package ``package`` (stored as an absolute path)."""
        return replace(self, optimisation=replace(self.optimisation, initial_weights=str(Path(package).resolve())))


def load_training_config(path: str | Path) -> TrainingConfig:
    """Read a training configuration JSON file (strict; see :class:`TrainingConfig`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TrainingError(f"The training configuration '{path}' does not exist; give an existing JSON file.") \
            from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrainingError(f"The training configuration '{path}' is not valid JSON ({exc}); fix the file.") from exc
    try:
        return TrainingConfig.from_dict(data)
    except TrainingError as exc:
        raise TrainingError(f"{path}: {exc}") from exc


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two ``to_dict`` results."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(config_differences(a, b, name + "."))
        elif a != b:
            out.append(name)
    return out
