"""Training the CTV network: ``train(data_path, run_dir, config)``, a small loop over composable pieces.

The pieces, each in its own module: the run folder and its logs (:mod:`.run_folder`), the
cases and patches (:mod:`.cases`, :mod:`.patches`, augmented by :mod:`.augmentation`), the
objective (per-sample losses, then a sample weighting: :mod:`.objective`; learned weights for
noisy labels with ``quality.enabled``: :mod:`.quality`), one optimiser step
(:mod:`.step`), checkpoints of named modules and optimisers (:mod:`.checkpoints`), several
processes (:mod:`.distributed`), validation (:mod:`.validation`). Adam; mixed precision
(autocast + GradScaler) on CUDA only.

Every step's per-sample losses and weights (and the QAM's scores) go to
``RUN_DIR/samples.csv`` with the case ids (:class:`~ctv_core.training.run_folder.RunLog`).

Running ``train`` again on a folder with ``checkpoints/last.pt`` resumes: the modules (the
QAM's too), the optimisers' state, the GradScaler, the step, the RNG states (Python, NumPy, torch) and the
sampler's position are restored. ``last.pt`` is written every ``schedule.checkpoint_every``
steps, every ``schedule.checkpoint_minutes``, at the end, and when the run is stopped by
Ctrl+C or SIGTERM (:mod:`.interrupts`: the step under way is finished, saved, and
:class:`~ctv_core.training.interrupts.TrainingInterrupted` raised), so a resume starts at the
step where the run stopped. Every sample is drawn from its own seed
(:mod:`.patches`), so the patches after a resume are the ones a straight run would have
drawn; on the CPU with ``num_workers=0`` the weights after N + M steps resumed are bitwise
those of a straight run of N + M steps.

Several processes (one per GPU, or CPU processes) through torchrun::

    torchrun --nproc_per_node 4 -m ctv_core train DATA.h5 RUN_DIR --config cfg.json
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr HOST --master_port 29500 \\
        -m ctv_core train DATA.h5 RUN_DIR --config cfg.json

Each process takes its share of every global batch (global sample indices, so the samples are
those of a one-process run); see :mod:`.distributed`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelPackageError, TrainingError
from ..model.package import load_model_package
from ..model.runtime import use_channels_last
from ..model.unet3d import UNet3D
from .cases import CaseStore
from .checkpoints import (NETWORK, load_checkpoint, restore_modules, restore_optimizers, rng_state,
                          save_checkpoint, set_rng_state)
from .config import TrainingConfig
from .distributed import Processes, global_batch_norm, start_processes
from .events import WARM_UP_SKIP, WARM_UP_STEPS, RunSummary, TrainingEvents, changed_settings
from .interrupts import StopRequest, TrainingInterrupted, ignore_stop_in_worker
from .objective import DeepSupervisionObjective, SampleWeighting
from .patches import PatchDataset, StepBatchSampler
from .quality import build_weighting
from .run_folder import RunFolder, RunLog
from .step import StepResult, Trainables, train_step
from .validation import validate

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class TrainResult:
    """What a training run did.

    Attributes
    ----------
    run_dir
        The run folder.
    step
        Optimiser steps done (the configured total when the run completed).
    resumed_from
        Step the run resumed from (0 for a fresh run).
    final_loss
        Training loss of the last step (None when no step was run now).
    best_dice, best_step
        Best mean validation Dice and its step (None without validation).
    last_checkpoint, best_checkpoint
        Paths of ``last.pt`` and ``best.pt`` (None when not written).
    world_size
        Number of processes that trained.
    """

    run_dir: Path
    step: int
    resumed_from: int
    final_loss: float | None
    best_dice: float | None
    best_step: int | None
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    world_size: int = 1


@dataclass
class TrainingState:
    """Where a run stands: the step, the best validation and every validation so far."""

    step: int = 0
    best_dice: float | None = None
    best_step: int | None = None
    validation: dict[str, Any] = field(default_factory=dict)
    saved_step: int = 0
    saved_at: float = field(default_factory=time.monotonic)

    def checkpoint_content(self, config: TrainingConfig) -> dict[str, Any]:
        """The checkpoint entries besides modules and optimisers (scaler and RNG added by the caller)."""
        return {"sampler": {"next_step": self.step, "seed": config.data.seed,
                            "global_batch": config.sampling.batch_size},
                "config": config.to_dict(), "best": {"dice": self.best_dice, "step": self.best_step},
                "validation": self.validation}


def train(data_path: str | Path, run_dir: str | Path, config: TrainingConfig, *,
          events: TrainingEvents | None = None, device: str = "auto",
          weighting: SampleWeighting | None = None) -> TrainResult:
    """Train (or resume training) the network of ``config`` on the HDF5 dataset ``data_path``.

    Parameters
    ----------
    data_path
        HDF5 training set (``ctv dataset build``).
    run_dir
        Run folder (see :mod:`.run_folder`); a folder with ``checkpoints/last.pt`` resumes.
    config
        The configuration; saved to ``RUN_DIR/config.json``.
    events
        Told the start-up summary, the expected time, every step and the progress of caching
        and validation (rank 0; see :class:`~ctv_core.training.events.TrainingEvents`).
    device
        "auto", "cpu" or "cuda" (under torchrun each process takes the GPU of its LOCAL_RANK).
    weighting
        The sample weighting of the loss; None (the default) builds what ``config.quality``
        asks for: the QAM/OCM weighting when enabled, else the batch mean. Its modules and
        optimisers are trained, checkpointed and restored with the network.

    Raises
    ------
    TrainingError
        Bad data, a split or configuration that does not match the run being resumed, a
        non-finite loss. :class:`~ctv_core.training.interrupts.TrainingInterrupted` (a
        ``TrainingError``) after a stop by SIGINT/SIGTERM, once ``last.pt`` holds the last step.
    """
    procs = start_processes(device)
    try:
        if config.quality.enabled and procs.world > 1:
            raise TrainingError("quality.enabled trains on one process only for now (the sample weights are a softmax "
                                "over the batch, which is not yet gathered across processes); train without torchrun "
                                "and use sampling.micro_batch to fit the batch in memory.")
        return _train(Path(data_path), RunFolder(run_dir), config, events, procs, weighting)
    finally:
        procs.stop()


def _trainables(config: TrainingConfig, procs: Processes, checkpoint: dict[str, Any] | None,
                weighting: SampleWeighting | None) -> tuple[Trainables, SampleWeighting]:
    """The network (same seeded initial weights on every rank), the weighting, the optimisers and scaler.

    Everything is restored from ``checkpoint`` when resuming, each module and optimiser by name.
    """
    dev = procs.device
    torch.manual_seed(config.data.seed)
    network: nn.Module = UNet3D(config.network)
    if weighting is None:  # after the network, from the same seeded stream
        weighting = build_weighting(config.quality, config.network.in_channels + config.network.out_channels, 3,
                                    config.sampling.micro_batch, dev)
    modules = {NETWORK: network, **weighting.modules}
    if checkpoint is not None:
        restore_modules(checkpoint, modules)
    elif config.optimisation.initial_weights is not None:
        _load_initial_weights(network, config)
    if procs.world > 1 and config.sampling.sync_batch_norm:
        network = global_batch_norm(network, dev)  # before the optimiser: the swap may make new parameters
    network.to(dev)
    if dev.type == "cpu":
        use_channels_last(network)
    optimisation = config.optimisation
    optimizers = {NETWORK: torch.optim.Adam(network.parameters(), lr=optimisation.learning_rate,
                                            weight_decay=optimisation.weight_decay), **weighting.optimizers}
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda")
    if checkpoint is not None:
        restore_optimizers(checkpoint, optimizers)
        if checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        set_rng_state(checkpoint["rng"])
    forward: nn.Module = network
    if procs.world > 1:
        forward = nn.parallel.DistributedDataParallel(network, device_ids=[dev.index] if dev.type == "cuda" else None)
    return Trainables({**modules, NETWORK: network}, optimizers, scaler, forward), weighting


def _initial_package(config: TrainingConfig):
    """The model package of ``optimisation.initial_weights`` (checked), whose network must be the run's."""
    where = config.optimisation.initial_weights
    try:
        package = load_model_package(where)
    except ModelPackageError as exc:
        raise TrainingError(f"optimisation.initial_weights: {exc}") from exc
    if package.manifest["architecture"] != "unet3d" or package.network_config != config.network:
        raise TrainingError(f"optimisation.initial_weights: the network of '{where}' "
                            f"({package.manifest['network']}) is not the run's ({config.network.to_dict()}); give "
                            "the package's network settings or another package.")
    return package


def _load_initial_weights(network: nn.Module, config: TrainingConfig) -> None:
    """Start from the weights of ``optimisation.initial_weights`` instead of a random initialisation."""
    package = _initial_package(config)
    network.load_state_dict(package.build_network().state_dict())
    logger.info("starting from the weights of %s (%s)", package.model_id, package.sha256[:12])


def _resume_state(run: RunFolder, config: TrainingConfig) -> tuple[TrainingState, dict[str, Any] | None]:
    if not run.resuming:
        return TrainingState(), None
    checkpoint = load_checkpoint(run.last_checkpoint)
    sampler = checkpoint["sampler"]
    if sampler["global_batch"] != config.sampling.batch_size or sampler["seed"] != config.data.seed:
        raise TrainingError(f"The checkpoint {run.last_checkpoint} was made with another batch size or seed; resume "
                            "with its configuration or use a new RUN_DIR.")
    state = TrainingState(step=int(checkpoint["step"]), best_dice=checkpoint["best"]["dice"],
                          best_step=checkpoint["best"]["step"], validation=checkpoint.get("validation", {}),
                          saved_step=int(checkpoint["step"]))
    logger.info("resuming %s at step %d", run.path, state.step)
    return state, checkpoint


def _loader(data_path: Path, run: RunFolder, config: TrainingConfig, split: dict[str, Any], start_step: int,
            procs: Processes, events: TrainingEvents | None) -> tuple[CaseStore, torch.utils.data.DataLoader]:
    """The case store (prepared once when cached on disk) and the loader of this process's batches."""
    steps = config.optimisation.steps
    store = CaseStore(data_path, config.settings.preprocessing, config.network.divisor, config.data.roi,
                      cache_dir=run.cache if config.data.cache == "disk" else None, tissues=config.synthesis.enabled)
    if config.data.cache == "disk" and start_step < steps:
        if procs.main:  # prepare once; the other ranks and the workers read the npz files
            store.prepare_all(split["train"] + split["validation"],
                              progress=events.preparing if events is not None else None)
        procs.barrier()
    dataset = PatchDataset(store, split["train"], config.sampling, config.augmentation, config.data.seed,
                           config.synthesis)
    batches = StepBatchSampler(start_step, steps, config.sampling.batch_size, procs.rank, procs.world)
    store.close()  # no HDF5 handle may be inherited by worker processes
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=config.data.num_workers,
                                         pin_memory=procs.device.type == "cuda",
                                         worker_init_fn=ignore_stop_in_worker if config.data.num_workers else None)
    return store, loader


def _train(data_path: Path, run: RunFolder, config: TrainingConfig, events: TrainingEvents | None,
           procs: Processes, weighting: SampleWeighting | None) -> TrainResult:
    dev = procs.device
    run.check_config(config)
    split = run.resolve_split(data_path, config)
    if config.optimisation.initial_weights is not None and "initial_weights" not in split:
        package = _initial_package(config)  # recorded with the split, so the exported package names its start
        split["initial_weights"] = {"path": str(Path(config.optimisation.initial_weights).resolve()),
                                    "model_id": package.model_id, "fingerprint": package.sha256}
    procs.barrier()  # every rank has read the run folder before rank 0 writes to it
    if procs.main:
        run.start(config, split)
    state, checkpoint = _resume_state(run, config)
    trainables, weighting = _trainables(config, procs, checkpoint, weighting)
    del checkpoint
    start_step, steps = state.step, config.optimisation.steps
    report = events if procs.main else None
    if report is not None:
        report.started(RunSummary(
            train_cases=len(split["train"]), validation_cases=len(split["validation"]), device=str(dev),
            world_size=procs.world, parameters=sum(p.numel() for p in trainables.modules[NETWORK].parameters()),
            start_step=start_step, steps=steps, changed=changed_settings(config)))
    store, loader = _loader(data_path, run, config, split, start_step, procs, report)
    objective = DeepSupervisionObjective(config.pass_weights, config.optimisation.bce_weight,
                                         config.optimisation.dice_weight, config.optimisation.dice_smooth)
    log = RunLog(run, start_step, procs.main)
    if report is not None:
        report.step(start_step, steps, None)
    final_loss = None
    started = timed_from = time.perf_counter()
    stop = StopRequest(lambda name: report.stopping(name, state.step) if report is not None else None)
    stopping = False
    try:
        with stop:
            trainables.forward.train()
            for batch in loader:
                image, mask = batch.image.to(dev, non_blocking=True), batch.mask.to(dev, non_blocking=True)
                result = train_step(trainables, objective, weighting, image, mask, list(batch.case_id),
                                    learning_rates={NETWORK: config.optimisation.learning_rate_at(state.step)},
                                    micro_batch=config.sampling.micro_batch, step=state.step,
                                    resume_from=str(run.last_checkpoint))
                state.step += 1
                final_loss = result.loss
                done = state.step - start_step
                if done == WARM_UP_SKIP:
                    timed_from = time.perf_counter()
                elif done == WARM_UP_SKIP + WARM_UP_STEPS and report is not None:
                    per_step = (time.perf_counter() - timed_from) / WARM_UP_STEPS
                    report.expected(per_step, per_step * (steps - state.step),
                                    _validations_left(state.step, config, bool(split["validation"])))
                if report is not None:
                    report.step(state.step, steps, final_loss)
                stopping = procs.any(stop.requested)
                if not procs.main:
                    if stopping:
                        break
                    continue
                due = state.step % config.schedule.log_every == 0 or state.step == steps
                log.samples(state.step, list(batch.case_id), result, tensorboard=due)
                if due:
                    log.scalars(state.step, _logged_values(result, trainables))
                    logger.info("step %d/%d loss %.4f (%.2f s/step)", state.step, steps, final_loss,
                                (time.perf_counter() - started) / done)
                improved = _validate_if_due(state, trainables, store, split["validation"], config, dev, log, report)
                _checkpoint_if_due(state, trainables, run, config, improved, force=stopping)
                if stopping:
                    break
        if stopping and state.step < steps:
            procs.barrier()
            raise TrainingInterrupted(state.step, run.last_checkpoint)
    finally:
        log.close()
        store.close()
    procs.barrier()
    if procs.main:
        logger.info("training finished at step %d (best validation Dice %s)", state.step,
                    "n/a" if state.best_dice is None else f"{state.best_dice:.4f} at step {state.best_step}")
    return TrainResult(run_dir=run.path, step=state.step, resumed_from=start_step, final_loss=final_loss,
                       best_dice=state.best_dice, best_step=state.best_step,
                       last_checkpoint=run.last_checkpoint if run.last_checkpoint.is_file() else None,
                       best_checkpoint=run.best_checkpoint if run.best_checkpoint.is_file() else None,
                       world_size=procs.world)


def _validations_left(step: int, config: TrainingConfig, validating: bool) -> int:
    """Validations still to come after ``step`` (every ``validate_every`` steps and at the end)."""
    if not validating:
        return 0
    steps, every = config.optimisation.steps, config.schedule.validate_every
    return steps // every - step // every + (1 if steps % every else 0)


def _logged_values(result: StepResult, trainables: Trainables) -> dict[str, float]:
    """The scalars logged for a step: losses (batch means), the network's learning rate, the weights' spread."""
    parts = result.parts
    values = {"loss": result.loss, "bce": parts["bce"], "dice_loss": parts["dice"],
              "lr": trainables.optimizers[NETWORK].param_groups[0]["lr"]}
    values.update({f"loss_{name}": v for name, v in parts.items() if name.startswith("pass")})
    if result.plan.scores is not None:
        weights = result.plan.weights * len(result.plan.weights)
        values.update({"weight_min": float(weights.min()), "weight_max": float(weights.max()),
                       "score_mean": float(result.plan.raw_scores.mean())})
    return values


def _validate_if_due(state: TrainingState, trainables: Trainables, store: CaseStore, cases: list[str],
                     config: TrainingConfig, dev: torch.device, log: RunLog, events: TrainingEvents | None) -> bool:
    """Validate when the schedule says so; True when the mean Dice improved on the best so far."""
    if not cases or not (state.step % config.schedule.validate_every == 0 or state.step == config.optimisation.steps):
        return False
    network = trainables.modules[NETWORK]
    scores, samples = validate(network, store, cases, config, dev,
                               progress=events.validating if events is not None else None)
    mean = float(np.mean(list(scores.values())))
    state.validation[str(state.step)] = {"mean_dice": mean, "dice": scores}
    log.scalars(state.step, {"val_dice": mean, **{f"val_dice/{c}": d for c, d in scores.items()}})
    for case_id, rgb in samples.items():
        log.image(state.step, f"validation/{case_id}", rgb)
    logger.info("step %d validation Dice %.4f over %d cases", state.step, mean, len(scores))
    trainables.forward.train()
    if state.best_dice is None or mean > state.best_dice:
        state.best_dice, state.best_step = mean, state.step
        return True
    return False


def _checkpoint_if_due(state: TrainingState, trainables: Trainables, run: RunFolder, config: TrainingConfig,
                       improved: bool, force: bool = False) -> None:
    """``best.pt`` when validation improved; ``last.pt`` every ``checkpoint_every`` steps, every
    ``checkpoint_minutes``, at the end, and when ``force`` (a stop was asked for)."""
    schedule = config.schedule
    minutes = (time.monotonic() - state.saved_at) / 60.0
    due = (force or state.step % schedule.checkpoint_every == 0 or state.step == config.optimisation.steps
           or (schedule.checkpoint_minutes > 0 and minutes >= schedule.checkpoint_minutes))
    if not (improved or due):
        return
    content = dict(state.checkpoint_content(config), scaler=trainables.scaler.state_dict(), rng=rng_state())
    for path, wanted in ((run.best_checkpoint, improved), (run.last_checkpoint, due)):
        if wanted:
            save_checkpoint(path, step=state.step, modules=trainables.modules, optimizers=trainables.optimizers,
                            **content)
    if due:
        state.saved_step, state.saved_at = state.step, time.monotonic()
        logger.info("step %d saved in %s", state.step, run.last_checkpoint)
