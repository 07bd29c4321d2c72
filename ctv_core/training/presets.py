"""Named training configurations for ``ctv train --preset NAME``: a first run on a CPU, the full model on a GPU.

Each preset is a partial configuration (the keys it sets; every other key keeps its default)
read by :meth:`TrainingConfig.from_dict`, and is saved in full to ``RUN_DIR/config.json`` as
any configuration is. Expected times are in ``docs/training.md``, and every run prints its own
after a few measured steps.

``first-run``
    A small network (widths 8/16/32, two passes) on 16 x 32 x 32 patches of an 8 mm grid
    (128 x 256 x 256 mm), 600 steps with a decaying learning rate, validation every 200 steps,
    a checkpoint every 100 steps or 2 minutes: minutes on a laptop CPU, enough to see the whole
    path (training, validation, export, prediction, evaluation) work and the Dice rise. A coarse
    model, not a useful one: the package predicts on the 8 mm grid.
``gpu``
    The method's network (widths 16/32/64/96/128, two passes) on 96 x 128 x 160 patches,
    batch 4, 40 000 steps, 8 loader workers: a model worth evaluating, on one CUDA GPU.
"""

from __future__ import annotations

from typing import Any

from ..errors import TrainingError
from .config import TrainingConfig

#: Preset name -> the configuration keys it sets.
PRESETS: dict[str, dict[str, Any]] = {
    "first-run": {
        "sampling": {"patch_zyx": [16, 32, 32], "batch_size": 2, "foreground_probability": 0.5},
        "optimisation": {"steps": 600, "learning_rate": 0.003, "learning_rate_decay": "poly"},
        "schedule": {"checkpoint_every": 100, "checkpoint_minutes": 2.0, "validate_every": 200, "log_every": 10},
        "network": {"widths": [8, 16, 32], "passes": 2},
        "settings": {"preprocessing": {"spacing_mm": [8.0, 8.0, 8.0]}, "inference": {"patch_zyx": [32, 64, 64]}},
    },
    "gpu": {
        "sampling": {"patch_zyx": [96, 128, 160], "batch_size": 4},
        "optimisation": {"learning_rate": 0.0001, "steps": 40000},
        "schedule": {"checkpoint_every": 1000, "validate_every": 2000},
        "data": {"num_workers": 8},
    },
}


def preset_config(name: str) -> TrainingConfig:
    """The configuration of preset ``name`` (see the module docstring)."""
    if name not in PRESETS:
        raise TrainingError(f"There is no training preset '{name}'; choose one of {', '.join(PRESETS)}.")
    return TrainingConfig.from_dict(PRESETS[name])
