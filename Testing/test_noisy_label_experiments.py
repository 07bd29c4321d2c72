"""The noisy-label experiments' commands at toy size: a grid runs, resumes by skipping, reports; bad settings are one line.

The JSRT images are read from the shared data folder (never copied); the 3D experiment makes
its own tiny phantoms.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments" / "noisy_labels"
ROW_KEYS = {"method", "noise_fraction", "noise_range", "seed", "dice", "mean_dice"}


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXPERIMENTS / script), *args], capture_output=True, text=True,
                          timeout=600, cwd=REPO)


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_2d_experiment_command_runs_a_small_grid_and_resumes(shared_data, tmp_path):
    config = _write(tmp_path / "tiny2d.json", {
        "data": {"limit": 30, "train_cases": 20, "image_size": 64},
        "grid": {"methods": ["baseline", "qam+ocm"], "fractions": [0.5], "ranges": ["5-13"], "seeds": [0]},
        "model": {"widths": [4, 8], "batch_size": 4, "log_every": 1},
        "optimisation": {"steps": 3, "learning_rate": 0.001},
        "quality": {"widths": [4, 8]}, "threads": 1})
    args = ("--config", str(config), "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results"),
            "--data", str(shared_data / "jsrt256"))
    done = _run("run_2d.py", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("mean Dice") == 4
    rows = json.loads((tmp_path / "results" / "results.json").read_text())
    assert len(rows) == 4 and all(set(r) == ROW_KEYS for r in rows)
    assert {(r["method"], r["noise_fraction"], r["noise_range"]) for r in rows} == {
        ("baseline", 0.0, None), ("qam+ocm", 0.0, None), ("baseline", 0.5, "5-13"), ("qam+ocm", 0.5, "5-13")}
    for row in rows:
        assert set(row["dice"]) == {"lungs", "heart", "clavicles"} and all(0 <= v <= 1 for v in row["dice"].values())
        assert row["mean_dice"] == pytest.approx(np.mean(list(row["dice"].values())))
    noisy = json.loads((tmp_path / "work" / "qam+ocm" / "50pct_5-13px" / "seed0" / "result.json").read_text())
    assert len(noisy["noisy_cases"]) == 10  # half of the 20 training cases
    separation = noisy["weight_separation"]  # issue 25 item 4: the QAM's weights against the noise, per checkpoint
    assert len(separation) == 3 and [p["step"] for p in separation] == [1, 2, 3]  # 3 steps, one point each
    assert all(p[k] is None or 0 <= p[k] <= 1 for p in separation for k in ("auc_dilated", "auc_eroded"))
    assert json.loads((tmp_path / "work" / "baseline" / "50pct_5-13px" / "seed0" / "result.json").read_text())[
        "weight_separation"] is None  # the baseline weighs every sample alike
    table = (tmp_path / "results" / "results.md").read_text()
    assert "| method | 0 % | 50 % 5-13 px |" in table and "0.892" in table  # the paper's number beside ours
    for plot in ("dice_vs_noise.png", "weights_over_training.png"):
        assert (tmp_path / "results" / plot).stat().st_size > 1000
    again = _run("run_2d.py", *args)  # every run finished: nothing is trained again
    assert again.returncode == 0 and "mean Dice" not in again.stdout and "4 of 4 runs finished" in again.stdout
    bad = _write(tmp_path / "bad.json", {"grid": {"methods": ["baseline", "coteaching"]}})
    failed = _run("run_2d.py", "--config", str(bad), "--work", str(tmp_path / "w2"))
    assert failed.returncode == 2 and "grid.methods" in failed.stderr and "Traceback" not in failed.stderr


def test_3d_experiment_command_trains_the_qam_at_batch_one(tmp_path):
    config = _write(tmp_path / "tiny3d.json", {
        "phantoms": {"train_seeds": [1, 2], "test_seeds": [3], "matrix": 256, "slice_thickness_mm": 5.0, "slices": 12},
        "clinicians": [{"name": "exact"}, {"name": "generous", "margin_mm": 8.0, "skip_fraction": 0.3}],
        "methods": ["qam+ocm"], "seeds": [0],
        "training": {
            "data": {"folds": 1, "cache": "memory"},
            "sampling": {"patch_zyx": [16, 32, 32], "batch_size": 2, "micro_batch": 1},
            "augmentation": {"enabled": False},
            "optimisation": {"steps": 2, "learning_rate": 0.003},
            "schedule": {"checkpoint_every": 100, "log_every": 1, "sample_images": 0},
            "quality": {"widths": [4, 8]},
            "network": {"widths": [4, 8], "passes": 1},
            "settings": {"preprocessing": {"spacing_mm": [8.0, 8.0, 8.0]}, "inference": {"patch_zyx": [16, 32, 32]}}},
        "threads": 1})
    done = _run("run_3d.py", "--config", str(config), "--work", str(tmp_path / "work"), "--results",
                str(tmp_path / "results"))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "results" / "results_3d.json").read_text())
    assert [r["method"] for r in rows] == ["qam+ocm"] and 0 <= rows[0]["mean_dice"] <= 1
    result = json.loads((tmp_path / "work" / "runs" / "qam+ocm" / "seed0" / "result.json").read_text())
    assert result["micro_batch"] == 1 and result["steps"] == 2
    assert {c["clinician"] for c in result["clinicians"].values()} == {"exact", "generous"}
    assert result["noisy_cases"] == [c for c, v in result["clinicians"].items() if v["clinician"] == "generous"]
    checkpoint = tmp_path / "work" / "runs" / "qam+ocm" / "seed0" / "run" / "checkpoints" / "last.pt"
    import torch

    assert set(torch.load(checkpoint, weights_only=True)["modules"]) == {"network", "qam"}
    assert "| generous | 1 |" in (tmp_path / "results" / "results_3d.md").read_text()
    bad = _write(tmp_path / "bad.json", {"clinicians": [{"name": "x", "margin_mm": 80}]})
    failed = _run("run_3d.py", "--config", str(bad), "--work", str(tmp_path / "w2"))
    assert failed.returncode == 2 and "margin_mm" in failed.stderr and "Traceback" not in failed.stderr


@pytest.mark.parametrize("script,config", [("run_2d.py", "noisy_labels_2d.json"), ("run_3d.py", "noisy_labels_3d.json"),
                                           ("run_2d.py", "noisy_labels_2d_gpu.json"),
                                           ("run_2d.py", "noisy_labels_2d_memorisation.json"),
                                           ("run_3d.py", "noisy_labels_3d_gpu.json")])
def test_the_shipped_experiment_configurations_are_valid(script, config, tmp_path):
    done = _run(script, "--config", str(REPO / "configs" / config), "--work", str(tmp_path / "work"), "--results",
                str(tmp_path / "results"), "--report-only")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "0 of" in done.stdout


def test_a_replicated_grid_runs_the_named_settings_at_every_seed_and_those_first(tmp_path):
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        from common import load_config
        from ctv_core.errors import TrainingError
        from run_2d import Experiment2D, grid_runs
    finally:
        sys.path.remove(str(EXPERIMENTS))
    config = load_config(Experiment2D, REPO / "configs" / "noisy_labels_2d_memorisation.json")
    names = [name for name, _ in grid_runs(config)]
    assert len(names) == len(set(names)) == 39  # issue 25: 3 methods x (7 settings at seed 1 + 3 settings x 2 seeds)
    assert names[:3] == ["baseline/75pct_5-13px/seed1", "qam/75pct_5-13px/seed1", "qam+ocm/75pct_5-13px/seed1"]
    per_setting: dict[str, set[str]] = {}
    for name in names:
        method, noise, seed = name.split("/")
        per_setting.setdefault(noise, set()).add(seed)
    assert {noise for noise, seeds in per_setting.items() if seeds == {"seed0", "seed1", "seed2"}} == {
        "clean", "75pct_1-8px", "75pct_5-13px"}
    assert all(seeds == {"seed1"} for noise, seeds in per_setting.items()
               if noise not in ("clean", "75pct_1-8px", "75pct_5-13px")) and len(per_setting) == 7
    assert names.index("baseline/25pct_1-8px/seed1") < names.index("baseline/clean/seed0")  # seed by seed
    for wrong in (["75pct_5-13px", "10pct_1-8px"], ["clean", "clean"], []):
        bad = _write(tmp_path / "bad.json", {"grid": {"replicated": wrong}})
        with pytest.raises(TrainingError, match="grid.replicated"):
            load_config(Experiment2D, bad)


def test_runs_named_first_run_first_each_once_and_shards_split_them_without_overlap(tmp_path):
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        from common import first_runs, run_grid
    finally:
        sys.path.remove(str(EXPERIMENTS))
    runs = [(f"{m}/{n}/seed{s}", None) for s in (1, 0, 2) for n in ("clean", "75pct") for m in ("baseline", "qam")]
    ordered = [name for name, _ in first_runs(runs, ["baseline/75pct/seed2", "*/clean/seed0", "baseline/75pct/*"])]
    assert ordered[:5] == ["baseline/75pct/seed2", "baseline/clean/seed0", "qam/clean/seed0", "baseline/75pct/seed1",
                           "baseline/75pct/seed0"]
    assert sorted(ordered) == sorted(name for name, _ in runs)  # every run once
    assert [name for name, _ in first_runs(runs, [])] == [name for name, _ in runs]
    (tmp_path / "baseline/clean/seed0").mkdir(parents=True)
    (tmp_path / "baseline/clean/seed0/result.json").write_text("{}")  # finished: skipped
    trained: list[str] = []
    for k in (0, 1):
        run_grid(runs, tmp_path, (k, 2), lambda spec, folder: trained.append(folder.relative_to(tmp_path).as_posix())
                 or {"row": {"mean_dice": 0.5}}, log=lambda line: None, first=["baseline/75pct/seed2", "*/clean/seed0"])
    assert len(trained) == len(set(trained)) == len(runs) - 1 and "baseline/clean/seed0" not in trained
    assert trained[:2] == ["baseline/75pct/seed2", "qam/clean/seed0"]  # shard 0: the 1st, 3rd, ... of the order


def test_the_cost_estimate_counts_a_training_step_as_forward_and_backward_of_the_batch(tmp_path):
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        from common import load_config
        from estimate_cost import forward_operations, step_operations
        from run_2d import Experiment2D
    finally:
        sys.path.remove(str(EXPERIMENTS))
    config = load_config(Experiment2D, _write(tmp_path / "tiny.json", {
        "data": {"image_size": 64}, "model": {"widths": [4, 8], "batch_size": 4}, "quality": {"widths": [4, 8]}}))
    forward = forward_operations(config)
    baseline, _ = step_operations(config, "baseline")
    qam, _ = step_operations(config, "qam")
    ocm, _ = step_operations(config, "qam+ocm")
    assert 2.5 * 4 * forward < baseline < 3.5 * 4 * forward  # backward costs about twice the forward
    assert qam > baseline and qam == ocm  # the QAM's convolutions; the OCM is a tanh


def test_the_weight_separation_is_the_auc_of_clean_against_dilated_and_eroded_samples_per_checkpoint(tmp_path):
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        from report import separation_table, weight_separation
    finally:
        sys.path.remove(str(EXPERIMENTS))
    noise = {"d": [["lungs", "dilate", 5], ["heart", "dilate", 7], ["clavicles", "erode", 5]],
             "e": [["lungs", "erode", 9]], "c2": []}
    # Steps 1-2: the weights rank the dilated sample above the clean ones and tie the eroded one with them;
    # steps 3-4: every clean sample above both corrupted ones. Batch of 4 (relative weight = weight x 4).
    weights = {1: {"c": 0.2, "c2": 0.2, "d": 0.4, "e": 0.2}, 2: {"c": 0.2, "c2": 0.2, "d": 0.4, "e": 0.2},
               3: {"c": 0.4, "c2": 0.4, "d": 0.1, "e": 0.1}, 4: {"c": 0.3, "c2": 0.5, "d": 0.1, "e": 0.1}}
    lines = ["step,index,case_id,loss,weight,raw_score,score"]
    for step, by_case in weights.items():
        lines += [f"{step},{i},{case},1.0,{w},0,0" for i, (case, w) in enumerate(by_case.items())]
    (tmp_path / "samples.csv").write_text("\n".join(lines) + "\n")
    curve = weight_separation(tmp_path / "samples.csv", noise, checkpoints=2)
    assert curve == [{"step": 2, "auc_dilated": 0.0, "auc_eroded": 0.5}, {"step": 4, "auc_dilated": 1.0, "auc_eroded": 1.0}]
    only_clean = weight_separation(tmp_path / "samples.csv", {}, checkpoints=2)
    assert all(p["auc_dilated"] is None and p["auc_eroded"] is None for p in only_clean)
    result = {"row": {"method": "qam+ocm", "noise_fraction": 0.75, "noise_range": "5-13"}, "weight_separation": curve}
    table = separation_table([result, {**result, "weight_separation": [
        {"step": 2, "auc_dilated": 0.5, "auc_eroded": None}, {"step": 4, "auc_dilated": 0.8, "auc_eroded": 0.6}]}])
    assert "| qam+ocm | 75 % 5-13 px | 2 | 0.25 / 0.50 | 0.90 / 0.80 |" in table


def test_a_table_cell_gives_the_spread_over_seeds_and_none_for_one_seed():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        from report import mean_sd
    finally:
        sys.path.remove(str(EXPERIMENTS))
    assert mean_sd([0.9, 0.8, 0.7]) == "0.800 ± 0.100"
    assert mean_sd([0.9, 0.7]) == "0.800 ± 0.141 (n=2)"
    assert mean_sd([0.9]) == "0.900 (n=1)" and mean_sd([]) == "–"


def test_an_interrupted_run_resumes_from_its_checkpoint_to_the_result_of_a_straight_run(shared_data, tmp_path,
                                                                                        monkeypatch):
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        import run_2d
        from common import RESUME, load_config, run_grid
        from ctv_core.errors import TrainingError
    finally:
        sys.path.remove(str(EXPERIMENTS))
    import torch

    config = load_config(run_2d.Experiment2D, _write(tmp_path / "tiny.json", {
        "data": {"limit": 30, "train_cases": 20, "image_size": 64},
        "grid": {"methods": ["qam+ocm"], "fractions": [0.5], "ranges": ["5-13"], "seeds": [0], "clean": False},
        "model": {"widths": [4, 8], "batch_size": 4, "log_every": 1, "curve_every": 2, "checkpoint_every": 2},
        "optimisation": {"steps": 5, "learning_rate": 0.001}, "quality": {"widths": [4, 8]}, "threads": 1}))
    data = run_2d.Jsrt2D(config, shared_data / "jsrt256", torch.device("cpu"))
    runs = run_2d.grid_runs(config)
    assert [name for name, _ in runs] == ["qam+ocm/50pct_5-13px/seed0"]

    def grid(work: Path) -> None:
        run_grid(runs, work, (0, 1), lambda spec, folder: run_2d.train_run(config, data, spec, folder),
                 log=lambda line: None)

    grid(tmp_path / "straight")
    real_step = run_2d.train_step

    def stop_at_the_fourth_step(*args, **kwargs):
        if kwargs["step"] == 3:  # after step 3 was logged, one step past the checkpoint at step 2
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(run_2d, "train_step", stop_at_the_fourth_step)
    with pytest.raises(KeyboardInterrupt):
        grid(tmp_path / "resumed")
    folder = tmp_path / "resumed" / runs[0][0]
    assert (folder / RESUME).is_file() and not (folder / "result.json").exists()
    assert "\n3,0," in (folder / "samples.csv").read_text()  # the step past the checkpoint was logged
    monkeypatch.setattr(run_2d, "train_step", real_step)
    grid(tmp_path / "resumed")
    assert not (folder / RESUME).exists()  # removed once the result is written
    straight_folder = tmp_path / "straight" / runs[0][0]
    straight, resumed = (json.loads((f / "result.json").read_text()) for f in (straight_folder, folder))
    assert resumed.pop("resumed_from") == 2 and straight.pop("resumed_from") == 0
    for result in (straight, resumed):
        result.pop("seconds")
    assert resumed == straight  # Dice, curve (steps 2, 4, 5), weight separation: bit for bit
    assert [p["step"] for p in resumed["curve"]] == [2, 4, 5]
    for name in ("samples.csv", "log.csv"):  # the rows written after the checkpoint were dropped, then rewritten
        assert (folder / name).read_text() == (straight_folder / name).read_text()

    other = tmp_path / "other" / runs[0][0]
    other.mkdir(parents=True)
    other_config = load_config(run_2d.Experiment2D, _write(tmp_path / "other.json", {
        **json.loads((tmp_path / "tiny.json").read_text()), "optimisation": {"steps": 6, "learning_rate": 0.001}}))
    monkeypatch.setattr(run_2d, "train_step", stop_at_the_fourth_step)
    with pytest.raises(KeyboardInterrupt):
        run_2d.train_run(config, data, runs[0][1], other)
    with pytest.raises(TrainingError, match="another run or other settings"):
        run_2d.train_run(other_config, data, runs[0][1], other)  # a checkpoint of 5 steps does not resume a 6-step run
