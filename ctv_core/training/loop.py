"""Training the CTV network: ``train(data_path, run_dir, config)`` and the ``ctv train`` / ``ctv export`` commands.

A small loop driven by :class:`~ctv_core.training_config.TrainingConfig`: patches from
:mod:`ctv_core.training_data` (augmented by :mod:`ctv_core.augmentation`), the recurrent
U-Net with BCE + Dice on every pass (:mod:`ctv_core.losses`), Adam, mixed precision
(autocast + GradScaler) on CUDA only, k-fold cross-validation split by patient.

The run folder::

    RUN_DIR/config.json          the full configuration (the package's settings included)
    RUN_DIR/splits.json          the folds (by patient), this run's training and validation cases
    RUN_DIR/checkpoints/last.pt  every schedule.checkpoint_every steps and at the end
    RUN_DIR/checkpoints/best.pt  the checkpoint with the best validation Dice so far
    RUN_DIR/log.csv              step, metric, value (always written)
    RUN_DIR/tensorboard/         scalars and sample slices, when tensorboard is installed
    RUN_DIR/cache/               prepared cases (data.cache = "disk")

Checkpoints hold tensors, numbers, strings, lists and dicts only, and are read with
``torch.load(weights_only=True)``. Running ``train`` again on a folder with ``last.pt``
resumes: the model, Adam's state, the GradScaler, the step, the RNG states (Python, NumPy,
torch) and the sampler's position are restored. Every sample is drawn from its own seed
(:mod:`ctv_core.training_data`), so the patches after a resume are the ones a straight run
would have drawn; on the CPU with ``num_workers=0`` the weights after N + M steps resumed
are bitwise those of a straight run of N + M steps.

Several processes (one per GPU, or CPU processes) through torchrun::

    torchrun --nproc_per_node 4 -m ctv_core train DATA.h5 RUN_DIR --config cfg.json
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr HOST --master_port 29500 \\
        -m ctv_core train DATA.h5 RUN_DIR --config cfg.json

(``-m ctv_core.training train ...`` works too.) When ``WORLD_SIZE`` > 1 each process joins
the process group (NCCL on CUDA, gloo on the CPU), wraps the network in
DistributedDataParallel and takes its share of every global batch (global sample indices, so
the samples are those of a one-process run). Batch norm uses the statistics of the global
batch (``sampling.sync_batch_norm``): torch's SyncBatchNorm on CUDA, an all-reduce of the
moments on the CPU (:class:`GlobalBatchNorm3d`). Only rank 0 validates and writes checkpoints
and logs.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..atomic_files import atomic_file
from .losses import DeepSupervisionLoss
from ..inference.sliding_window import sliding_window_probability
from .config import (RESUMABLE_CHANGES, TrainingConfig, TrainingError, config_differences)
from .cases import CaseStore, PatchDataset, StepBatchSampler, describe_dataset, kfold_split
from ..model.unet3d import (UNet3D, _usable_cpu_count, autocast_context, configure_runtime, prepare_for_inference,
                     select_device, use_channels_last)

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ctv-checkpoint"
CHECKPOINT_VERSION = 1


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


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class _Processes:
    world: int
    rank: int
    local_rank: int
    local_world: int
    device: torch.device
    owns_group: bool

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise TrainingError(f"The environment variable {name}={value!r} is not an integer; launch with torchrun.") \
            from exc


def _start_processes(device: str) -> _Processes:
    """This process's place among torchrun's processes (WORLD_SIZE, RANK, LOCAL_RANK), group joined."""
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    try:
        chosen = select_device(device)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    if chosen.type == "cuda" and world > 1:
        if local_rank >= torch.cuda.device_count():
            raise TrainingError(f"Process {rank} has LOCAL_RANK {local_rank} but this node has "
                                f"{torch.cuda.device_count()} GPUs; start at most that many processes per node.")
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
        owns = True
    configure_runtime(chosen)
    if chosen.type == "cpu" and local_world > 1:
        torch.set_num_threads(max(1, _usable_cpu_count() // local_world))  # share the node's cores
    return _Processes(world, rank, local_rank, local_world, chosen, owns)


class GlobalBatchNorm3d(nn.BatchNorm3d):
    """Batch norm whose training statistics are those of the global batch across all processes.

    For the CPU (gloo), where torch's SyncBatchNorm does not run: the per-channel sum and the
    sum of squared deviations are all-reduced with autograd (``torch.distributed.nn``), so the
    forward and the gradients equal those of one process holding the whole batch (up to the
    order of floating-point sums). Outside training or without a process group it is a plain
    ``BatchNorm3d``; its parameters and buffers are the same, so state dicts are interchangeable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = (0, 2, 3, 4)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64, device=x.device)
        dist.all_reduce(count)
        n = float(count.item())
        mean = all_reduce(x.sum(dims)) / n
        centred = x - mean[None, :, None, None, None]
        var = all_reduce((centred * centred).sum(dims)) / n
        scale = torch.rsqrt(var + self.eps) * self.weight
        out = centred * scale[None, :, None, None, None] + self.bias[None, :, None, None, None]
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
        return out


def _global_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Swap every BatchNorm3d for one with global-batch statistics (same weights)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.BatchNorm3d:
                swapped = GlobalBatchNorm3d(child.num_features, child.eps, child.momentum).to(child.weight.device)
                swapped.load_state_dict(child.state_dict())
                setattr(module, name, swapped)
    return model


# --------------------------------------------------------------------------- run folder


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrainingError(f"'{path}' is damaged ({exc}); remove it or use a new RUN_DIR.") from exc


def _write_json(path: Path, data: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _check_config(run_dir: Path, config: TrainingConfig, resuming: bool) -> None:
    """Refuse to resume a run with settings other than those it was trained with."""
    path = run_dir / "config.json"
    if not resuming:
        return
    if not path.is_file():
        raise TrainingError(f"'{run_dir}' has a checkpoint but no config.json; it is not a complete run folder. "
                            "Use a new RUN_DIR.")
    old = _read_json(path)
    changed = [d for d in config_differences(old, config.to_dict())
               if not any(d == p or d.startswith(p + ".") for p in RESUMABLE_CHANGES)]
    if changed:
        raise TrainingError(
            f"'{run_dir}' was trained with other settings ({', '.join(changed)} differ from its config.json). "
            f"Resume with the same configuration (only {', '.join(RESUMABLE_CHANGES)} may change), or train "
            "in a new RUN_DIR.")


def resolve_split(run_dir: Path, data_path: Path, config: TrainingConfig) -> dict[str, Any]:
    """The run's split: from ``RUN_DIR/splits.json`` when it exists (checked), else made (not written)."""
    patients, info = describe_dataset(data_path)
    data = config.data
    path = run_dir / "splits.json"
    if path.is_file():
        saved = _read_json(path)
        problems = [f"{key} {saved.get(key)!r} vs {value!r}" for key, value in
                    (("folds", data.folds), ("fold", data.fold), ("seed", data.seed)) if saved.get(key) != value]
        if saved.get("patients") != patients:
            problems.append("the data's cases or patients differ")
        if problems:
            raise TrainingError(
                f"'{path}' was made for another split ({'; '.join(problems)}). Use the same data, --folds, --fold "
                "and seed to resume, or train this split in a new RUN_DIR.")
        return saved
    folds = kfold_split(patients, data.folds, data.seed)
    validation = folds[data.fold] if data.folds > 1 else []
    train = sorted(c for c in patients if c not in set(validation))
    return {"folds": data.folds, "fold": data.fold, "seed": data.seed, "cases_per_fold": folds,
            "train": train, "validation": list(validation), "patients": patients,
            "data": {"file": data_path.name, "path": str(data_path.resolve()), "cases": len(patients),
                     "patients": len(set(patients.values())), "info": info}}


# --------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as lists and tensors (loadable with weights_only=True)."""
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out = {"python": {"version": version, "state": list(state), "gauss": gauss},
           "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                     "has_gauss": int(has_gauss), "cached": float(cached)},
           "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = list(torch.cuda.get_rng_state_all())
    return out


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint (tensors and plain values only: ``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"The checkpoint '{path}' does not exist.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or foreign files
        raise TrainingError(f"The checkpoint '{path}' cannot be read ({type(exc).__name__}: {exc}); it is damaged "
                            "or not a ctv checkpoint. Remove it to start over.") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"'{path}' is not a ctv training checkpoint.")
    if checkpoint.get("format_version") != CHECKPOINT_VERSION:
        raise TrainingError(f"'{path}' is checkpoint version {checkpoint.get('format_version')}; this ctv_core "
                            f"reads version {CHECKPOINT_VERSION}.")
    return checkpoint


def _save_checkpoint(path: Path, **content: Any) -> None:
    with atomic_file(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **content}, tmp)


# --------------------------------------------------------------------------- logging


class _RunLog:
    """``log.csv`` (step, metric, value) always; TensorBoard when installed. Rank 0 only."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.csv_path = run_dir / "log.csv"
        kept: list[list[str]] = []
        if start_step and self.csv_path.is_file():  # drop rows written after the checkpoint we resume from
            with open(self.csv_path, newline="", encoding="utf-8") as handle:
                kept = [row for row in list(csv.reader(handle))[1:] if row and int(row[0]) <= start_step]
        self.handle = open(self.csv_path, "w", newline="", encoding="utf-8")
        self.csv = csv.writer(self.handle)
        self.csv.writerow(["step", "metric", "value"])
        self.csv.writerows(kept)
        self.handle.flush()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info("tensorboard is not installed; logging to %s only", self.csv_path)
        else:
            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step or None)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self.csv.writerow([step, name, f"{value:.8g}"])
            if self.writer is not None:
                self.writer.add_scalar(name, value, step)
        self.handle.flush()

    def image(self, step: int, tag: str, rgb: np.ndarray) -> None:
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag, rgb, step, dataformats="HWC")

    def close(self) -> None:
        if not self.enabled:
            return
        self.handle.close()
        if self.writer is not None:
            self.writer.close()


def _overlay(image: np.ndarray, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """An axial slice as RGB float [0, 1]: grey image, prediction in red, target in green."""
    grey = (np.clip(image, -1, 1) + 1) / 2
    rgb = np.stack([grey, grey, grey], axis=-1) * 0.7
    rgb[..., 0] += 0.3 * prediction
    rgb[..., 1] += 0.3 * target
    return np.clip(rgb, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------- validation


def dice_score(prediction: np.ndarray, target: np.ndarray) -> float:
    """Dice of two binary arrays; 1.0 when both are empty."""
    p, t = prediction.astype(bool), target.astype(bool)
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(p, t).sum()) / total


def validate(network: nn.Module, store: CaseStore, case_ids: list[str], config: TrainingConfig,
             device: torch.device) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Dice per validation case on the model grid, and one RGB sample slice per case.

    Whole-case prediction as in :class:`~ctv_core.prediction.CTVPredictor` (batch norms
    folded, sliding window with the package's inference settings), thresholded on the model
    grid and compared with the resampled mask.
    """
    clean = UNet3D(config.network)
    clean.load_state_dict({k: v.detach().cpu() for k, v in network.state_dict().items()})
    prepared = prepare_for_inference(clean, device)
    inference = config.settings.inference

    def logits_of(tensor: torch.Tensor) -> torch.Tensor:
        with autocast_context(device):
            return prepared(tensor)

    scores: dict[str, float] = {}
    samples: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for n, case_id in enumerate(case_ids):
            case = store.get(case_id)
            probability = sliding_window_probability(case.image, logits_of, inference.patch_zyx,
                                                     overlap=inference.overlap, device=device)
            prediction = probability >= inference.threshold
            scores[case_id] = dice_score(prediction, case.mask)
            if n < config.schedule.sample_images:
                area = case.mask.sum(axis=(1, 2))
                z = int(np.argmax(area)) if area.any() else case.mask.shape[0] // 2
                samples[case_id] = _overlay(case.image[z], prediction[z], case.mask[z])
    return scores, samples


# --------------------------------------------------------------------------- training


def train(data_path: str | Path, run_dir: str | Path, config: TrainingConfig, *, progress: bool = False,
          device: str = "auto") -> TrainResult:
    """Train (or resume training) the network of ``config`` on the HDF5 dataset ``data_path``.

    Parameters
    ----------
    data_path
        HDF5 training set (``ctv dataset build``).
    run_dir
        Run folder (see the module docstring); a folder with ``checkpoints/last.pt`` resumes.
    config
        The configuration; saved to ``RUN_DIR/config.json``.
    progress
        Show a tqdm progress bar (rank 0).
    device
        "auto", "cpu" or "cuda" (under torchrun each process takes the GPU of its LOCAL_RANK).

    Raises
    ------
    TrainingError
        Bad data, a split or configuration that does not match the run being resumed, a
        non-finite loss.
    """
    procs = _start_processes(device)
    try:
        return _train(Path(data_path), Path(run_dir), config, progress, procs)
    finally:
        if procs.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(data_path: Path, run_dir: Path, config: TrainingConfig, progress: bool, procs: _Processes) -> TrainResult:
    dev = procs.device
    last_path = run_dir / "checkpoints" / "last.pt"
    best_path = run_dir / "checkpoints" / "best.pt"
    resuming = last_path.is_file()
    _check_config(run_dir, config, resuming)
    split = resolve_split(run_dir, data_path, config)
    procs.barrier()  # every rank has read the run folder before rank 0 writes to it
    if procs.main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "config.json", config.to_dict())
        _write_json(run_dir / "splits.json", split)

    # The network: the same initial weights on every rank (seeded), then DDP keeps them equal.
    torch.manual_seed(config.data.seed)
    network: nn.Module = UNet3D(config.network)
    start_step, best_dice, best_step, history = 0, None, None, {}
    checkpoint: dict[str, Any] = {}
    if resuming:
        checkpoint = load_checkpoint(last_path)
        sampler_state = checkpoint["sampler"]
        if sampler_state["global_batch"] != config.sampling.batch_size or sampler_state["seed"] != config.data.seed:
            raise TrainingError(f"The checkpoint {last_path} was made with another batch size or seed; resume with "
                                "its configuration or use a new RUN_DIR.")
        network.load_state_dict(checkpoint["model"])
        start_step = int(checkpoint["step"])
        best_dice, best_step = checkpoint["best"]["dice"], checkpoint["best"]["step"]
        history = checkpoint.get("validation", {})
        logger.info("resuming %s at step %d", run_dir, start_step)
    if procs.world > 1 and config.sampling.sync_batch_norm:
        network = _global_batch_norm(network, dev)  # before the optimiser: the swap may make new parameters
    network.to(dev)
    if dev.type == "cpu":
        use_channels_last(network)
    optimiser = torch.optim.Adam(network.parameters(), lr=config.optimisation.learning_rate,
                                 weight_decay=config.optimisation.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda")
    if resuming:
        optimiser.load_state_dict(checkpoint["optimiser"])
        if checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        _set_rng_state(checkpoint["rng"])
    model: nn.Module = network
    if procs.world > 1:
        model = nn.parallel.DistributedDataParallel(network, device_ids=[dev.index] if dev.type == "cuda" else None)

    steps = config.optimisation.steps
    store = CaseStore(data_path, config.settings.preprocessing, config.network.divisor, config.data.roi,
                      cache_dir=run_dir / "cache" if config.data.cache == "disk" else None)
    if config.data.cache == "disk" and start_step < steps:
        if procs.main:  # prepare once; the other ranks and the workers read the npz files
            store.prepare_all(split["train"] + split["validation"])
        procs.barrier()
    dataset = PatchDataset(store, split["train"], config.sampling, config.augmentation, config.data.seed)
    batches = StepBatchSampler(start_step, steps, config.sampling.batch_size, procs.rank, procs.world)
    store.close()  # no HDF5 handle may be inherited by worker processes
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=config.data.num_workers,
                                         pin_memory=dev.type == "cuda")
    loss_fn = DeepSupervisionLoss(config.pass_weights, config.optimisation.bce_weight,
                                  config.optimisation.dice_weight, config.optimisation.dice_smooth)
    log = _RunLog(run_dir, start_step, procs.main)
    schedule = config.schedule
    bar = None
    if progress and procs.main:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=start_step, desc="training", unit="step")
    step, final_loss = start_step, None
    started = time.perf_counter()
    try:
        model.train()
        for image, mask in loader:
            image, mask = image.to(dev, non_blocking=True), mask.to(dev, non_blocking=True)
            with autocast_context(dev):
                outputs = model(image, return_all_passes=True)
            loss, parts = loss_fn(outputs, mask)
            if not math.isfinite(parts["total"]):
                raise TrainingError(
                    f"The training loss is not finite at step {step + 1}. Lower optimisation.learning_rate and "
                    f"resume from {last_path} (or start over in a new RUN_DIR).")
            optimiser.zero_grad(set_to_none=True)
            for group in optimiser.param_groups:
                group["lr"] = config.optimisation.learning_rate_at(step)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            step += 1
            final_loss = parts["total"]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{final_loss:.4f}")
            if not procs.main:
                continue
            if step % schedule.log_every == 0 or step == steps:
                values = {"loss": final_loss, "bce": parts["bce"], "dice_loss": parts["dice"],
                          "lr": optimiser.param_groups[0]["lr"]}
                values.update({f"loss_{k}": v for k, v in parts.items() if k.startswith("pass")})
                log.scalars(step, values)
                logger.info("step %d/%d loss %.4f (%.2f s/step)", step, steps, final_loss,
                            (time.perf_counter() - started) / (step - start_step))
            improved = False
            if split["validation"] and (step % schedule.validate_every == 0 or step == steps):
                scores, samples = validate(network, store, split["validation"], config, dev)
                mean = float(np.mean(list(scores.values())))
                history[str(step)] = {"mean_dice": mean, "dice": scores}
                log.scalars(step, {"val_dice": mean, **{f"val_dice/{c}": d for c, d in scores.items()}})
                for case_id, rgb in samples.items():
                    log.image(step, f"validation/{case_id}", rgb)
                logger.info("step %d validation Dice %.4f over %d cases", step, mean, len(scores))
                if best_dice is None or mean > best_dice:
                    best_dice, best_step, improved = mean, step, True
                network.train()
            if improved or step % schedule.checkpoint_every == 0 or step == steps:
                content = dict(
                    step=step, model={k: v.detach().cpu() for k, v in network.state_dict().items()},
                    optimiser=optimiser.state_dict(), scaler=scaler.state_dict(), rng=_rng_state(),
                    sampler={"next_step": step, "seed": config.data.seed,
                             "global_batch": config.sampling.batch_size},
                    config=config.to_dict(), best={"dice": best_dice, "step": best_step}, validation=history)
                if improved:
                    _save_checkpoint(best_path, **content)
                if step % schedule.checkpoint_every == 0 or step == steps:
                    _save_checkpoint(last_path, **content)
    finally:
        if bar is not None:
            bar.close()
        log.close()
        store.close()
    procs.barrier()
    if procs.main:
        logger.info("training finished at step %d (best validation Dice %s)", step,
                    "n/a" if best_dice is None else f"{best_dice:.4f} at step {best_step}")
    return TrainResult(run_dir=run_dir, step=step, resumed_from=start_step, final_loss=final_loss,
                       best_dice=best_dice, best_step=best_step,
                       last_checkpoint=last_path if last_path.is_file() else None,
                       best_checkpoint=best_path if best_path.is_file() else None, world_size=procs.world)

