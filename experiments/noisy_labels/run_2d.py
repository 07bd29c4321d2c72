"""The method's own experiment (2D): JSRT, baseline / QAM / QAM+OCM x label noise x seeds, one command.

Usage::

    python experiments/noisy_labels/run_2d.py [--config configs/noisy_labels_2d.json] --work DIR
        [--shard K/N] [--first PATTERN]... [--data JSRT256_DIR] [--results DIR] [--report-only]

Every run (method, noise fraction, noise range, seed) trains a 2D U-Net (``unet2d.py``) on
the seeded 165-case training split with its labels corrupted at 256 x 256 by
:func:`ctv_core.training.label_noise.simulate_label_noise` (the same noisy labels for the three
methods at one seed), through the trainer's own pieces (:func:`ctv_core.training.step.train_step`,
the QAM/OCM weighting of :mod:`ctv_core.training.quality`, ``RunLog``'s ``samples.csv``), and
scores Dice per structure on the 82 clean test labels at 256 x 256 (logits upsampled
bilinearly). Runs go to ``--work`` (outside the repository: they are derived from JSRT); the
results files (``results.json``, ``results.md``, the plots) to ``--results``
(default: this folder). Finished runs are skipped, and a run in progress writes ``resume.pt``
every ``model.checkpoint_every`` steps and continues from it, so the command resumes a grid
losing at most that many steps of each interrupted run; a resumed run's result is the one a
straight run gives, bit for bit on the CPU.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import METHODS, REPO, RESUME, command, finished_results, method_quality, run_grid, start  # noqa: E402
from jsrt import STRUCTURES, downsample, load_jsrt, split  # noqa: E402
from report import weight_separation, write_report_2d  # noqa: E402
from unet2d import UNet2D  # noqa: E402

from ctv_core.evaluation.metrics import dice  # noqa: E402
from ctv_core.model.runtime import select_device  # noqa: E402
from ctv_core.strict_config import is_int, is_number  # noqa: E402
from ctv_core.errors import TrainingError  # noqa: E402
from ctv_core.training.checkpoints import (NETWORK, load_checkpoint, restore_modules, restore_optimizers,  # noqa: E402
                                           rng_state, save_checkpoint, set_rng_state)
from ctv_core.training.config import OptimisationConfig  # noqa: E402
from ctv_core.training.label_noise import simulate_label_noise  # noqa: E402
from ctv_core.training.objective import DeepSupervisionObjective  # noqa: E402
from ctv_core.training.quality import build_weighting  # noqa: E402
from ctv_core.training.quality_config import QualityConfig  # noqa: E402
from ctv_core.training.run_folder import RunFolder, RunLog, write_json  # noqa: E402
from ctv_core.training.step import Trainables, train_step  # noqa: E402

DEFAULT_CONFIG = REPO / "configs" / "noisy_labels_2d.json"


@dataclass(frozen=True)
class Data2D:
    """The JSRT cases: ``root`` (relative to the repository), training size, split seed, image size."""

    root: str = "../shared/data/jsrt256"
    image_size: int = 128
    train_cases: int = 165
    split_seed: int = 2019
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.image_size not in (64, 128, 256):
            raise ValueError(f"data.image_size must be 256 (the method), 128 or 64, not {self.image_size!r}")
        if not is_int(self.train_cases) or self.train_cases < 2:
            raise ValueError(f"data.train_cases must be an integer >= 2, not {self.train_cases!r}")
        if self.limit is not None and (not is_int(self.limit) or self.limit <= self.train_cases):
            raise ValueError(f"data.limit must be null or more than data.train_cases, not {self.limit!r}")


def parse_range(text: str) -> tuple[int, int]:
    """``"5-13"`` -> ``(5, 13)`` pixels."""
    try:
        low, high = (int(v) for v in str(text).split("-"))
    except ValueError as exc:
        raise ValueError(f"a noise range is 'LOW-HIGH' in pixels (e.g. '5-13'), not {text!r}") from exc
    if not 0 <= low <= high:
        raise ValueError(f"a noise range needs 0 <= LOW <= HIGH, not {text!r}")
    return low, high


@dataclass(frozen=True)
class Grid2D:
    """The runs: methods x (clean, and every fraction x range) x seeds.

    ``replicated`` (optional) names the noise settings that run at every seed, most important
    first, as the runs' folders name them (``"clean"``, ``"75pct_5-13px"``); the other settings
    then run at the first seed only. Runs are ordered seed by seed, the replicated settings first,
    so a grid stopped early has its most important comparisons.
    """

    methods: tuple[str, ...] = ("baseline", "qam", "qam+ocm")
    fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    ranges: tuple[str, ...] = ("1-8", "5-13")
    clean: bool = True
    seeds: tuple[int, ...] = (0, 1, 2)
    replicated: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"grid.methods must be among {', '.join(METHODS)}, not {list(self.methods)!r}")
        if any(not is_number(f) or not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"grid.fractions must be within (0, 1], not {list(self.fractions)!r}")
        for text in self.ranges:
            parse_range(text)
        if not self.seeds or any(not is_int(s) or s < 0 for s in self.seeds):
            raise ValueError(f"grid.seeds must be integers >= 0, not {list(self.seeds)!r}")
        if self.replicated is not None:
            known = [noise_name(f, r) for f, r in self.noise_settings()]
            wrong = [name for name in self.replicated if name not in known]
            if wrong or not self.replicated or len(set(self.replicated)) != len(self.replicated):
                raise ValueError(f"grid.replicated must name distinct settings of the grid ({', '.join(known)}), "
                                 f"not {list(self.replicated)!r}")

    def noise_settings(self) -> list[tuple[float, str | None]]:
        return ([(0.0, None)] if self.clean else []) + [(f, r) for r in self.ranges for f in self.fractions]

    def runs(self) -> list[tuple[int, float, str | None]]:
        """``(seed, fraction, range)`` of every run's data, in the order the grid runs them."""
        settings = self.noise_settings()
        if self.replicated is None:
            return [(s, f, r) for s in self.seeds for f, r in settings]
        by_name = {noise_name(f, r): (f, r) for f, r in settings}
        first = [by_name[name] for name in self.replicated]
        first_seed = first + [setting for setting in settings if setting not in first]
        return [(self.seeds[0], f, r) for f, r in first_seed] + [(s, f, r) for s in self.seeds[1:] for f, r in first]


@dataclass(frozen=True)
class Model2D:
    """The U-Net's widths (finest first), the batch size, and every how many steps a run logs, adds a
    point to its memorisation curve (``None``: no curve) and writes its resume checkpoint."""

    widths: tuple[int, ...] = (8, 16, 32, 64)
    batch_size: int = 16
    log_every: int = 10
    curve_every: int | None = None
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        if not self.widths or any(not is_int(w) or w < 1 for w in self.widths):
            raise ValueError(f"model.widths must be positive integers, not {list(self.widths)!r}")
        if not is_int(self.batch_size) or self.batch_size < 2:
            raise ValueError(f"model.batch_size must be an integer >= 2, not {self.batch_size!r}")
        if self.curve_every is not None and (not is_int(self.curve_every) or self.curve_every < 1):
            raise ValueError(f"model.curve_every must be null or a positive integer, not {self.curve_every!r}")
        if not is_int(self.checkpoint_every) or self.checkpoint_every < 1:
            raise ValueError(f"model.checkpoint_every must be a positive integer, not {self.checkpoint_every!r}")


@dataclass(frozen=True)
class Experiment2D:
    """``configs/noisy_labels_2d.json``: data, grid, model, optimisation, quality (the QAM), threads, device.

    The sections ``optimisation`` and ``quality`` are the training configuration's own
    (:class:`~ctv_core.training.config.OptimisationConfig`, :class:`QualityConfig`); the
    method of each run switches the QAM and the OCM on or off.
    """

    data: Data2D = field(default_factory=Data2D)
    grid: Grid2D = field(default_factory=Grid2D)
    model: Model2D = field(default_factory=Model2D)
    optimisation: OptimisationConfig = field(default_factory=OptimisationConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    threads: int = 1
    device: str = "cpu"


@dataclass(frozen=True)
class RunSpec:
    method: str
    fraction: float
    noise_range: str | None
    seed: int


def noise_name(fraction: float, noise_range: str | None) -> str:
    """A noise setting as folders and ``grid.replicated`` name it: ``clean`` or ``75pct_5-13px``."""
    return "clean" if noise_range is None else f"{int(round(fraction * 100))}pct_{noise_range}px"


def run_name(spec: RunSpec) -> str:
    return f"{spec.method}/{noise_name(spec.fraction, spec.noise_range)}/seed{spec.seed}"


class Jsrt2D:
    """The split and the arrays every run uses: training images and clean labels at 256, test arrays."""

    def __init__(self, config: Experiment2D, root: Path, device: torch.device) -> None:
        data = load_jsrt(root, config.data.limit)
        train, test = split(data.case_ids, config.data.train_cases, config.data.split_seed)
        index = {c: i for i, c in enumerate(data.case_ids)}
        self.factor = 256 // config.data.image_size
        self.train_ids, self.test_ids = train, test
        self.train_labels_256 = {c: data.labels[index[c]] for c in train}
        self.device = device
        self.train_images = torch.from_numpy(downsample(data.images[[index[c] for c in train]], self.factor)).to(device)
        self.test_images = torch.from_numpy(downsample(data.images[[index[c] for c in test]], self.factor)).to(device)
        self.test_labels_256 = data.labels[[index[c] for c in test]]


def batch_indices(seed: int, step: int, batch: int, count: int) -> list[int]:
    """Training cases of a step: epochs of seeded permutations, a pure function of (seed, global sample index)."""
    out = []
    for g in range(step * batch, (step + 1) * batch):
        epoch, place = divmod(g, count)
        out.append(int(np.random.default_rng([seed, 0x2D, epoch]).permutation(count)[place]))
    return out


def build_training(config: Experiment2D, spec: RunSpec, dev: torch.device):
    """The seeded network, the trainables (network, QAM where the method has one, optimisers), the
    sample weighting and the objective of one run: ``(network, trainables, weighting, objective)``."""
    torch.manual_seed(spec.seed)
    network = UNet2D(1, len(STRUCTURES), config.model.widths).to(dev)
    if dev.type == "cpu":
        network.use_channels_last()
    weighting = build_weighting(method_quality(config.quality, spec.method), 1 + len(STRUCTURES), 2, None, dev)
    opt = config.optimisation
    trainables = Trainables(
        modules={NETWORK: network, **weighting.modules},
        optimizers={NETWORK: torch.optim.Adam(network.parameters(), lr=opt.learning_rate,
                                              weight_decay=opt.weight_decay), **weighting.optimizers},
        scaler=torch.amp.GradScaler("cuda", enabled=dev.type == "cuda"), forward=network)
    objective = DeepSupervisionObjective((1.0,), opt.bce_weight, opt.dice_weight, opt.dice_smooth)
    return network, trainables, weighting, objective


def train_run(config: Experiment2D, data: Jsrt2D, spec: RunSpec, folder: Path) -> dict[str, Any]:
    """Train one run and score it on the clean test labels; returns its ``result.json`` content."""
    if spec.noise_range is None:
        labels, record = {c: mask.copy() for c, mask in data.train_labels_256.items()}, {}
    else:
        labels, record = simulate_label_noise(data.train_labels_256, spec.fraction, parse_range(spec.noise_range),
                                              spec.seed)
    dev = data.device
    targets = torch.from_numpy(
        (downsample(np.stack([labels[c] for c in data.train_ids]), data.factor) >= 0.5).astype(np.float32)).to(dev)
    network, trainables, weighting, objective = build_training(config, spec, dev)
    opt = config.optimisation
    run = RunFolder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    identity = run_identity(config, spec)
    first_step, curve = resume_training(folder / RESUME, trainables, identity)
    log = RunLog(run, first_step, True, tensorboard=False)
    network.train()
    try:
        for step in range(first_step, opt.steps):
            picked = batch_indices(spec.seed, step, config.model.batch_size, len(data.train_ids))
            case_ids = [data.train_ids[i] for i in picked]
            result = train_step(trainables, objective, weighting, data.train_images[picked], targets[picked],
                                case_ids, learning_rates={NETWORK: opt.learning_rate_at(step)}, step=step)
            log.samples(step + 1, case_ids, result)
            if (step + 1) % config.model.log_every == 0 or step + 1 == opt.steps:
                log.scalars(step + 1, {"loss": result.loss, "dice_loss": result.parts["dice"]})
            every = config.model.curve_every
            if every and ((step + 1) % every == 0 or step + 1 == opt.steps):
                curve.append(curve_point(network, data, targets, step + 1))
                write_json(folder / "curve.json", curve)  # readable while the run goes on
                network.train()
            if (step + 1) % config.model.checkpoint_every == 0 or step + 1 == opt.steps:
                save_checkpoint(folder / RESUME, step=step + 1, modules=trainables.modules,
                                optimizers=trainables.optimizers, scaler=trainables.scaler.state_dict(),
                                rng=rng_state(), curve=curve, run=identity)
    finally:
        log.close()
    scores = evaluate(network, data)
    noise = {case: [[list(STRUCTURES)[c.structure], c.operation, c.distance] for c in changes]
             for case, changes in record.items()}
    row = {"method": spec.method, "noise_fraction": spec.fraction, "noise_range": spec.noise_range,
           "seed": spec.seed, "dice": scores, "mean_dice": float(np.mean(list(scores.values())))}
    return {"row": row, "curve": curve, "steps": opt.steps, "resumed_from": first_step,
            "batch_size": config.model.batch_size,
            "image_size": 256 // data.factor, "noisy_cases": sorted(record), "noise": noise,
            "weight_separation": weight_separation(folder / "samples.csv", noise)
            if spec.method != "baseline" and record else None}


def run_identity(config: Experiment2D, spec: RunSpec) -> dict[str, Any]:
    """What a resume checkpoint must have been made by: the run and every setting its steps depend on
    (the data, the network, the batch, the optimisation and the run's QAM settings)."""
    return {"name": run_name(spec), "data": asdict(config.data), "widths": list(config.model.widths),
            "batch_size": config.model.batch_size, "optimisation": asdict(config.optimisation),
            "quality": asdict(method_quality(config.quality, spec.method))}


def resume_training(path: Path, trainables: Trainables, identity: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """Restore a run from its resume checkpoint ``path`` when there is one: ``(steps done, curve so far)``.

    Modules, optimisers, the gradient scaler and the RNG states come back as they were after that
    step (batches are a function of the seed and the step), so the run continues as if never
    stopped. A checkpoint made by another run or other settings raises ``TrainingError``.
    """
    if not path.is_file():
        return 0, []
    checkpoint = load_checkpoint(path)
    if checkpoint.get("run") != identity:
        raise TrainingError(f"{path} was written by another run or other settings ({checkpoint.get('run')!r}, "
                            f"this run is {identity!r}); delete it to start that run over.")
    restore_modules(checkpoint, trainables.modules)
    restore_optimizers(checkpoint, trainables.optimizers)
    trainables.scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"])
    return int(checkpoint["step"]), list(checkpoint["curve"])


def evaluate(network: torch.nn.Module, data: Jsrt2D, batch: int = 16) -> dict[str, float]:
    """Mean Dice per structure over the test cases, at 256 x 256 against the clean labels."""
    network.eval()
    per_structure: dict[str, list[float]] = {name: [] for name in STRUCTURES}
    with torch.inference_mode():
        for start in range(0, len(data.test_ids), batch):
            logits = network(data.test_images[start:start + batch])
            if data.factor > 1:
                logits = torch.nn.functional.interpolate(logits, scale_factor=data.factor, mode="bilinear",
                                                         align_corners=False)
            predicted = (logits > 0).cpu().numpy()
            for n, truth in enumerate(data.test_labels_256[start:start + batch]):
                for k, name in enumerate(STRUCTURES):
                    per_structure[name].append(dice(predicted[n, k], truth[k]))
    return {name: float(np.mean(values)) for name, values in per_structure.items()}


def fit_dice(network: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor,
             batch: int = 16) -> dict[str, float]:
    """Mean Dice per structure of the network's masks against ``targets`` (the labels it trains on), at training size."""
    network.eval()
    per_structure: dict[str, list[float]] = {name: [] for name in STRUCTURES}
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            predicted = (network(images[start:start + batch]) > 0).cpu().numpy()
            for n, truth in enumerate(targets[start:start + batch].cpu().numpy() > 0.5):
                for k, name in enumerate(STRUCTURES):
                    per_structure[name].append(dice(predicted[n, k], truth[k]))
    return {name: float(np.mean(values)) for name, values in per_structure.items()}


def curve_point(network: torch.nn.Module, data: Jsrt2D, targets: torch.Tensor, step: int) -> dict[str, Any]:
    """One point of the memorisation curve after ``step`` steps: Dice against the training labels as
    trained on (noisy where the run's noise corrupted them) and against the clean test labels."""
    fit, test = fit_dice(network, data.train_images, targets), evaluate(network, data)
    return {"step": step, "train_fit": fit, "train_fit_mean": float(np.mean(list(fit.values()))),
            "test": test, "test_mean": float(np.mean(list(test.values())))}


def grid_runs(config: Experiment2D) -> list[tuple[str, RunSpec]]:
    specs = [RunSpec(m, f, r, s) for s, f, r in config.grid.runs() for m in config.grid.methods]
    return [(run_name(spec), spec) for spec in specs]


def main(argv: list[str] | None = None) -> int:
    args, config, shard = start(
        __doc__, Experiment2D, DEFAULT_CONFIG, "run folders (outside the repository)",
        "where results.json, results.md and plots go", argv,
        lambda parser: parser.add_argument("--data", type=Path, default=None,
                                           help="the jsrt256 folder (default: data.root)"))
    runs = grid_runs(config)
    if not args.report_only:
        root = args.data or (REPO / config.data.root)
        data = Jsrt2D(config, root, select_device(config.device))
        print(f"JSRT: {len(data.train_ids)} training, {len(data.test_ids)} test cases at "
              f"{256 // data.factor}x{256 // data.factor}; {len(runs)} runs, shard {args.shard}", flush=True)
        run_grid(runs, args.work, shard, lambda spec, folder: train_run(config, data, spec, folder),
                 log=lambda line: print(line, flush=True), first=args.first)
    results = finished_results(args.work, [name for name, _ in runs])
    write_report_2d(results, args.work, args.results, config)
    print(f"{len(results)} of {len(runs)} runs finished; results in {args.results}")
    return 0


if __name__ == "__main__":
    command(main)
