"""The run folder of a training run, and its logs.

::

    RUN_DIR/config.json          the full configuration (the package's settings included)
    RUN_DIR/splits.json          the folds (by patient), this run's training and validation cases
    RUN_DIR/checkpoints/last.pt  every schedule.checkpoint_every steps and at the end
    RUN_DIR/checkpoints/best.pt  the checkpoint with the best validation Dice so far
    RUN_DIR/log.csv              step, metric, value (always written)
    RUN_DIR/samples.csv          every step's samples: step, index, case_id, loss, weight, raw_score, score
    RUN_DIR/tensorboard/         scalars and sample slices, when tensorboard is installed
    RUN_DIR/cache/               prepared cases (data.cache = "disk")

A folder with ``checkpoints/last.pt`` is resumed; its ``config.json`` and ``splits.json`` must
then match the configuration and data asked for (only :data:`RESUMABLE_CHANGES` may differ).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic_files import atomic_file
from ..errors import TrainingError
from .cases import dataset_patients
from .config import RESUMABLE_CHANGES, TrainingConfig, config_differences
from .split import kfold_split

if TYPE_CHECKING:  # run_folder stays importable without torch
    from .step import StepResult

logger = logging.getLogger(__name__)


def read_json(path: Path) -> Any:
    """A JSON file of the run folder; damage is a ``TrainingError`` naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrainingError(f"'{path}' is damaged ({exc}); remove it or use a new RUN_DIR.") from exc


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


#: Keys of a dataset's description that are paths of this machine.
PATH_KEYS = ("path", "source_archive")


def _data_record(data_path: Path, patients: Mapping[str, str], info: dict[str, Any]) -> dict[str, Any]:
    """What ``splits.json`` says about the data: file name, counts, the dataset's description and, unless
    the dataset is de-identified, where the file and its archive are."""
    record = {"file": data_path.name, "path": str(data_path.resolve()), "cases": len(patients),
              "patients": len(set(patients.values())), "info": info}
    if info.get("deidentified"):
        return without_paths(record)
    return record


def without_paths(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a data record without the paths (:data:`PATH_KEYS`), at its top level and in its ``info``."""
    out = {key: value for key, value in record.items() if key not in PATH_KEYS}
    if isinstance(out.get("info"), dict):
        out["info"] = {key: value for key, value in out["info"].items() if key not in PATH_KEYS}
    return out


class RunFolder:
    """The paths of a run folder and the checks made before training in it."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir)
        self.config_file = self.path / "config.json"
        self.splits_file = self.path / "splits.json"
        self.last_checkpoint = self.path / "checkpoints" / "last.pt"
        self.best_checkpoint = self.path / "checkpoints" / "best.pt"
        self.log_file = self.path / "log.csv"
        self.samples_file = self.path / "samples.csv"
        self.tensorboard = self.path / "tensorboard"
        self.cache = self.path / "cache"

    @property
    def resuming(self) -> bool:
        """True when the folder holds ``checkpoints/last.pt``."""
        return self.last_checkpoint.is_file()

    def check_config(self, config: TrainingConfig) -> None:
        """Refuse to resume a run with settings other than those it was trained with."""
        if not self.resuming:
            return
        if not self.config_file.is_file():
            raise TrainingError(f"'{self.path}' has a checkpoint but no config.json; it is not a complete run "
                                "folder. Use a new RUN_DIR.")
        try:  # as this version reads it: sections added since the run started take their defaults
            old = TrainingConfig.from_dict(read_json(self.config_file)).to_dict()
        except TrainingError as exc:
            raise TrainingError(f"'{self.config_file}' cannot be resumed by this version ({exc}); train in a new "
                                "RUN_DIR.") from exc
        changed = [d for d in config_differences(old, config.to_dict())
                   if not any(d == p or d.startswith(p + ".") for p in RESUMABLE_CHANGES)]
        if changed:
            raise TrainingError(
                f"'{self.path}' was trained with other settings ({', '.join(changed)} differ from its config.json). "
                f"Resume with the same configuration (only {', '.join(RESUMABLE_CHANGES)} may change), or train "
                "in a new RUN_DIR.")

    def resolve_split(self, data_path: Path, config: TrainingConfig) -> dict[str, Any]:
        """The run's split: from ``splits.json`` when it exists (checked), else made (not written)."""
        patients, info = dataset_patients(data_path)
        data = config.data
        if self.splits_file.is_file():
            saved = read_json(self.splits_file)
            problems = [f"{key} {saved.get(key)!r} vs {value!r}" for key, value in
                        (("folds", data.folds), ("fold", data.fold), ("seed", data.seed)) if saved.get(key) != value]
            if saved.get("patients") != patients:
                problems.append("the data's cases or patients differ")
            if problems:
                raise TrainingError(
                    f"'{self.splits_file}' was made for another split ({'; '.join(problems)}). Use the same data, "
                    "--folds, --fold and seed to resume, or train this split in a new RUN_DIR.")
            return saved
        folds = kfold_split(patients, data.folds, data.seed)
        validation = folds[data.fold] if data.folds > 1 else []
        train = sorted(c for c in patients if c not in set(validation))
        return {"folds": data.folds, "fold": data.fold, "seed": data.seed, "cases_per_fold": folds,
                "train": train, "validation": list(validation), "patients": patients,
                "data": _data_record(data_path, patients, info)}

    def start(self, config: TrainingConfig, split: Mapping[str, Any]) -> None:
        """Create the folder and write ``config.json`` and ``splits.json``."""
        self.last_checkpoint.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.config_file, config.to_dict())
        write_json(self.splits_file, split)


#: Columns of ``samples.csv``: the step (from 1), the sample's place in the batch, its case, its
#: loss, its weight in the step's loss (summing to 1 over the batch), and the weighting's raw and
#: bounded scores (empty for uniform weights).
SAMPLE_COLUMNS = ("step", "index", "case_id", "loss", "weight", "raw_score", "score")


def _reopen(path: Path, header: Sequence[str], start_step: int):
    """``path`` rewritten with its header and the rows of steps up to ``start_step`` (0: none); open for appending."""
    kept: list[list[str]] = []
    if start_step and path.is_file():
        with open(path, newline="", encoding="utf-8") as handle:
            kept = [row for row in list(csv.reader(handle))[1:] if row and int(row[0]) <= start_step]
    handle = open(path, "w", newline="", encoding="utf-8")
    writer = csv.writer(handle)
    writer.writerow(header)
    writer.writerows(kept)
    handle.flush()
    return handle, writer


class RunLog:
    """``log.csv`` (step, metric, value) and ``samples.csv`` always; TensorBoard when installed. Rank 0 only.

    Resuming at step ``s`` keeps the rows of steps up to ``s`` and drops later ones (written
    after the checkpoint the run resumes from). ``tensorboard=False`` writes the CSV files only.
    """

    def __init__(self, run: RunFolder, start_step: int, enabled: bool, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.handle, self.csv = _reopen(run.log_file, ["step", "metric", "value"], start_step)
        self.samples_handle, self.samples_csv = _reopen(run.samples_file, SAMPLE_COLUMNS, start_step)
        if not tensorboard:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info("tensorboard is not installed; logging to %s only", run.log_file)
        else:
            self.writer = SummaryWriter(log_dir=str(run.tensorboard), purge_step=start_step or None)

    def samples(self, step: int, case_ids: Sequence[str], result: "StepResult", tensorboard: bool = False) -> None:
        """One ``samples.csv`` row per sample of a step's :class:`~ctv_core.training.step.StepResult`.

        With ``tensorboard``, also the scalars ``sample_weight/<case_id>`` (weight times the
        batch size: 1 is the uniform weight) and ``sample_score/<case_id>`` (raw score).
        """
        if not self.enabled:
            return
        plan = result.plan
        count = len(case_ids)
        for n, case_id in enumerate(case_ids):
            raw = "" if plan.raw_scores is None else f"{float(plan.raw_scores[n]):.6g}"
            score = "" if plan.scores is None else f"{float(plan.scores[n]):.6g}"
            self.samples_csv.writerow([step, n, case_id, f"{float(result.losses[n]):.6g}",
                                       f"{float(plan.weights[n]):.6g}", raw, score])
            if tensorboard and self.writer is not None:
                self.writer.add_scalar(f"sample_weight/{case_id}", float(plan.weights[n]) * count, step)
                if plan.raw_scores is not None:
                    self.writer.add_scalar(f"sample_score/{case_id}", float(plan.raw_scores[n]), step)
        self.samples_handle.flush()

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """One row per value (and a TensorBoard scalar)."""
        if not self.enabled:
            return
        for name, value in values.items():
            self.csv.writerow([step, name, f"{value:.8g}"])
            if self.writer is not None:
                self.writer.add_scalar(name, value, step)
        self.handle.flush()

    def image(self, step: int, tag: str, rgb: np.ndarray) -> None:
        """An RGB image ``[H, W, 3]`` float in [0, 1] to TensorBoard."""
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag, rgb, step, dataformats="HWC")

    def close(self) -> None:
        if not self.enabled:
            return
        self.handle.close()
        self.samples_handle.close()
        if self.writer is not None:
            self.writer.close()
