"""The bundled demo model: loads from the package, checks out, and delineates unseen phantoms."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import pydicom
import torch
from safetensors.torch import load_file
from conftest import ctv_command, require_tool

from ctv_core import load_ct_series
from ctv_core.model.package import BUNDLED, load_model_package
from ctv_core.phantom import ScanSettings, make_phantom
from ctv_core.inference.predictor import CTVPredictor
from ctv_core.training.config import load_training_config

# Seeds from 9000 on are never used for training (scripts/train_demo_model.sh uses 100-195).
UNSEEN = [(9001, "HFS"), (9002, "FFS"), (9003, "HFS")]


def test_bundled_package_is_small_checked_and_says_what_it_is():
    package = load_model_package(None)
    assert package.path == BUNDLED
    weights = BUNDLED / package.manifest["weights"]["file"]
    assert weights.stat().st_size < 8 * 2**20
    assert "not for clinical use" in package.manifest["description"].lower()
    training, metrics = package.manifest["training"], package.manifest["metrics"]
    assert training["steps"] == metrics["best_step"] > 0
    per_case = metrics["validation_dice_per_case"]
    assert len(per_case) == metrics["validation_cases"] == len(training["split"]["validation"]) >= 5
    assert set(per_case) == set(training["split"]["validation"])
    assert not set(training["split"]["validation"]) & set(training["split"]["train"])
    # the recorded figure is the mean of the per-case Dice of its held-out fold, and good; no held-out case failed
    # (0.3.0: mean 0.880, lowest 0.797 on the smallest CTV of the set, 417 cc)
    assert metrics["validation_dice"] == pytest.approx(np.mean(list(per_case.values())), abs=1e-12)
    assert metrics["validation_dice"] >= 0.85 and min(per_case.values()) >= 0.75
    assert metrics["best_validation_dice"] == metrics["validation_dice"]
    # the method's full widths, trained with appearance randomisation on phantoms with tissue label maps
    assert package.manifest["network"]["widths"] == [16, 32, 64, 96, 128]
    assert training["config"]["synthesis"]["probability"] > 0 and training["data"]["info"]["tissue_labels"]
    assert training["config"]["augmentation"]["hu_offset"] > 0
    # stored in half precision (the size test above), run in float32
    stored = load_file(str(weights))
    assert stored["head.weight"].dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in package.build_network().parameters())


def test_demo_model_delineates_unseen_phantoms(tmp_path):
    """Mean CTV Dice >= 0.85 on phantoms from seeds never trained on; little bone inside; plausible volume."""
    predictor = CTVPredictor(None, device="cpu")
    scores = []
    for seed, position in UNSEEN:
        phantom = make_phantom(tmp_path / f"ph{seed}", seed=seed, settings=ScanSettings(matrix=256, position=position))
        ct = load_ct_series(phantom.ct_dir)
        result = predictor.run(ct.image)
        predicted = sitk.GetArrayFromImage(result.mask) != 0
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom.masks["CTV"]))) != 0
        scores.append(2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))
        bones = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom.masks["Bones"]))) != 0
        assert (predicted & bones).sum() / predicted.sum() < 0.02, seed
        assert 300 < result.volume_cc < 2000, seed
        assert np.isfinite(result.seconds["network"])
        assert result.warnings == [], (seed, result.warnings)  # a good CTV raises no volume or anatomy warning
    assert np.mean(scores) >= 0.85 and min(scores) >= 0.80, scores


def test_a_real_ct_of_a_few_centimetres_is_refused_before_predicting(shared_data, tmp_path):
    """A real CT that cannot hold a pelvis (Siemens, 20 slices of 2 mm of upper abdomen): refused, with the
    slices and millimetres found and what is needed, before any prediction, and nothing written."""
    ct_dir = shared_data / "dicom" / "siemens_abdomen_j2k_missing_uids"
    done = subprocess.run([ctv_command(), "predict", str(ct_dir), str(tmp_path / "out"), "--formats", "nifti", "-q",
                           "--device", "cpu"], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "20 slice(s) covering 40 mm" in done.stderr and "at least" in done.stderr and "100 mm" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_demo_model_draws_nothing_on_a_real_head_ct_and_writes_a_valid_empty_rtstruct(shared_data, tmp_path):
    """A real CT long enough to pass the coverage check but with no pelvis (Philips head, 28 slices of 5 mm):
    no CTV, a warning to check the CT, and an RTSTRUCT whose empty CTV ROI dciodvfy accepts (no empty
    ContourSequence, which planning systems may reject the whole file for)."""
    dciodvfy = require_tool("dciodvfy")
    ct_dir = shared_data / "dicom" / "philips_head_multiseries"
    out = tmp_path / "out"
    done = subprocess.run([ctv_command(), "predict", str(ct_dir), str(out), "-q", "--device", "cpu"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["ctv"]["volume_cc"] == 0
    assert any("drew no CTV" in w for w in report["warnings"]) and "warning  The model drew no CTV" in done.stdout
    assert any("without contours" in w for w in report["warnings"])
    rs = pydicom.dcmread(out / "rtstruct.dcm")
    assert rs.StructureSetROISequence[0].ROIName == "CTV" and "ContourSequence" not in rs.ROIContourSequence[0]
    check = subprocess.run([dciodvfy, str(out / "rtstruct.dcm")], capture_output=True, text=True)
    errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors


def test_the_demo_recipe_and_the_tried_fine_tuning_load_strictly():
    repo = Path(__file__).resolve().parents[1]
    recipe = load_training_config(repo / "configs" / "demo_model.json")
    assert tuple(recipe.network.widths) == (16, 32, 64, 96, 128) and recipe.optimisation.initial_weights is None
    assert recipe.synthesis.probability == 0.5 and recipe.augmentation.hu_offset == 60.0
    tried = load_training_config(repo / "experiments" / "robust_model" / "finetune_70pct_synthesis.json")
    assert tried.synthesis.probability == 0.7 and tried.network == recipe.network
