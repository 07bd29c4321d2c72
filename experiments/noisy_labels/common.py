"""What the two noisy-label experiments share: strict configuration files, the grid of runs, the runner.

A run is one (method, noise, seed); its folder holds ``result.json`` once it has finished,
written last and atomically, so a second start skips every finished run; a run that keeps a
resume checkpoint (``RESUME`` in its folder) continues from it, and the checkpoint is removed
once ``result.json`` is written. ``--shard K/N`` lets N processes share a grid.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from ctv_core.errors import CTVError, TrainingError
from ctv_core.strict_config import from_plain, strict_kwargs
from ctv_core.training.quality_config import QualityConfig
from ctv_core.training.run_folder import write_json

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
T = TypeVar("T")

#: Method name -> (QAM on, OCM on), as the method's table names them.
METHODS = {"baseline": (False, False), "qam": (True, False), "qam+ocm": (True, True)}
#: A run's resume checkpoint, in its folder while the run is unfinished.
RESUME = "resume.pt"


def method_quality(quality: QualityConfig, method: str) -> QualityConfig:
    """The ``quality`` section of ``method`` (its QAM settings from ``quality``)."""
    enabled, ocm = METHODS[method]
    data = {f.name: getattr(quality, f.name) for f in fields(quality)}
    return QualityConfig(**dict(data, enabled=enabled, overfitting_control=ocm))


def load_config(cls: type[T], path: Path) -> T:
    """The experiment configuration ``cls`` (a frozen dataclass of sections) from the JSON file ``path``.

    Strict, like the training configuration: an unknown key or a bad value raises
    ``TrainingError`` naming the file and the setting; a section left out takes its defaults.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        strict_kwargs(cls, data, str(path))
        hints = get_type_hints(cls)
        return cls(**{name: from_plain(hints[name], value, name) if is_dataclass(hints[name]) else value
                      for name, value in data.items()})
    except FileNotFoundError as exc:
        raise TrainingError(f"The experiment configuration '{path}' does not exist.") from exc
    except json.JSONDecodeError as exc:
        raise TrainingError(f"'{path}' is not valid JSON ({exc}).") from exc
    except (ValueError, TypeError) as exc:
        raise TrainingError(f"{path}: {exc}. Fix that setting.") from exc
    except TrainingError as exc:  # the embedded training configuration's own check
        raise TrainingError(f"{path}: {exc}") from exc


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with 0 <= K < N."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError as exc:
        raise TrainingError(f"--shard must be K/N (e.g. 0/2), not {text!r}") from exc
    if not 0 <= k < n:
        raise TrainingError(f"--shard K/N needs 0 <= K < N, not {text!r}")
    return k, n


def first_runs(runs: list[tuple[str, Any]], patterns: Sequence[str]) -> list[tuple[str, Any]]:
    """``runs`` with those whose name matches one of the glob ``patterns`` first (in the patterns' order), then
    the others in their order; every run once."""
    first = [run for pattern in patterns for run in runs if fnmatch.fnmatchcase(run[0], pattern)]
    first = list(dict.fromkeys(name for name, _ in first))
    return [run for name in first for run in runs if run[0] == name] + [run for run in runs if run[0] not in first]


def run_grid(runs: list[tuple[str, Any]], work: Path, shard: tuple[int, int],
             run_one: Callable[[Any, Path], dict[str, Any]], log: Callable[[str], None] = print,
             first: Sequence[str] = ()) -> None:
    """Run this shard's share of ``runs`` (``(name, spec)``), those matching ``first`` first (see :func:`first_runs`;
    every shard must be given the same), skipping those with a ``result.json``."""
    k, n = shard
    mine = [(name, spec) for i, (name, spec) in enumerate(first_runs(runs, first)) if i % n == k]
    for done, (name, spec) in enumerate(mine, 1):
        folder = work / name
        if (folder / "result.json").is_file():
            continue
        started = time.perf_counter()
        result = run_one(spec, folder)
        result["seconds"] = round(time.perf_counter() - started, 1)
        write_json(folder / "result.json", result)
        (folder / RESUME).unlink(missing_ok=True)
        log(f"[{done}/{len(mine)}] {name}: mean Dice {result['row']['mean_dice']:.4f} ({result['seconds']:.0f} s)")


def finished_results(work: Path, names: Iterable[str]) -> list[dict[str, Any]]:
    """The ``result.json`` of each finished run, in the grid's order."""
    out = []
    for name in names:
        path = work / name / "result.json"
        if path.is_file():
            out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


def set_threads(threads: int) -> None:
    """A fixed number of torch threads (results do not depend on the machine's core count)."""
    import torch

    torch.set_num_threads(int(threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def start(doc: str, config_class: type[T], default_config: Path, work_help: str, results_help: str,
          argv: list[str] | None, extra: Callable[[argparse.ArgumentParser], None] | None = None,
          ) -> tuple[argparse.Namespace, T, tuple[int, int]]:
    """The arguments every experiment command takes, its configuration read strictly, its shard; threads set."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--config", type=Path, default=default_config)
    parser.add_argument("--work", type=Path, required=True, help=work_help)
    parser.add_argument("--results", type=Path, default=HERE, help=results_help)
    parser.add_argument("--shard", default="0/1", help="K/N: run every N-th run from the K-th (N processes)")
    parser.add_argument("--report-only", action="store_true", help="only gather finished runs into the results")
    parser.add_argument("--first", action="append", default=[], metavar="PATTERN",
                        help="run the runs whose name matches this glob (e.g. 'baseline/75pct_5-13px/*') before the "
                             "others; repeatable, in order; give every shard the same")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    config = load_config(config_class, args.config)
    shard = parse_shard(args.shard)
    set_threads(config.threads)
    return args, config, shard


def command(main: Callable[[list[str] | None], int]) -> None:
    """Run ``main``; a ``CTVError`` is one line on stderr and exit status 2, never a traceback."""
    try:
        sys.exit(main(None))
    except CTVError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
