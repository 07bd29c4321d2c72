"""A model package from a training run: ``export_package(run_dir, pkg)`` (``ctv export``).

The package carries the run's network configuration and model settings unchanged (the
preprocessing used in training is the one prediction applies), the weights of the chosen
checkpoint, and a training record (data, folds, split, steps, full configuration) and the
validation Dice in its manifest. Nothing from the checkpoint is executed: it is read with
``torch.load(weights_only=True)`` and the weights go into a safetensors file.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from pathlib import Path

from ..errors import TrainingError
from ..model.package import ModelPackage, save_model_package
from ..model.unet3d import UNet3D
from .checkpoints import NETWORK, load_checkpoint
from .config import TrainingConfig
from .run_folder import RunFolder, read_json, without_paths

logger = logging.getLogger(__name__)

CHECKPOINTS = ("best", "last")


def _read(path: Path, what: str) -> dict:
    if not path.is_file():
        raise TrainingError(f"'{path.parent}' is not a training run folder: {path.name} ({what}) is missing. Give "
                            "the RUN_DIR of 'ctv train'.")
    return read_json(path)


def plot_training_curves(log_csv: Path, out_png: Path) -> Path:
    """Training loss and validation Dice against the step, from a run's ``log.csv``, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    with open(log_csv, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            series.setdefault(row["metric"], []).append((int(row["step"]), float(row["value"])))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for metric in ("loss", "bce", "dice_loss"):
        if metric in series:
            steps, values = zip(*series[metric])
            left.plot(steps, values, label=metric)
    left.set_xlabel("step")
    left.set_title("training loss (all passes)")
    left.legend()
    if "val_dice" in series:
        steps, values = zip(*series["val_dice"])
        right.plot(steps, values, marker="o")
    right.set_xlabel("step")
    right.set_ylim(0, 1)
    right.set_title("validation Dice (model grid)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return out_png


def default_name(run_dir: Path, fold: int) -> str:
    """``ctv-unet3d-<run folder>-fold<K>``, without repeating ``fold<K>`` when the folder's name ends with it."""
    folder = run_dir.resolve().name
    suffix = f"fold{fold}"
    return f"ctv-unet3d-{folder}" if folder.endswith(suffix) else f"ctv-unet3d-{folder}-{suffix}"


def _without_paths(config: dict) -> dict:
    """The configuration for a manifest: the starting package named by its folder only, not its path here."""
    start = config["optimisation"].get("initial_weights")
    if start is not None:
        config["optimisation"]["initial_weights"] = Path(start).name
    return config


def export_package(run_dir: str | Path, pkg: str | Path, checkpoint: str = "best", *, name: str | None = None,
                   version: str | None = None, description: str | None = None,
                   weights_dtype: str = "float32") -> ModelPackage:
    """Write the model package ``pkg`` from ``run_dir``'s ``best`` (default) or ``last`` checkpoint.

    ``weights_dtype="float16"`` stores the weights in half precision (half the size; see
    :func:`~ctv_core.model.package.stored_state`).

    Raises
    ------
    TrainingError
        ``run_dir`` is not a run folder, or the checkpoint is missing (``best`` exists only
        once validation has run: export ``last`` for a run without validation).
    ModelPackageError
        ``pkg`` exists and is not empty.
    """
    run_dir, pkg = Path(run_dir), Path(pkg)
    if checkpoint not in CHECKPOINTS:
        raise TrainingError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, not {checkpoint!r}.")
    run = RunFolder(run_dir)
    config = TrainingConfig.from_dict(_read(run.config_file, "the run's configuration"))
    split = _read(run.splits_file, "the run's cross-validation split")
    path = run.best_checkpoint if checkpoint == "best" else run.last_checkpoint
    if not path.is_file():
        hint = (" No validation has run yet (best.pt is written at the first validation); export with "
                "--checkpoint last." if checkpoint == "best" else " Train first.")
        raise TrainingError(f"The run '{run_dir}' has no {checkpoint}.pt checkpoint.{hint}")
    state = load_checkpoint(path)
    network = UNet3D(config.network)
    try:
        network.load_state_dict(state["modules"][NETWORK], strict=True)
    except RuntimeError as exc:
        raise TrainingError(f"The checkpoint {path} does not fit the run's config.json ({str(exc).splitlines()[0]});"
                            " the run folder is inconsistent.") from exc
    step = int(state["step"])
    history = state.get("validation", {})
    validation = history.get(str(step))
    fold, folds = split["fold"], split["folds"]
    metrics = {
        "validation_dice": None if validation is None else validation["mean_dice"],
        "validation_dice_per_case": None if validation is None else validation["dice"],
        "validation_cases": len(split["validation"]),
        "best_validation_dice": state["best"]["dice"],
        "best_step": state["best"]["step"],
        "grid": "Dice on the model grid against the resampled mask (linear, >= 0.5)",
    }
    training = {
        "data": without_paths(split["data"]),  # no path of this machine in a package
        "folds": folds,
        "fold": fold,
        "seed": split["seed"],
        "split": {"train": split["train"], "validation": split["validation"],
                  "cases_per_fold": split["cases_per_fold"]},
        "steps": step,
        "run_steps": config.optimisation.steps,
        "checkpoint": checkpoint,
        "config": _without_paths(config.to_dict()),
    }
    if "initial_weights" in split:
        training["initial_weights"] = {key: value for key, value in split["initial_weights"].items() if key != "path"}
    name = name or default_name(run_dir, fold)
    which = "best validation Dice" if checkpoint == "best" else "last checkpoint"
    description = description or (
        f"Recurrent residual-SE 3D U-Net ({config.network.passes} passes, widths "
        f"{'/'.join(str(w) for w in config.network.widths)}) trained with BCE + Dice on "
        f"{len(split['train'])} cases of {split['data'].get('file', 'the dataset')}, fold {fold} of {folds} held out "
        f"for validation: the weights of step {step} ({which}) of a {config.optimisation.steps}-step run.")
    extra = {}
    log = run.log_file
    with tempfile.TemporaryDirectory() as tmp:
        if log.is_file():
            extra["training_log.csv"] = log
            extra["training_curves.png"] = plot_training_curves(log, Path(tmp) / "curves.png")
        package = save_model_package(pkg, network, "unet3d", config.network, config.settings, name=name,
                                     version=version or "1.0.0", description=description, training=training,
                                     metrics=metrics, extra_files=extra, weights_dtype=weights_dtype)
    logger.info("exported %s (step %d, %s checkpoint) to %s", package.model_id, step, checkpoint, pkg)
    return package
