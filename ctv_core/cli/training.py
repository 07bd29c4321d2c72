"""``ctv train``, ``ctv export`` and ``ctv add-graph``: train (or resume) the network on an HDF5 set; a model package
from a run; a graph added to a package exported without one.

Several processes: ``torchrun --nproc_per_node N -m ctv_core train DATA.h5 RUN_DIR``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import textwrap
from pathlib import Path

from .progress import StageBars, StepBar

#: The presets ``--preset`` offers, with what each is for (ctv_core.training.presets holds them).
PRESET_HELP = {
    "first-run": "a small network for 600 steps: a few minutes on a laptop CPU, to see the whole path work",
    "gpu": "the method's full network for 40000 steps on one CUDA GPU",
}


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``ctv train``, ``ctv export`` and ``ctv add-graph``."""
    p = sub.add_parser(
        "train", parents=[common], help="train (or resume) the CTV network on an HDF5 dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Train the CTV network; a RUN_DIR with checkpoints/last.pt resumes at its step. Ctrl+C (or SIGTERM) "
            "finishes the step under way, saves it and prints the command that resumes; a second Ctrl+C quits at "
            "once. A summary (cases, device, parameters, settings) is printed before the first step and the "
            "expected time after a few steps. Several processes: torchrun --nproc_per_node N -m ctv_core train ...",
            width=100) + "\n\npresets (--preset NAME):\n" +
                    "\n".join(f"  {name:10s} {text}" for name, text in PRESET_HELP.items()) +
                    "\n(docs/training.md gives their measured times)")
    p.add_argument("data", type=Path, help="HDF5 training set (ctv dataset build)")
    p.add_argument("run_dir", type=Path, help="run folder (config, splits, checkpoints, logs)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, default=None, metavar="FILE", help="training configuration JSON")
    source.add_argument("--preset", choices=tuple(PRESET_HELP), default=None,
                        help="a named configuration instead of --config (see above)")
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
    p.add_argument("--name", default=None, help="model name (default: ctv-unet3d-<run folder>-fold<K>; fold<K> once when the folder's name "
                        "ends with it)")
    p.add_argument("--version", default=None, help="model version (default: 1.0.0)")
    p.add_argument("--description", default=None, help="one paragraph about the model")
    p.add_argument("--weights-dtype", choices=("float32", "float16"), default="float32",
                   help="how the weights are stored: float16 halves the package (batch-norm statistics stay "
                        "float32; prediction runs in float32 either way)")
    p.set_defaults(func=run_export)

    p = sub.add_parser("add-graph", parents=[common],
                       help="a copy of a model package with its network added as a graph (for the OpenVINO engine)")
    p.add_argument("pkg", type=Path, metavar="PKG",
                   help="a model package without a graph (exported before ctv_core 0.4)")
    p.add_argument("new_pkg", type=Path, metavar="NEW_PKG",
                   help="new (or empty) folder for the copy; PKG is not modified")
    p.set_defaults(func=run_add_graph)


class TrainingReport:
    """The command line's :class:`~ctv_core.training.events.TrainingEvents`: lines on stderr and tqdm bars."""

    def __init__(self, quiet: bool, resume_command: str) -> None:
        self.quiet = quiet
        self.resume_command = resume_command
        self.bar = StepBar()
        self.stages = StageBars(quiet, {"preparing cases": "case", "validating": "case"})

    def say(self, text: str) -> None:
        """One line on stderr, above the bars."""
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)

    def started(self, summary) -> None:
        for line in summary.lines():
            self.say(f"ctv train: {line}")

    def step(self, step: int, steps: int, loss: float | None) -> None:
        self.stages.close()
        if not self.quiet:
            self.bar(step, steps, loss)

    def expected(self, seconds_per_step: float, remaining_seconds: float, validations: int) -> None:
        extra = f" plus {validations} validation(s)" if validations else ""
        self.say(f"ctv train: {seconds_per_step:.2f} s per step: about {_duration(remaining_seconds)} for the "
                 f"remaining steps{extra}")

    def preparing(self, done: int, total: int) -> None:
        self.stages("preparing cases", done, total)

    def validating(self, done: int, total: int) -> None:
        self.stages("validating", done, total)

    def stopping(self, signal_name: str, step: int) -> None:
        self.say(f"ctv train: {signal_name}: finishing step {step + 1} to save it (again to quit without saving)")

    def close(self) -> None:
        self.stages.close()
        self.bar.close()


def _duration(seconds: float) -> str:
    """``seconds`` as "42 s", "12 min" or "3.5 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def resume_command(args: argparse.Namespace) -> str:
    """The ``ctv train`` command that resumes this run (same data, folder and configuration)."""
    parts = ["ctv", "train", str(args.data), str(args.run_dir)]
    for flag, value in (("--config", args.config), ("--preset", args.preset), ("--folds", args.folds),
                        ("--fold", args.fold), ("--initial-weights", args.initial_weights),
                        ("--device", None if args.device == "auto" else args.device)):
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)


def run_train(args: argparse.Namespace) -> int:
    """Train with a summary, bars and the expected time on rank 0, and print the result."""
    from ..training.config import TrainingConfig, load_training_config
    from ..training.interrupts import TrainingInterrupted
    from ..training.loop import train
    from ..training.presets import preset_config

    if args.config is not None:
        config = load_training_config(args.config)
    else:
        config = preset_config(args.preset) if args.preset is not None else TrainingConfig()
    config = config.with_fold(args.folds, args.fold)
    if args.initial_weights is not None:
        config = config.with_initial_weights(args.initial_weights)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    report = TrainingReport(args.quiet, resume_command(args))
    try:
        result = train(args.data, args.run_dir, config, events=report if main_rank else None, device=args.device)
    except TrainingInterrupted as stop:
        report.close()
        if main_rank:
            print(f"ctv train: {stop}. Resume with:\n  {report.resume_command}", file=sys.stderr)
        return 130
    finally:
        report.close()
    if main_rank:
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


def run_add_graph(args: argparse.Namespace) -> int:
    """Write a copy of the package with its graph, checked against its PyTorch network."""
    from ..model.package import add_graph

    package = add_graph(args.pkg, args.new_pkg)
    print(f"Wrote {package.model_id} with its graph to {package.path} (checked against the PyTorch network)")
    return 0
