"""Training: configuration, the split by patient, sampling, train/resume, two processes, export.

The data is a tiny HDF5 training set written with the project's own writer
(:class:`ctv_core.dataset.hdf5_writer.DatasetWriter`) from small phantoms (256 x 256 x 12 at
5 mm), and the network is tiny (widths 4/8, 2 passes, 8 mm model grid, 16 x 32 x 32 patches),
so every run takes seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import ctv_core
from ctv_core.training.export import default_name, export_package
from ctv_core.model.package import load_model_package
from ctv_core.phantom import ScanSettings, make_phantom
from ctv_core.inference.predictor import CTVPredictor
from ctv_core.dataset.hdf5_writer import DatasetWriter
from ctv_core.errors import TrainingError
from ctv_core.structures.label_maps import read_tissue_labels
from ctv_core.training.cases import CaseStore, dataset_patients, prepare_case
from ctv_core.training.checkpoints import load_checkpoint
from ctv_core.training.config import TrainingConfig, load_training_config
from ctv_core.training.loop import train
from ctv_core.training.patches import PatchDataset, StepBatchSampler
from ctv_core.training.split import kfold_split

REPO = Path(__file__).resolve().parents[1]

#: case id -> (phantom seed, patient key); case_00003 is a second CT of patient A.
CASES = {"case_00000": (1, "PAT-A"), "case_00001": (2, "PAT-B"), "case_00002": (3, "PAT-C"),
         "case_00003": (1, "PAT-A")}


def tiny_config(steps: int = 4, **changes) -> TrainingConfig:
    data = {
        "data": {"folds": 3, "fold": 0, "seed": 7, "cache": "disk"},
        "sampling": {"patch_zyx": [16, 32, 32], "batch_size": 2, "foreground_probability": 0.5},
        "optimisation": {"steps": steps, "learning_rate": 1e-3},
        "schedule": {"checkpoint_every": 2, "validate_every": 2, "log_every": 1, "sample_images": 1},
        "network": {"widths": [4, 8], "passes": 2},
        "settings": {"preprocessing": {"spacing_mm": [8.0, 8.0, 8.0]}, "inference": {"patch_zyx": [16, 32, 32]}},
    }
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        data.setdefault(section, {})[key] = value
    return TrainingConfig.from_dict(data)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> dict[int, tuple[sitk.Image, sitk.Image, tuple]]:
    """Per seed: the CT, its CTV mask, and its tissue label map with the legend."""
    root = tmp_path_factory.mktemp("phantoms")
    out = {}
    for seed in sorted({s for s, _ in CASES.values()}):
        phantom = make_phantom(root / str(seed), seed=seed,
                               settings=ScanSettings(matrix=256, slices=12, slice_thickness_mm=5.0))
        ct = ctv_core.load_ct_series(phantom.ct_dir).image
        mask = sitk.ReadImage(str(phantom.masks["CTV"]))
        out[seed] = (ct, mask, read_tissue_labels(phantom.tissue_labels, phantom.grid))
    return out


def write_dataset(path: Path, phantoms, tissue_labels: bool = True) -> Path:
    """A ctv-dataset file of ``CASES`` written by the project's writer (with the tissue label maps)."""
    with DatasetWriter(path, target_aliases=("CTV",)) as writer:
        for case_id, (seed, patient) in CASES.items():
            ct, mask, labels = phantoms[seed]
            writer.add_case(case_id, ct, {"target": ("CTV", mask)}, patient_key=patient, patient_position="HFS",
                            tissue_labels=labels if tissue_labels else None)
    return path


@pytest.fixture(scope="module")
def dataset(phantoms, tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "train.h5", phantoms)


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["modules"]["network"]


# --------------------------------------------------------------------------- configuration


def test_config_round_trip_defaults_and_strictness(tmp_path):
    default = TrainingConfig()
    assert default.data.folds == 3 and default.optimisation.learning_rate == 1e-4
    assert default.sampling.foreground_probability == pytest.approx(0.33)
    assert default.augmentation.noise_variance == 0.001 and default.augmentation.rotation_deg == 10.0
    assert default.augmentation.translation_voxels == 8 and default.augmentation.flip_axes == (0, 1, 2)
    assert default.pass_weights == (0.5, 1.0)
    config = tiny_config()
    assert TrainingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"optimisation": {"learning_rate": 3e-4, "momentum": 0.9}, "colour": 1}))
    with pytest.raises(TrainingError, match="unknown setting.*colour"):
        load_training_config(path)
    path.write_text(json.dumps({"optimisation": {"learning_rate": 3e-4, "momentum": 0.9}}))
    with pytest.raises(TrainingError, match="momentum"):
        load_training_config(path)
    path.write_text(json.dumps({"sampling": {"patch_zyx": [18, 32, 32]}, "network": {"widths": [4, 8, 16]}}))
    with pytest.raises(TrainingError, match="multiples of 4"):
        load_training_config(path)
    path.write_text(json.dumps({"optimisation": {"pass_weights": [1.0]}}))
    with pytest.raises(TrainingError, match="one weight per pass"):
        load_training_config(path)
    path.write_text(json.dumps({"optimisation": {"learning_rate": 3e-4}}))
    assert load_training_config(path).optimisation.learning_rate == 3e-4
    path.write_text(json.dumps({"optimisation": {"learning_rate_decay": "cosine"}}))
    with pytest.raises(TrainingError, match="learning_rate_decay must be one of constant, poly, step"):
        load_training_config(path)
    with pytest.raises(TrainingError, match="does not exist"):
        load_training_config(tmp_path / "missing.json")
    with pytest.raises(TrainingError, match="fold"):
        default.with_fold(folds=3, fold=3)


# --------------------------------------------------------------------------- split and sampling


def test_kfold_split_by_patient_is_seeded_and_keeps_patients_together():
    patients = {f"case_{n:03d}": f"P{n // 2 if n < 10 else n}" for n in range(30)}  # cases 0-9: two per patient
    folds = kfold_split(patients, 3, seed=11)
    assert sorted(c for fold in folds for c in fold) == sorted(patients)
    owners = [{patients[c] for c in fold} for fold in folds]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not owners[a] & owners[b]  # no patient in two folds
    for n in range(0, 10, 2):  # the two cases of a patient stay together
        assert any({f"case_{n:03d}", f"case_{n + 1:03d}"} <= set(fold) for fold in folds)
    sizes = sorted(len(o) for o in owners)
    assert sizes[-1] - sizes[0] <= 1  # patients are dealt evenly
    assert kfold_split(patients, 3, seed=11) == folds
    assert kfold_split(patients, 3, seed=12) != folds
    with pytest.raises(TrainingError, match="at least 3 patients"):
        kfold_split({"a": "P1", "b": "P1", "c": "P2"}, 3, seed=0)


def test_batch_sampler_shares_the_global_batch_between_ranks():
    single = list(StepBatchSampler(3, 5, 4))
    rank0 = list(StepBatchSampler(3, 5, 4, rank=0, world=2))
    rank1 = list(StepBatchSampler(3, 5, 4, rank=1, world=2))
    assert single == [[12, 13, 14, 15], [16, 17, 18, 19]]
    assert [a + b for a, b in zip(rank0, rank1)] == single
    with pytest.raises(TrainingError, match="multiple"):
        StepBatchSampler(0, 1, 3, rank=0, world=2)


def test_case_preparation_and_patches(dataset, phantoms, tmp_path):
    config = tiny_config()
    patients, info = dataset_patients(dataset)
    assert patients == {c: p for c, (_, p) in CASES.items()} and info["cases"] == 4
    store = CaseStore(dataset, config.settings.preprocessing, config.network.divisor,
                      cache_dir=tmp_path / "cache")
    case = store.get("case_00001")
    # the mask is on the very grid prepare_input gives the CT (the prediction path)
    ct, mask, _ = phantoms[2]
    direct = prepare_case(ct, mask, config.settings.preprocessing, config.network.divisor)
    np.testing.assert_array_equal(case.image, direct.image)
    np.testing.assert_array_equal(case.mask, direct.mask)
    assert case.grid == direct.grid and case.mask.shape == case.image.shape
    assert all(s % config.network.divisor == 0 for s in case.image.shape)
    # the resampled mask keeps the CTV's volume (linear, >= 0.5)
    ct_cc = sitk.GetArrayFromImage(mask).sum() * np.prod(mask.GetSpacing()) / 1000
    model_cc = case.mask.sum() * np.prod(case.grid.spacing) / 1000
    assert model_cc == pytest.approx(ct_cc, rel=0.15)
    store.close()
    again = CaseStore(dataset, config.settings.preprocessing, config.network.divisor, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    np.testing.assert_array_equal(again.get("case_00001").mask, case.mask)  # from the npz
    fg = PatchDataset(again, ["case_00001"], config.sampling.__class__(patch_zyx=(16, 32, 32), batch_size=2,
                                                                         foreground_probability=1.0),
                      config.augmentation, seed=3)
    image, target, case_id = fg[5]
    assert image.shape == (1, 16, 32, 32) and target.shape == (1, 16, 32, 32) and case_id == "case_00001"
    assert target.sum() > 0  # centred on the target
    image2, target2, _ = fg[5]
    assert torch.equal(image, image2) and torch.equal(target, target2)  # a sample is a function of (seed, index)
    assert not torch.equal(fg[6][0], image)
    # appearance randomisation: the same patch, its image synthesised from the tissue fractions
    tissues = CaseStore(dataset, config.settings.preprocessing, config.network.divisor, tissues=True)
    synthesis = dataclasses.replace(config.synthesis, probability=1.0)
    synth = PatchDataset(tissues, ["case_00001"], fg_sampling := dataclasses.replace(
        config.sampling, foreground_probability=1.0), config.augmentation, seed=3, synthesis=synthesis)
    image3, target3, _ = synth[5]
    assert torch.equal(target3, target) and not torch.equal(image3, image)  # same patch and target, new look
    assert torch.equal(synth[5][0], image3)  # still a function of (seed, index)
    real = PatchDataset(tissues, ["case_00001"], fg_sampling, config.augmentation, seed=3)
    assert torch.equal(real[5][0], image)  # synthesis off: the method's patches, unchanged
    assert tissues.get("case_00001").tissues.shape[1:] == case.image.shape


# --------------------------------------------------------------------------- training, resume, export


@pytest.fixture(scope="module")
def straight_run(dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "straight"
    return train(dataset, run_dir, tiny_config(steps=4), device="cpu")


def test_training_runs_writes_checkpoints_and_logs(straight_run):
    result = straight_run
    run_dir = result.run_dir
    assert result.step == 4 and np.isfinite(result.final_loss)
    assert result.best_dice is not None and 0.0 <= result.best_dice <= 1.0
    assert result.last_checkpoint == run_dir / "checkpoints" / "last.pt"
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    checkpoint = load_checkpoint(result.last_checkpoint)  # weights_only=True
    assert checkpoint["step"] == 4 and set(checkpoint["rng"]) >= {"python", "numpy", "torch"}
    assert TrainingConfig.from_dict(json.loads((run_dir / "config.json").read_text())) == tiny_config(steps=4)
    split = json.loads((run_dir / "splits.json").read_text())
    assert not set(split["train"]) & set(split["validation"])
    assert {"case_00000", "case_00003"} <= set(split["train"]) or {"case_00000", "case_00003"} <= set(
        split["validation"])
    rows = (run_dir / "log.csv").read_text().splitlines()
    assert rows[0] == "step,metric,value"
    metrics = {r.split(",")[1] for r in rows[1:]}
    assert {"loss", "lr", "val_dice"} <= metrics
    assert any((run_dir / "tensorboard").glob("events.*"))


def test_poly_learning_rate_decays_with_the_step(dataset, tmp_path):
    run_dir = tmp_path / "poly"
    train(dataset, run_dir, tiny_config(steps=3, optimisation__learning_rate_decay="poly",
                                        schedule__validate_every=100), device="cpu")
    rows = [r.split(",") for r in (run_dir / "log.csv").read_text().splitlines()[1:]]
    rates = {int(step): float(value) for step, metric, value in rows if metric == "lr"}
    # step s (counted from 1) ran at 1e-3 * (1 - (s - 1) / 3) ** 0.9
    assert rates == pytest.approx({s: 1e-3 * (1 - (s - 1) / 3) ** 0.9 for s in (1, 2, 3)}, rel=1e-6)


def test_step_learning_rate_is_a_staircase_of_the_step(dataset, tmp_path):
    run_dir = tmp_path / "step"
    train(dataset, run_dir, tiny_config(steps=5, optimisation__learning_rate_decay="step",
                                        optimisation__step_decay_every=2, optimisation__step_decay_factor=0.5,
                                        schedule__validate_every=100), device="cpu")
    rows = [r.split(",") for r in (run_dir / "log.csv").read_text().splitlines()[1:]]
    rates = {int(step): float(value) for step, metric, value in rows if metric == "lr"}
    assert rates == pytest.approx({1: 1e-3, 2: 1e-3, 3: 5e-4, 4: 5e-4, 5: 2.5e-4}, rel=1e-6)
    for bad, message in (({"step_decay_every": 0}, "step_decay_every"), ({"step_decay_factor": 1.5}, "step_decay_factor")):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps({"optimisation": {"learning_rate_decay": "step", **bad}}))
        with pytest.raises(TrainingError, match=message):
            load_training_config(path)


def test_resume_is_bitwise_identical_to_a_straight_run(dataset, straight_run, tmp_path):
    run_dir = tmp_path / "resumed"
    first = train(dataset, run_dir, tiny_config(steps=2), device="cpu")
    assert first.step == 2
    second = train(dataset, run_dir, tiny_config(steps=4), device="cpu")
    assert second.resumed_from == 2 and second.step == 4
    straight, resumed = weights_of(straight_run.last_checkpoint), weights_of(second.last_checkpoint)
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    rows = [r for r in (run_dir / "log.csv").read_text().splitlines()[1:] if r.split(",")[1] == "loss"]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4]


def test_resume_with_synthesis_is_bitwise_identical_and_needs_label_maps(dataset, phantoms, tmp_path):
    config = functools.partial(tiny_config, synthesis__probability=0.5, schedule__validate_every=100)
    straight = train(dataset, tmp_path / "straight", config(steps=4), device="cpu")
    train(dataset, tmp_path / "resumed", config(steps=2), device="cpu")
    resumed = train(dataset, tmp_path / "resumed", config(steps=4), device="cpu")
    assert resumed.resumed_from == 2
    a, b = weights_of(straight.last_checkpoint), weights_of(resumed.last_checkpoint)
    assert all(torch.equal(a[name], b[name]) for name in a)
    plain = train(dataset, tmp_path / "plain", tiny_config(steps=4, schedule__validate_every=100), device="cpu")
    assert not all(torch.equal(a[name], weights_of(plain.last_checkpoint)[name]) for name in a)
    without = write_dataset(tmp_path / "no_labels.h5", phantoms, tissue_labels=False)
    with pytest.raises(TrainingError, match="synthesis.probability > 0 needs tissue label maps.*--tissue-labels"):
        train(without, tmp_path / "refused", config(steps=1), device="cpu")


def test_fine_tuning_starts_from_a_packages_weights_and_records_it(dataset, straight_run, tmp_path):
    start = export_package(straight_run.run_dir, tmp_path / "start", version="0.0.1")
    start_weights = start.build_network().state_dict()
    convolutions = [k for k, v in start_weights.items() if v.ndim == 5]
    tuned = train(dataset, tmp_path / "tuned", tiny_config(steps=1, optimisation__learning_rate=1e-6).with_initial_weights(
        start.path), device="cpu")
    after = weights_of(tuned.last_checkpoint)
    fresh = weights_of(train(dataset, tmp_path / "fresh", tiny_config(steps=1, optimisation__learning_rate=1e-6),
                             device="cpu").last_checkpoint)
    assert max(float((after[k] - start_weights[k]).abs().max()) for k in convolutions) < 1e-5
    assert max(float((fresh[k] - start_weights[k]).abs().max()) for k in convolutions) > 1e-3
    record = export_package(tuned.run_dir, tmp_path / "tuned_pkg").manifest["training"]["initial_weights"]
    assert record["fingerprint"] == start.sha256 and record["model_id"] == "ctv-unet3d-straight-fold0 0.0.1"
    wider = tiny_config(steps=1, network__widths=[4, 16]).with_initial_weights(start.path)
    with pytest.raises(TrainingError, match="optimisation.initial_weights: the network of .* is not the run's"):
        train(dataset, tmp_path / "wider", wider, device="cpu")
    with pytest.raises(TrainingError, match="optimisation.initial_weights: .*not a usable model package"):
        train(dataset, tmp_path / "nowhere", tiny_config(steps=1).with_initial_weights(tmp_path / "no_such"),
              device="cpu")


def test_resume_refuses_other_settings_or_split(dataset, straight_run, tmp_path):
    run_dir = tmp_path / "run"
    train(dataset, run_dir, tiny_config(steps=1), device="cpu")
    with pytest.raises(TrainingError, match="optimisation.learning_rate"):
        train(dataset, run_dir, tiny_config(steps=2, optimisation__learning_rate=5e-4), device="cpu")
    with pytest.raises(TrainingError, match="data.fold"):
        train(dataset, run_dir, tiny_config(steps=2).with_fold(fold=1), device="cpu")
    (run_dir / "checkpoints" / "last.pt").unlink()
    with pytest.raises(TrainingError, match="splits.json.*another split"):
        train(dataset, run_dir, tiny_config(steps=2).with_fold(fold=1), device="cpu")


def test_export_gives_a_package_that_predicts(straight_run, dataset, phantoms, tmp_path):
    package = export_package(straight_run.run_dir, tmp_path / "pkg", version="0.0.1")
    loaded = load_model_package(tmp_path / "pkg")
    assert loaded.sha256 == package.sha256 and loaded.version == "0.0.1"
    manifest = loaded.manifest
    assert str(dataset.resolve()) in (straight_run.run_dir / "splits.json").read_text()  # the run knows its data
    assert str(dataset.parent.resolve()) not in json.dumps(manifest)  # the package ships no path of this machine
    assert manifest["name"] == "ctv-unet3d-straight-fold0"
    assert f"the weights of step {straight_run.best_step} (best validation Dice) of a 4-step run" in \
        manifest["description"]
    assert manifest["training"]["folds"] == 3 and manifest["training"]["fold"] == 0
    assert manifest["training"]["steps"] == straight_run.best_step
    assert manifest["training"]["data"]["cases"] == 4
    assert manifest["metrics"]["validation_dice"] == pytest.approx(straight_run.best_dice)
    assert loaded.settings == tiny_config().settings
    ct, _, _ = phantoms[2]
    mask = CTVPredictor(loaded, device="cpu").predict(ct)
    assert mask.GetSize() == ct.GetSize() and mask.GetPixelID() == sitk.sitkUInt8
    assert np.allclose(mask.GetOrigin(), ct.GetOrigin()) and np.allclose(mask.GetDirection(), ct.GetDirection())
    last = export_package(straight_run.run_dir, tmp_path / "pkg_last", checkpoint="last")
    assert last.manifest["training"]["steps"] == 4 and last.manifest["training"]["run_steps"] == 4
    assert default_name(Path("runs/fold0"), 0) == "ctv-unet3d-fold0"  # not ...-fold0-fold0
    with pytest.raises(TrainingError, match="not a training run folder"):
        export_package(tmp_path, tmp_path / "pkg2")


# --------------------------------------------------------------------------- stopping and resuming


def _config_file(path: Path, config: TrainingConfig) -> Path:
    path.write_text(json.dumps(config.to_dict()))
    return path


def _interrupt_ctv_train(dataset: Path, run_dir: Path, config: Path, after_step: int,
                         sigterm: bool = False) -> tuple[str, str, int]:
    """Start ``ctv train -v`` in its own process group, wait until ``after_step`` steps are logged, then press
    Ctrl+C as a terminal does (SIGINT to the whole group: DataLoader workers included), or with ``sigterm``
    stop it as a batch system does (SIGTERM to the process); (stdout, stderr, status)."""
    from conftest import ctv_command

    process = subprocess.Popen([ctv_command(), "train", str(dataset), str(run_dir), "--config", str(config),
                                "--device", "cpu", "-v"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        log = run_dir / "samples.csv"
        for _ in range(1200):  # up to 120 s
            rows = log.read_text().splitlines() if log.is_file() else []
            if len(rows) > 1 and int(rows[-1].split(",")[0]) >= after_step:
                break
            assert process.poll() is None, process.communicate()
            time.sleep(0.1)
        if sigterm:
            process.terminate()
        else:
            os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    return out, err, process.returncode


def test_ctrl_c_saves_the_step_under_way_and_prints_the_command_that_resumes_there(dataset, tmp_path):
    """SIGINT to a real ``ctv train`` mid-run: it saves the step it was on (no checkpoint was due), exits
    130 naming the step and the resume command, and that command continues from exactly that step to
    the weights of a straight run."""
    from conftest import ctv_command

    endless = tiny_config(steps=100000, schedule__checkpoint_every=100000, schedule__checkpoint_minutes=0,
                          schedule__validate_every=100000)
    config = _config_file(tmp_path / "cfg.json", endless)
    run_dir = tmp_path / "run"
    _, err, status = _interrupt_ctv_train(dataset, run_dir, config, after_step=8)  # past the timed warm-up
    assert status == 130, err
    assert "Traceback" not in err
    assert "training case(s)" in err and "network of" in err and "schedule.checkpoint_minutes=0" in err
    assert "s per step: about" in err
    assert "INFO ctv_core.training.loop: step 3/100000 loss" in err  # -v: the loss every log_every (1) steps
    checkpoint = run_dir / "checkpoints" / "last.pt"
    step = int(load_checkpoint(checkpoint)["step"])
    assert step >= 8
    assert f"interrupted at step {step}; step {step} is saved in {checkpoint}" in err
    assert f"INFO ctv_core.training.loop: step {step} saved in {checkpoint}" in err
    losses = [int(r.split(",")[0]) for r in (run_dir / "log.csv").read_text().splitlines()[1:] if ",loss," in r]
    assert losses[-1] == step  # nothing trained after the saved step
    command = err.split("Resume with:\n")[1].strip()
    assert command == f"ctv train {dataset} {run_dir} --config {config} --device cpu"

    _config_file(config, tiny_config(steps=step + 2, schedule__checkpoint_every=100000,
                                     schedule__checkpoint_minutes=0, schedule__validate_every=100000))
    resumed = subprocess.run([ctv_command(), *shlex.split(command)[1:], "-q"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {step} of {step + 2}" in resumed.stderr
    assert f"Trained {step + 2} steps" in resumed.stdout
    straight = train(dataset, tmp_path / "straight", tiny_config(steps=step + 2, schedule__validate_every=100000),
                     device="cpu")
    a, b = weights_of(straight.last_checkpoint), weights_of(checkpoint)
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_ctrl_c_with_loader_workers_saves_the_step_under_way(dataset, tmp_path):
    """The DataLoader's worker processes get the terminal's SIGINT too; they leave it to the trainer."""
    config = _config_file(tmp_path / "cfg.json", tiny_config(steps=100000, data__num_workers=1,
                                                             schedule__checkpoint_every=100000,
                                                             schedule__checkpoint_minutes=0,
                                                             schedule__validate_every=100000))
    _, err, status = _interrupt_ctv_train(dataset, tmp_path / "run", config, after_step=3)
    assert status == 130 and "Traceback" not in err, err
    step = int(load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"])
    assert step >= 3 and f"interrupted at step {step}" in err


def test_sigterm_saves_the_step_under_way_too(dataset, tmp_path):
    config = _config_file(tmp_path / "cfg.json", tiny_config(steps=100000, schedule__checkpoint_every=100000,
                                                             schedule__checkpoint_minutes=0,
                                                             schedule__validate_every=100000))
    _, err, status = _interrupt_ctv_train(dataset, tmp_path / "run", config, after_step=2, sigterm=True)
    assert status == 130 and "Traceback" not in err, err
    step = int(load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"])
    assert step >= 2 and "SIGTERM: finishing step" in err and f"interrupted at step {step}" in err


def test_presets_are_configurations_and_exclude_config(tmp_path):
    from conftest import ctv_command

    from ctv_core.training.presets import PRESETS, preset_config

    first = preset_config("first-run")
    assert first.optimisation.steps == 600 and first.network.widths == (8, 16, 32)
    assert first.sampling.patch_zyx == (16, 32, 32) and first.settings.preprocessing.spacing_mm == (8.0, 8.0, 8.0)
    assert preset_config("gpu").sampling.patch_zyx == (96, 128, 160)
    with pytest.raises(TrainingError, match="no training preset 'fast'.*first-run, gpu"):
        preset_config("fast")
    helped = subprocess.run([ctv_command(), "train", "--help"], capture_output=True, text=True)
    assert all(f"  {name} " in helped.stdout for name in PRESETS)
    both = subprocess.run([ctv_command(), "train", "d.h5", str(tmp_path / "run"), "--preset", "first-run",
                           "--config", "c.json"], capture_output=True, text=True)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr and "Traceback" not in both.stderr


def test_checkpoints_by_time_as_well_as_by_steps(dataset, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ctv_core.training.loop")

    def saved_steps(run: str, minutes: float) -> list[str]:
        caplog.clear()
        train(dataset, tmp_path / run, tiny_config(steps=3, schedule__checkpoint_every=100,
                                                   schedule__checkpoint_minutes=minutes,
                                                   schedule__validate_every=100), device="cpu")
        return [r.getMessage().split()[1] for r in caplog.records if r.getMessage().endswith("last.pt")]

    assert saved_steps("by_steps", 0) == ["3"]  # the end only
    assert saved_steps("by_time", 1e-6) == ["1", "2", "3"]  # every step: the minutes have always passed


def test_a_deidentified_dataset_leaves_no_path_in_the_split(phantoms, tmp_path):
    from ctv_core.training.run_folder import RunFolder

    path = tmp_path / "deid.h5"
    with DatasetWriter(path, target_aliases=("CTV",), deidentified=True) as writer:
        for case_id, (seed, patient) in CASES.items():
            writer.add_case(case_id, phantoms[seed][0], {"target": ("CTV", phantoms[seed][1])}, patient_key=patient)
    split = RunFolder(tmp_path / "run").resolve_split(path, tiny_config())
    assert split["data"]["file"] == "deid.h5" and "path" not in split["data"]
    assert str(tmp_path) not in json.dumps(split)


# --------------------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(dataset, tmp_path):
    """torchrun --nproc_per_node 2 (gloo) at global batch 2 vs one process at batch 2 on the same samples.

    Batch norm uses the global batch's statistics (sampling.sync_batch_norm, an all-reduce of
    the moments on the CPU), so the two runs compute the same function; they differ only in
    the order of floating-point sums (the gradient all-reduce, the moments summed per process
    then across processes, one oneDNN thread per process instead of two), hence a tolerance
    instead of bitwise equality. Adam's step is about lr whatever the gradient's size, so a
    weight whose gradient is near zero can take a rounding difference to ~1e-4 (seen with the
    channels_last_3d kernels); on average the weights agree to 1e-4 of the ~2e-3 that 3 steps
    at lr 1e-3 move them.
    """
    config = tiny_config(steps=3, schedule__validate_every=100, schedule__checkpoint_every=100)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "ctv_core", "train", str(dataset), str(tmp_path / "ddp"), "--config", str(config_file),
               "--device", "cpu", "-q"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    single = train(dataset, tmp_path / "single", config, device="cpu")
    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert ddp["step"] == 3
    reference = weights_of(single.last_checkpoint)
    initial = {k: v for k, v in _initial_weights(config).items()}
    differences, movements = [], []
    for name, value in reference.items():
        if value.is_floating_point() and name in initial and name.endswith("weight"):
            differences.append((ddp["modules"]["network"][name] - value).abs().flatten())
            movements.append((value - initial[name]).abs().flatten())
    difference, movement = torch.cat(differences), torch.cat(movements)
    assert float(movement.mean()) > 1e-3  # training did move the weights
    # Rounding differences move a few near-zero-gradient weights by a fraction of an Adam step;
    # a missing gradient all-reduce or per-process batch statistics would move all of them.
    assert float(difference.mean()) < 1e-3 * float(movement.mean()), \
        f"two-process weights differ from one process by {float(difference.mean()):.3g} on average"
    assert float(difference.max()) < 0.1 * float(movement.max()), \
        f"two-process weights differ from one process by up to {float(difference.max()):.3g}"


def _initial_weights(config: TrainingConfig) -> dict[str, torch.Tensor]:
    from ctv_core.model.unet3d import UNet3D

    torch.manual_seed(config.data.seed)
    return UNet3D(config.network).state_dict()


@pytest.fixture(scope="module")
def four_patients(phantoms, tmp_path_factory) -> Path:
    """Four phantoms, one per patient (seeds 1-4), for a held-out patient the network can generalise to."""
    root = tmp_path_factory.mktemp("four")
    make_phantom(root / "4", seed=4, settings=ScanSettings(matrix=256, slices=12, slice_thickness_mm=5.0))
    images = dict(phantoms)
    images[4] = (ctv_core.load_ct_series(root / "4" / "ct").image, sitk.ReadImage(str(root / "4" / "masks" / "CTV.nii.gz")),
                 None)
    with DatasetWriter(root / "four.h5") as writer:
        for n, seed in enumerate(sorted(images)):
            ct, mask, _ = images[seed]
            writer.add_case(f"case_{n:05d}", ct, {"target": ("CTV", mask)}, patient_key=f"P{seed}")
    return root / "four.h5"


def test_ctv_train_learns_a_tiny_task(four_patients, tmp_path, capsys):
    """Through the command line: 200 steps of an 8/16-channel network on the 8 mm grid (~10 s on 2 cores).

    The training loss must fall to under half of where it started and the held-out patient's
    validation Dice must pass 0.55 (it reaches ~0.7; at step 100 it is ~0.6, untrained ~0.2).
    """
    from ctv_core.cli import main

    config = tmp_path / "learn.json"
    config.write_text(json.dumps({
        "data": {"folds": 4, "fold": 0, "seed": 1, "cache": "memory"},
        "sampling": {"patch_zyx": [16, 32, 32], "batch_size": 2, "foreground_probability": 0.5},
        "augmentation": {"enabled": False},
        "optimisation": {"steps": 200, "learning_rate": 1e-2, "learning_rate_decay": "poly"},
        "schedule": {"checkpoint_every": 200, "validate_every": 100, "log_every": 1, "sample_images": 0},
        "network": {"widths": [8, 16], "passes": 1},
        "settings": {"preprocessing": {"spacing_mm": [8.0, 8.0, 8.0]}, "inference": {"patch_zyx": [16, 32, 32]}},
    }))
    run_dir = tmp_path / "run"
    assert main(["train", str(four_patients), str(run_dir), "--config", str(config), "--device", "cpu", "-q"]) == 0
    assert "Trained 200 steps" in capsys.readouterr().out
    rows = [r.split(",") for r in (run_dir / "log.csv").read_text().splitlines()[1:]]
    loss = [float(v) for _, metric, v in rows if metric == "loss"]
    dice = {int(step): float(v) for step, metric, v in rows if metric == "val_dice"}
    assert len(loss) == 200
    assert np.mean(loss[-20:]) < 0.5 * np.mean(loss[:20]), (np.mean(loss[:20]), np.mean(loss[-20:]))
    assert dice[200] > 0.55, dice


# --------------------------------------------------------------------------- learned sample weights (QAM/OCM)


def _qam_config(steps: int) -> TrainingConfig:
    """The tiny run with the QAM/OCM on, its batch of 2 processed one patch at a time (3D at batch size 1)."""
    return tiny_config(steps=steps, quality__enabled=True, quality__widths=[4, 8], sampling__micro_batch=1,
                       schedule__validate_every=100)


def test_qam_run_resumes_exactly_logs_samples_and_exports_without_the_qam(dataset, tmp_path):
    from safetensors.torch import load_file

    straight = train(dataset, tmp_path / "straight", _qam_config(4), device="cpu")
    first = train(dataset, tmp_path / "resumed", _qam_config(2), device="cpu")
    assert first.step == 2
    second = train(dataset, tmp_path / "resumed", _qam_config(4), device="cpu")
    assert second.resumed_from == 2
    a, b = load_checkpoint(straight.last_checkpoint), load_checkpoint(second.last_checkpoint)
    assert set(a["modules"]) == set(a["optimizers"]) == {"network", "qam"}
    for module in ("network", "qam"):
        for name, value in a["modules"][module].items():
            assert torch.equal(value, b["modules"][module][name]), (module, name)
    assert any(float(v.abs().sum()) > 0 for k, v in a["modules"]["qam"].items() if k.startswith("head"))  # it learned
    # samples.csv: every step's samples with their case ids, weights summing to one per step
    import csv

    for run in (straight.run_dir, second.run_dir):
        with open(run / "samples.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [int(r["step"]) for r in rows] == [1, 1, 2, 2, 3, 3, 4, 4]
        train_cases = set(json.loads((run / "splits.json").read_text())["train"])
        assert {r["case_id"] for r in rows} <= train_cases
        for step in range(1, 5):
            weights = [float(r["weight"]) for r in rows if int(r["step"]) == step]
            assert sum(weights) == pytest.approx(1.0, abs=1e-5)
        assert all(r["raw_score"] != "" for r in rows)
    straight_rows = (straight.run_dir / "samples.csv").read_text()
    assert (second.run_dir / "samples.csv").read_text() == straight_rows
    # the package holds the network only
    package = export_package(straight.run_dir, tmp_path / "pkg", checkpoint="last")
    weights = load_file(str(package.path / "weights.safetensors"))
    from ctv_core.model.unet3d import UNet3D

    assert set(weights) == set(UNet3D(_qam_config(4).network).state_dict())
    assert not any("qam" in k or k.startswith("levels.") for k in weights)
    # resuming with the QAM switched off is refused, naming the setting
    with pytest.raises(TrainingError, match="quality.enabled"):
        train(dataset, tmp_path / "resumed", tiny_config(steps=5, schedule__validate_every=100), device="cpu")


def test_bad_quality_configuration_is_one_message_from_the_command_line(dataset, tmp_path, capsys):
    from ctv_core.cli import main

    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"quality": {"enabled": True}, "sampling": {"batch_size": 1}}))
    assert main(["train", str(dataset), str(tmp_path / "run"), "--config", str(config), "-q"]) == 2
    err = capsys.readouterr().err
    assert "sampling.batch_size" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
