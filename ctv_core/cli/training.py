"""``ctv train`` and ``ctv export``: train (or resume) the network on an HDF5 set; a model package from a run.

Several processes: ``torchrun --nproc_per_node N -m ctv_core train DATA.h5 RUN_DIR``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .progress import StepBar


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``ctv train`` and ``ctv export``."""
    p = sub.add_parser("train", parents=[common], help="train (or resume) the CTV network on an HDF5 dataset",
                       description="Train the CTV network; a RUN_DIR with checkpoints/last.pt resumes. Several "
                                   "processes: torchrun --nproc_per_node N -m ctv_core train ...")
    p.add_argument("data", type=Path, help="HDF5 training set (ctv dataset build)")
    p.add_argument("run_dir", type=Path, help="run folder (config, splits, checkpoints, logs)")
    p.add_argument("--config", type=Path, default=None, metavar="FILE", help="training configuration JSON")
    p.add_argument("--folds", type=int, default=None, metavar="N", help="cross-validation folds (overrides config)")
    p.add_argument("--fold", type=int, default=None, metavar="K", help="fold held out, 0..N-1 (overrides config)")
    p.add_argument("--initial-weights", type=Path, default=None, metavar="PKG",
                   help="start from this model package's weights (fine-tuning; overrides the config's "
                        "optimisation.initial_weights)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(func=run_train)

    p = sub.add_parser("export", parents=[common], help="a model package from a training run")
    p.add_argument("run_dir", type=Path, help="the training run folder")
    p.add_argument("pkg", type=Path, help="new (or empty) package folder")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="best validation Dice (default) or the last step")
    p.add_argument("--name", default=None, help="model name (default: ctv-unet3d-<run folder>-fold<K>)")
    p.add_argument("--version", default=None, help="model version (default: 1.0.0)")
    p.add_argument("--description", default=None, help="one paragraph about the model")
    p.add_argument("--weights-dtype", choices=("float32", "float16"), default="float32",
                   help="how the weights are stored: float16 halves the package (batch-norm statistics stay "
                        "float32; prediction runs in float32 either way)")
    p.set_defaults(func=run_export)


def run_train(args: argparse.Namespace) -> int:
    """Train with a progress bar on rank 0 and print the result."""
    from ..training.loop import train
    from ..training.config import TrainingConfig, load_training_config

    config = load_training_config(args.config) if args.config is not None else TrainingConfig()
    config = config.with_fold(args.folds, args.fold)
    if args.initial_weights is not None:
        config = config.with_initial_weights(args.initial_weights)
    with StepBar() as bar:
        result = train(args.data, args.run_dir, config, progress=None if args.quiet else bar, device=args.device)
    if int(os.environ.get("RANK", "0")) == 0:
        best = "no validation" if result.best_dice is None else \
            f"best validation Dice {result.best_dice:.4f} at step {result.best_step}"
        print(f"Trained {result.step} steps in {result.run_dir} ({best})")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Export the run's checkpoint as a model package."""
    from ..training.export import export_package

    package = export_package(args.run_dir, args.pkg, checkpoint=args.checkpoint, name=args.name,
                             version=args.version, description=args.description,
                             weights_dtype=args.weights_dtype)
    print(f"Exported {package.model_id} to {package.path}")
    return 0
