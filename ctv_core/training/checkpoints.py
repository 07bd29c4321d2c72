"""Training checkpoints: named modules and optimisers, the step, the RNG states, nothing executable.

A checkpoint (format ``"ctv-checkpoint"``, version 2) is a dict of tensors, numbers, strings,
lists and dicts only, written with ``torch.save`` under a temporary name and renamed, and read
with ``torch.load(weights_only=True)``, so loading runs no code from the file::

    format, format_version          "ctv-checkpoint", 2
    step                            optimiser steps done
    modules   {name: state_dict}    "network" always; "qam" too with quality.enabled (the label-quality scorer)
    optimizers {name: state_dict}   one per trained module, same names
    scaler                          the CUDA GradScaler's state ({} on the CPU)
    rng                             Python, NumPy and torch (and CUDA) RNG states
    sampler                         {"next_step", "seed", "global_batch"}
    config                          the run's TrainingConfig.to_dict()
    best                            {"dice", "step"} of the best validation so far
    validation                      {step: {"mean_dice", "dice": {case: value}}}

Version 1 checkpoints (one ``model`` and one ``optimiser``) are read as version 2 with those
under the name ``"network"``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..atomic_files import atomic_file
from ..errors import TrainingError

CHECKPOINT_FORMAT = "ctv-checkpoint"
CHECKPOINT_VERSION = 2
NETWORK = "network"


def rng_state() -> dict[str, Any]:
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


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (CUDA states only on a machine with as many GPUs)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def module_states(modules: Mapping[str, nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    """Each module's state dict on the CPU, detached."""
    return {name: {k: v.detach().cpu() for k, v in module.state_dict().items()} for name, module in modules.items()}


def save_checkpoint(path: Path, *, step: int, modules: Mapping[str, nn.Module],
                    optimizers: Mapping[str, torch.optim.Optimizer], **content: Any) -> None:
    """Write a checkpoint atomically (see the module docstring for ``content``'s keys)."""
    with atomic_file(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "step": step,
                    "modules": module_states(modules),
                    "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()}, **content}, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint as a dict (``torch.load(weights_only=True)``), in the version-2 layout."""
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
    version = checkpoint.get("format_version")
    if version == 1:
        checkpoint = dict(checkpoint, format_version=2, modules={NETWORK: checkpoint.pop("model")},
                          optimizers={NETWORK: checkpoint.pop("optimiser")})
    elif version != CHECKPOINT_VERSION:
        raise TrainingError(f"'{path}' is checkpoint version {version}; this ctv_core reads versions 1 and "
                            f"{CHECKPOINT_VERSION}.")
    if NETWORK not in checkpoint.get("modules", {}):
        raise TrainingError(f"'{path}' holds no network weights; it is not a complete ctv checkpoint.")
    return checkpoint


def restore_modules(checkpoint: dict[str, Any], modules: Mapping[str, nn.Module]) -> None:
    """Load the checkpoint's states into ``modules``, each by its name.

    Raises ``TrainingError`` when the run trains a module the checkpoint does not hold, or the
    other way round: a resumed run must train what the checkpoint trained.
    """
    saved, wanted = set(checkpoint["modules"]), set(modules)
    if saved != wanted:
        raise TrainingError(f"The checkpoint holds the modules {', '.join(sorted(saved))} but this run trains "
                            f"{', '.join(sorted(wanted))}; resume with the run's own configuration.")
    for name, module in modules.items():
        module.load_state_dict(checkpoint["modules"][name])


def restore_optimizers(checkpoint: dict[str, Any], optimizers: Mapping[str, torch.optim.Optimizer]) -> None:
    """Load the checkpoint's optimiser states, each by its module's name."""
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(checkpoint["optimizers"][name])
