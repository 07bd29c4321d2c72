"""Beyond the method: QAM+OCM for a 3D network at batch size 1, on phantoms with clinic-like noisy CTVs.

Usage::

    python experiments/noisy_labels/run_3d.py [--config configs/noisy_labels_3d.json] --work DIR
        [--shard K/N] [--results DIR] [--report-only]

Synthetic pelvic phantoms (``ctv_core.phantom``) stand in for a clinic's archive: the training
phantoms' CTVs are redrawn by simulated clinicians (a systematic margin in mm, a case-to-case
spread, skipped slices: :func:`ctv_core.training.label_noise.simulate_clinic_noise`), written
to an HDF5 training set with the project's own writer, and the network is trained by
``ctv_core.training.loop.train`` exactly as ``ctv train`` does, each step one group of
``sampling.batch_size`` patches processed one at a time (``sampling.micro_batch = 1``: the
memory of batch 1). The baseline trains on the same data, steps and groups with uniform
weights (same budget). Each run is exported (``ctv export``'s code, so the package holds the
network only) and scored by ``CTVPredictor`` on unseen phantoms against their clean truth,
Dice on the CT grid.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, command, finished_results, method_quality, run_grid, start  # noqa: E402

from ctv_core.strict_config import from_plain, is_int  # noqa: E402
from ctv_core.training.config import TrainingConfig  # noqa: E402
from ctv_core.training.label_noise import ClinicianStyle, simulate_clinic_noise  # noqa: E402

DEFAULT_CONFIG = REPO / "configs" / "noisy_labels_3d.json"


@dataclass(frozen=True)
class Phantoms3D:
    """Training and test phantoms (seeds), their matrix and slice thickness (mm)."""

    train_seeds: tuple[int, ...] = tuple(range(100, 112))
    test_seeds: tuple[int, ...] = tuple(range(9100, 9104))
    matrix: int = 256
    slice_thickness_mm: float = 5.0
    slices: int | None = None

    def __post_init__(self) -> None:
        if len(self.train_seeds) < 2 or not self.test_seeds:
            raise ValueError("phantoms needs at least 2 train_seeds and 1 test_seed")
        if set(self.train_seeds) & set(self.test_seeds):
            raise ValueError("phantoms.train_seeds and test_seeds must differ (test on unseen phantoms)")


@dataclass(frozen=True)
class Experiment3D:
    """``configs/noisy_labels_3d.json``: phantoms, clinicians, methods, seeds, the training configuration, device.

    ``training`` is a whole :class:`~ctv_core.training.config.TrainingConfig` (as ``ctv train
    --config`` reads it); each run replaces ``data.seed`` and switches the QAM/OCM by method.
    """

    phantoms: Phantoms3D = field(default_factory=Phantoms3D)
    clinicians: tuple[dict, ...] = ()
    methods: tuple[str, ...] = ("baseline", "qam+ocm")
    seeds: tuple[int, ...] = (0, 1, 2)
    training: dict = field(default_factory=dict)
    threads: int = 1
    device: str = "cpu"

    def styles(self) -> list[ClinicianStyle]:
        return [from_plain(ClinicianStyle, c, "clinicians[]") for c in self.clinicians]

    def data_key(self) -> str:
        """A short digest of what the noisy training set depends on (a stale file is never reused)."""
        text = json.dumps([asdict(self.phantoms), list(self.clinicians)], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    def training_config(self, method: str, seed: int) -> TrainingConfig:
        base = TrainingConfig.from_dict(self.training)
        return replace(base, data=replace(base.data, seed=seed), quality=method_quality(base.quality, method))

    def __post_init__(self) -> None:
        self.styles()  # checked now, not after the phantoms are made
        TrainingConfig.from_dict(self.training)
        if not self.clinicians:
            raise ValueError("clinicians must list at least one simulated clinician")
        if not self.seeds or any(not is_int(s) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be integers >= 0, not {list(self.seeds)!r}")


def make_phantoms(config: Experiment3D, folder: Path) -> dict[int, Path]:
    """Every phantom of the configuration under ``folder/p<seed>`` (made once, reused)."""
    from ctv_core.phantom import ScanSettings, make_phantom

    settings = ScanSettings(matrix=config.phantoms.matrix, slice_thickness_mm=config.phantoms.slice_thickness_mm,
                            slices=config.phantoms.slices)
    out = {}
    for seed in (*config.phantoms.train_seeds, *config.phantoms.test_seeds):
        out[seed] = folder / f"p{seed}"
        if not (out[seed] / "masks" / "CTV.nii.gz").is_file():
            make_phantom(out[seed], seed=seed, settings=settings)
    return out


def noisy_dataset(config: Experiment3D, phantoms: dict[int, Path], seed: int, path: Path) -> dict[str, Any]:
    """The training set with each CTV as its simulated clinician drew it (``target``) and the truth (``truth``)."""
    import SimpleITK as sitk

    import ctv_core
    from ctv_core.dataset.hdf5_writer import DatasetWriter
    from ctv_core.evaluation.metrics import dice

    cases = {f"case_{n:05d}": s for n, s in enumerate(config.phantoms.train_seeds)}
    cts = {c: ctv_core.load_ct_series(phantoms[s] / "ct").image for c, s in cases.items()}
    truths = {c: sitk.ReadImage(str(phantoms[s] / "masks" / "CTV.nii.gz")) for c, s in cases.items()}
    arrays = {c: sitk.GetArrayFromImage(m) > 0 for c, m in truths.items()}
    spacings = {c: tuple(reversed(m.GetSpacing())) for c, m in truths.items()}
    noisy, record = simulate_clinic_noise(arrays, spacings, config.styles(), seed)
    exact = {s.name for s in config.styles() if s.exact}
    if not path.is_file():
        with DatasetWriter(path, target_aliases=("CTV",)) as writer:
            for case_id, truth in truths.items():
                drawn = sitk.GetImageFromArray(noisy[case_id].astype(np.uint8))
                drawn.CopyInformation(truth)
                writer.add_case(case_id, cts[case_id], {"target": ("CTV", drawn), "truth": ("CTV", truth)},
                                patient_key=f"P{cases[case_id]}", patient_position="HFS")
    return {"noisy_cases": sorted(c for c, r in record.items() if r.clinician not in exact),
            "clinicians": {c: {"clinician": r.clinician, "margin_mm": r.margin_mm,
                               "skipped_slices": len(r.skipped_slices), "label_dice": dice(noisy[c], arrays[c])}
                           for c, r in record.items()}}


def train_run(config: Experiment3D, phantoms: dict[int, Path], spec: tuple[str, int], folder: Path) -> dict[str, Any]:
    """Train one (method, seed), export it, score it on the test phantoms."""
    import SimpleITK as sitk

    import ctv_core
    from ctv_core.evaluation.metrics import dice
    from ctv_core.inference.predictor import CTVPredictor
    from ctv_core.training.export import export_package
    from ctv_core.training.loop import train

    method, seed = spec
    data = folder.parent.parent / f"data_seed{seed}_{config.data_key()}.h5"
    noise = noisy_dataset(config, phantoms, seed, data)
    training = config.training_config(method, seed)
    result = train(data, folder / "run", training, device=config.device)
    package = export_package(folder / "run", folder / "package", checkpoint="last", version="0.0.0")
    predictor = CTVPredictor(package, device=config.device)
    scores = {}
    for test_seed in config.phantoms.test_seeds:
        ct = ctv_core.load_ct_series(phantoms[test_seed] / "ct").image
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(phantoms[test_seed] / "masks" / "CTV.nii.gz")))
        scores[f"p{test_seed}"] = dice(sitk.GetArrayFromImage(predictor.predict(ct)), truth)
    row = {"method": method, "noise": "clinic", "seed": seed, "dice": {"CTV": float(np.mean(list(scores.values())))},
           "mean_dice": float(np.mean(list(scores.values())))}
    return {"row": row, "dice_per_phantom": scores, "steps": result.step,
            "batch_size": training.sampling.batch_size, "micro_batch": training.sampling.micro_batch,
            "noisy_cases": noise["noisy_cases"], "clinicians": noise["clinicians"]}


def main(argv: list[str] | None = None) -> int:
    args, config, shard = start(__doc__, Experiment3D, DEFAULT_CONFIG, "phantoms, data and run folders",
                                "where results_3d.json, .md and the plot go", argv)
    runs = [(f"{m}/seed{s}", (m, s)) for s in config.seeds for m in config.methods]
    if not args.report_only:
        phantoms = make_phantoms(config, args.work / "phantoms")
        print(f"{len(config.phantoms.train_seeds)} training and {len(config.phantoms.test_seeds)} test phantoms; "
              f"{len(runs)} runs, shard {args.shard}", flush=True)
        run_grid(runs, args.work / "runs", shard, lambda spec, folder: train_run(config, phantoms, spec, folder),
                 log=lambda line: print(line, flush=True), first=args.first)
    from report import write_report_3d

    results = finished_results(args.work / "runs", [name for name, _ in runs])
    write_report_3d(results, args.work / "runs", args.results, config)
    print(f"{len(results)} of {len(runs)} runs finished; results in {args.results}")
    return 0


if __name__ == "__main__":
    command(main)
