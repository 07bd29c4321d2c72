"""The prediction pipeline: geometry end to end, model packages, sliding window, ``ctv predict``."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import load_file
from conftest import axial_grid, ctv_command, linear_hu, require_tool, write_linear_series

from ctv_core import load_ct_series, read_rtstruct
from ctv_core.atomic_files import mode_of_new_files
from ctv_core.errors import ModelPackageError, PredictionCancelled, StructureSetError
from ctv_core.geometry import Grid
from ctv_core.model.settings import InferenceConfig, ModelSettings, PostprocessingConfig, PreprocessingConfig
from ctv_core.model.package import model_fingerprint, load_model_package, save_model_package
from ctv_core.model.network_config import NetworkConfig
from ctv_core.phantom import ScanSettings, make_phantom
from ctv_core.inference.plausibility import anatomy_check
from ctv_core.inference.predictor import CTVPredictor, volume_warnings
from ctv_core.inference.predict_job import run_predict_job
from ctv_core.inference.preprocessing import prepare_input, probability_to_mask
from ctv_core.model.qa_models import HUWindowConfig, HUWindowModel
from ctv_core.inference.sliding_window import sliding_window_probability
from ctv_core.model.unet3d import UNet3D

BONE = (500.0, 10000.0)  # cortical bone: the couch shell (+300 HU) stays out
SMALL = dict(matrix=256, slices=26, slice_thickness_mm=4.0)  # 104 mm: the least ctv predict takes


def qa_package(path, spacing_mm, window=BONE):
    """A packaged HU-window "model": inside exactly where the CT's HU lie in ``window``."""
    settings = ModelSettings(
        preprocessing=PreprocessingConfig(spacing_mm=spacing_mm, hu_window=(-1024.0, 3071.0)),
        inference=InferenceConfig(patch_zyx=(64, 128, 128), overlap=0.25),
        postprocessing=PostprocessingConfig(keep_largest=0, fill_holes=False),
    )
    config = HUWindowConfig(low_hu=window[0], high_hu=window[1], input_window=settings.preprocessing.hu_window)
    return save_model_package(path, HUWindowModel(config), "hu_window", config, settings, name="qa-bone",
                              version="1", description="geometric QA model")


def unet_package(path, spacing_mm=(6.0, 6.0, 6.0), seed=0, weights_dtype="float32"):
    torch.manual_seed(seed)
    config = NetworkConfig(widths=(4, 8, 8), passes=2)
    settings = ModelSettings(preprocessing=PreprocessingConfig(spacing_mm=spacing_mm),
                             inference=InferenceConfig(patch_zyx=(32, 48, 64), overlap=0.25, threshold=0.5))
    return save_model_package(path, UNet3D(config), "unet3d", config, settings, name="untrained-test",
                              version="0", description="untrained weights for geometry and format tests",
                              weights_dtype=weights_dtype)


def _array(image):
    return sitk.GetArrayFromImage(image) != 0


def _interior(grid: Grid, margin_mm: float) -> np.ndarray:
    """Voxels at least ``margin_mm`` inside the grid's faces, ``[k, j, i]``."""
    distance = [np.minimum(np.arange(n), np.arange(n)[::-1]) * s for n, s in zip(grid.size, grid.spacing)]
    i, j, k = (d >= margin_mm for d in distance)
    return k[:, None, None] & j[None, :, None] & i[None, None, :]


def _ct_window(ct, window):
    hu = sitk.GetArrayFromImage(ct.image)
    return (hu >= window[0]) & (hu <= window[1])


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    out = {}
    for name, settings in {
        "HFS": ScanSettings(position="HFS", **SMALL),
        "FFS": ScanSettings(position="FFS", **SMALL),
        "HFP": ScanSettings(position="HFP", **SMALL),
        "FFP": ScanSettings(position="FFP", **SMALL),
        "oblique": ScanSettings(position="HFS", oblique_deg=14.0, **SMALL),
        "anisotropic": ScanSettings(position="FFP", pixel_spacing_mm=(1.7, 2.3), **SMALL),
    }.items():
        phantom = make_phantom(root / name, seed=41, settings=settings)
        out[name] = (phantom, load_ct_series(phantom.ct_dir))
    return out


@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP", "FFP"])
def test_qa_model_reproduces_the_ct_voxel_for_voxel(phantoms, tmp_path, position):
    """Model grid at the CT's spacing: any flip, shift or half-voxel error would break equality."""
    _, ct = phantoms[position]
    package = qa_package(tmp_path / "qa", tuple(ct.image.GetSpacing()))
    mask = CTVPredictor(package, device="cpu").predict(ct.image)
    assert Grid.of_image(mask).matches(ct.grid)
    expected = _ct_window(ct, BONE)
    assert expected.sum() > 1000
    np.testing.assert_array_equal(_array(mask), expected)


@pytest.mark.parametrize("position, oblique, spacing", [
    ("HFS", 17.0, (0.9, 1.1, 2.5)),
    ("FFP", 0.0, (2.3, 1.7, 3.0)),
    ("HFP", -11.0, (1.3, 0.8, 2.0)),
])
def test_qa_model_on_resampled_grids_stays_in_place(tmp_path, position, oblique, spacing):
    """Oblique and anisotropic CTs through a 2 mm LPS-aligned model grid. The CT holds a linear HU
    field, which linear interpolation reproduces exactly, and the QA window selects a slab between
    two planes: it must come back on the CT in place (no flip, no shift), its boundary within about
    one model voxel."""
    grid = axial_grid(position, size=(96, 80, 40), spacing=spacing, oblique_deg=oblique)
    ct = load_ct_series(write_linear_series(tmp_path / "ct", grid, position))
    window = (0.0, 120.0)
    package = qa_package(tmp_path / "qa", (2.0, 2.0, 2.0), window)
    interior = _interior(ct.grid, margin_mm=6.0)  # the outermost CT voxels mix with "outside the CT"
    mask = _array(CTVPredictor(package, device="cpu").predict(ct.image)) & interior
    expected = _ct_window(ct, window) & interior
    assert expected.sum() > 5000 and expected.mean() < 0.6
    dice = 2 * (mask & expected).sum() / (mask.sum() + expected.sum())
    assert dice > 0.95
    x, y, z = ct.grid.axis_coordinates()
    shift = [abs(c[mask].mean() - c[expected].mean()) for c in (x, y, z)]
    assert max(shift) < 0.3, shift  # mm
    # every disagreement lies within one model voxel (2 mm diagonal: 3.5 mm) of a slab face
    hu = linear_hu(x, y, z)
    gradient = np.linalg.norm([2.0, -3.0, 1.5])  # HU per mm of linear_hu
    distance_mm = np.minimum(np.abs(hu - window[0]), np.abs(hu - window[1])) / gradient
    assert distance_mm[mask != expected].max() < 3.5


def test_untrained_unet_mask_is_on_the_ct_grid_in_every_position(phantoms, tmp_path):
    package = unet_package(tmp_path / "unet")
    predictor = CTVPredictor(package, device="cpu")
    for name, (_, ct) in phantoms.items():
        result = predictor.run(ct.image)
        assert Grid.of_image(result.mask).matches(ct.grid), name
        assert result.mask.GetPixelID() == sitk.sitkUInt8
        assert set(result.seconds) == {"preprocessing", "network", "inverse", "postprocessing", "anatomy_check",
                                       "uncertainty"}
        assert result.volume_cc == pytest.approx(_array(result.mask).sum() * np.prod(ct.grid.spacing) / 1000)


def test_inverse_resampling_equals_full_resampling(phantoms):
    _, ct = phantoms["oblique"]
    model_input = prepare_input(ct.image, PreprocessingConfig(spacing_mm=(3.0, 3.0, 3.0)))
    rng = np.random.default_rng(2)
    prob = np.zeros(model_input.array.shape, np.float32)
    z, y, x = (s // 4 for s in prob.shape)
    prob[z:3 * z, y:3 * y, x:3 * x] = rng.random((2 * z, 2 * y, 2 * x))
    fast = probability_to_mask(prob, model_input.grid, ct.grid, 0.5)
    full = sitk.Resample(model_input.grid.image(prob), ct.image, sitk.Transform(), sitk.sitkLinear, 0.0,
                         sitk.sitkFloat32)
    np.testing.assert_array_equal(fast.astype(bool), sitk.GetArrayFromImage(full) >= 0.5)


def _numpy_logits(module: torch.nn.Module):
    """``module`` as the sliding window calls an engine: a float32 array in, logits out."""
    def logits(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).numpy()

    return logits


def test_sliding_window_equals_whole_volume_for_a_pointwise_model():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(48, 64, 80)).astype(np.float32)
    model = _numpy_logits(torch.nn.Conv3d(1, 1, 1))
    whole = sliding_window_probability(volume, model, (48, 64, 80))
    tiled = sliding_window_probability(volume, model, (16, 32, 32), overlap=0.5)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def test_sliding_window_with_a_unet_agrees_away_from_window_edges():
    torch.manual_seed(0)
    net = _numpy_logits(UNet3D(NetworkConfig(widths=(4, 8), passes=1)).eval())
    volume = np.random.default_rng(1).normal(size=(32, 64, 64)).astype(np.float32)
    whole = sliding_window_probability(volume, net, (32, 64, 64))
    tiled = sliding_window_probability(volume, net, (32, 48, 48), overlap=0.5)
    centre = (slice(None), slice(24, 40), slice(24, 40))
    np.testing.assert_allclose(tiled[centre], whole[centre], atol=0.05)
    assert np.abs(tiled - whole).mean() < 0.05


def test_cancel_stops_the_prediction(phantoms, tmp_path):
    _, ct = phantoms["HFS"]
    predictor = CTVPredictor(unet_package(tmp_path / "unet"), device="cpu")
    stages = []
    with pytest.raises(PredictionCancelled):
        predictor.predict(ct.image, progress=lambda s, f: stages.append(s), cancelled=lambda: "network" in stages)


# --- model packages ---------------------------------------------------------------------------

def test_package_round_trip_and_checksum(tmp_path):
    package = unet_package(tmp_path / "pkg")
    again = load_model_package(tmp_path / "pkg")
    assert again.sha256 == package.sha256 and again.model_id == "untrained-test 0"
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert manifest["network"]["widths"] == [4, 8, 8] and manifest["settings"]["inference"]["threshold"] == 0.5
    net = again.build_network()
    torch.manual_seed(0)
    reference = UNet3D(NetworkConfig(widths=(4, 8, 8), passes=2))
    for (name, a), (_, b) in zip(net.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


def test_half_precision_weights_halve_the_package_and_predict_alike(tmp_path):
    full = unet_package(tmp_path / "full")
    half = unet_package(tmp_path / "half", weights_dtype="float16")
    assert half.sha256 != full.sha256  # other weights, so another fingerprint
    stored = load_file(str(tmp_path / "half" / "weights.safetensors"))
    assert stored["head.weight"].dtype == torch.float16
    assert stored["encoder.0.0.conv1.norm.running_var"].dtype == torch.float32
    sizes = [(p / "weights.safetensors").stat().st_size for p in (tmp_path / "full", tmp_path / "half")]
    modes = {(p / name).stat().st_mode & 0o777 for p in (tmp_path / "full", tmp_path / "half")
             for name in ("weights.safetensors", "manifest.json")}
    assert modes == {mode_of_new_files()}  # readable as any new file is (safetensors alone writes 0600)
    assert sizes[1] < 0.6 * sizes[0]
    a, b = full.build_network(), half.build_network()
    assert all(p.dtype == torch.float32 for p in b.parameters())
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        if x.is_floating_point():
            assert torch.allclose(x, y, rtol=1e-3, atol=1e-4), name
    image = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        difference = (torch.sigmoid(a(image)) - torch.sigmoid(b(image))).abs().max().item()
    assert 0 < difference < 1e-2
    with pytest.raises(ModelPackageError, match="float32, float16"):
        unet_package(tmp_path / "bad", weights_dtype="bfloat16")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("damage, message", [
    ("flip_byte", "SHA-256"),
    ("truncate", "bytes"),
    ("no_manifest", "manifest.json is missing"),
    ("bad_json", "not valid JSON"),
    ("wrong_format", "format"),
    ("unknown_architecture", "unknown architecture"),
    ("unknown_setting", "unknown setting"),
    ("other_widths", "fingerprint"),
    ("other_widths_restamped", "do not fit"),
])
def test_damaged_packages_are_refused_clearly(tmp_path, damage, message):
    unet_package(tmp_path / "pkg")
    pkg = tmp_path / "pkg"
    manifest_path, weights = pkg / "manifest.json", pkg / "weights.safetensors"
    manifest = json.loads(manifest_path.read_text())
    if damage == "flip_byte":
        data = bytearray(weights.read_bytes())
        data[-10] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "no_manifest":
        manifest_path.unlink()
    elif damage == "bad_json":
        manifest_path.write_text("{not json")
    else:
        if damage == "wrong_format":
            manifest["format_version"] = 99
        elif damage == "unknown_architecture":
            manifest["architecture"] = "transformer"
        elif damage == "unknown_setting":
            manifest["settings"]["inference"]["stride"] = 2
        elif damage.startswith("other_widths"):
            manifest["network"]["widths"] = [4, 8, 16]
            if damage.endswith("restamped"):
                manifest["fingerprint"] = model_fingerprint(manifest)
        manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelPackageError, match=message):
        load_model_package(pkg).build_network()


# --- ctv predict --------------------------------------------------------------------------------

def test_ctv_predict_end_to_end_matches_plastimatch(phantoms, tmp_path):
    plastimatch = require_tool("plastimatch")
    phantom, ct = phantoms["FFS"]
    qa_package(tmp_path / "qa", tuple(ct.image.GetSpacing()))
    out = tmp_path / "out"
    result = subprocess.run([ctv_command(), "predict", str(ct.folder), str(out), "--model", str(tmp_path / "qa"),
                             "--device", "cpu", "--formats", "rtstruct,seg,nifti", "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ctv.nii.gz", "qa.png", "report.json", "rtstruct.dcm", "seg.dcm",
                                                          "uncertainty.nii.gz"]
    expected = _ct_window(ct, BONE)
    subprocess.run([plastimatch, "convert", "--input", str(out / "rtstruct.dcm"), "--referenced-ct", str(ct.folder),
                    "--output-prefix", str(tmp_path / "pm"), "--prefix-format", "nii.gz", "--xor-contours"],
                   check=True, capture_output=True)
    theirs = sitk.ReadImage(str(tmp_path / "pm" / "CTV.nii.gz"))
    theirs = sitk.GetArrayFromImage(sitk.Resample(theirs, ct.image, sitk.Transform(), sitk.sitkNearestNeighbor)) != 0
    np.testing.assert_array_equal(theirs, expected)
    np.testing.assert_array_equal(_array(read_rtstruct(out / "rtstruct.dcm", ct)["CTV"]), expected)
    report = json.loads((out / "report.json").read_text())
    assert report["input"]["series_instance_uid"] == ct.reference.series_instance_uid
    assert report["model"]["sha256"] == load_model_package(tmp_path / "qa").sha256
    assert report["ctv"]["volume_cc"] == pytest.approx(expected.sum() * np.prod(ct.grid.spacing) / 1000, rel=1e-3)
    assert {"load", "preprocessing", "network", "inverse", "postprocessing", "writing", "total"} <= set(report["seconds"])
    assert report["seconds"]["total"] >= report["seconds"]["network"]
    assert set(report["ctv"]["anatomy"]) >= {"parts", "far_from_bone_fraction", "left_cc", "right_cc"}
    assert report["device"] == "cpu"
    rs = pydicom.dcmread(out / "rtstruct.dcm")
    assert rs.StructureSetROISequence[0].ROIGenerationDescription == "qa-bone 1"
    png = (out / "qa.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000


def test_predict_refuses_outputs_that_cannot_reference_the_ct(shared_data, tmp_path):
    package = qa_package(tmp_path / "qa", (2.0, 2.0, 2.0))
    tilted = shared_data / "dicom" / "ge_head_ct_gantry_tilt"
    with pytest.raises(StructureSetError, match="resampled when loaded"):
        run_predict_job(tilted, tmp_path / "out", model=package.path, device="cpu")
    assert not (tmp_path / "out").exists()
    result = run_predict_job(tilted, tmp_path / "out", model=package.path, device="cpu", formats=["nifti"])
    assert sorted(p.name for p in result.out_dir.iterdir()) == ["ctv.nii.gz", "qa.png", "report.json",
                                                                         "uncertainty.nii.gz"]


def test_predict_cli_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    for args, text in (
        (["predict", str(tmp_path / "empty"), str(tmp_path / "out")], "No DICOM files found"),
        (["predict", str(tmp_path / "empty"), str(tmp_path / "out"), "--formats", "pdf"], "Unknown output format"),
    ):
        result = subprocess.run([ctv_command(), *args], capture_output=True, text=True)
        assert result.returncode == 2 and text in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_model_and_cuda_give_clear_errors(phantoms, tmp_path):
    _, ct = phantoms["HFS"]
    with pytest.raises(ModelPackageError, match="not a folder"):
        CTVPredictor(tmp_path / "nope", device="cpu")
    package = unet_package(tmp_path / "unet")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            CTVPredictor(package, device="cuda")


def test_test_time_flips_and_progress_stages(phantoms, tmp_path):
    """A left-right symmetric operation (the HU window) must give the same mask with flip averaging."""
    _, ct = phantoms["HFP"]
    plain = qa_package(tmp_path / "plain", tuple(ct.image.GetSpacing()))
    flipped_settings = ModelSettings(
        preprocessing=plain.settings.preprocessing,
        inference=InferenceConfig(patch_zyx=(64, 128, 128), overlap=0.25, test_time_flips=True),
        postprocessing=plain.settings.postprocessing,
    )
    config = plain.network_config
    flipped = save_model_package(tmp_path / "flipped", HUWindowModel(config), "hu_window", config, flipped_settings,
                                 name="qa-bone-tta", version="1", description="flip averaging")
    stages = []
    a = CTVPredictor(plain, device="cpu").predict(ct.image)
    b = CTVPredictor(flipped, device="cpu").predict(ct.image, progress=lambda s, f: stages.append((s, f)))
    np.testing.assert_array_equal(_array(a), _array(b))
    names = [s for s, _ in stages]
    assert names[0] == "preprocessing" and names[-1] == "done"
    assert {"network", "resampling to the CT", "post-processing"} <= set(names)
    network = [f for s, f in stages if s == "network"]
    assert network == sorted(network) and network[-1] == pytest.approx(1.0)


def test_fixed_shape_option_of_the_original_method(phantoms, tmp_path):
    """The original method squeezed the body's box to a fixed grid; the mask must still land in place."""
    phantom, ct = phantoms["FFS"]
    preprocessing = PreprocessingConfig(fixed_shape_zyx=(32, 64, 96), hu_window=(-1024.0, 3071.0))
    model_input = prepare_input(ct.image, preprocessing)
    assert model_input.array.shape == (32, 64, 96)
    settings = ModelSettings(preprocessing=preprocessing, inference=InferenceConfig(patch_zyx=(32, 64, 96)),
                             postprocessing=PostprocessingConfig(keep_largest=0, fill_holes=False))
    config = HUWindowConfig(low_hu=150.0, high_hu=10000.0, input_window=preprocessing.hu_window)
    package = save_model_package(tmp_path / "fixed", HUWindowModel(config), "hu_window", config, settings,
                                 name="qa-fixed", version="1", description="fixed-shape QA")
    mask = _array(CTVPredictor(package, device="cpu").predict(ct.image))
    # Compared inside the body: the couch's 2 mm carbon skins are too thin for the squeezed grid.
    # Thin bone blurred on a 3.5-3.75 mm grid and thresholded grows unevenly, moving the centroid
    # by up to ~0.65 of a model voxel (the same way in LPS for head- and feet-first scans, and less
    # on finer grids: a resampling effect, not an offset); a mirrored or shifted mask moves it more.
    body = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom.masks["Body"]))) != 0
    mask, expected = mask & body, _ct_window(ct, (150.0, 10000.0)) & body
    coordinates = ct.grid.axis_coordinates()
    for axis, spacing in zip(coordinates, model_input.grid.spacing):
        assert abs(axis[mask].mean() - axis[expected].mean()) < 0.75 * spacing


def test_postprocessing_keeps_largest_fills_holes_and_drops_small_parts():
    from ctv_core.inference.postprocessing import postprocess

    mask = np.zeros((6, 40, 40), np.uint8)
    mask[1:5, 5:25, 5:25] = 1
    mask[2:4, 12:16, 12:16] = 0  # a hole inside every middle slice
    mask[1:3, 30:33, 30:33] = 1  # a small second part (18 voxels)
    out = postprocess(mask, 0.001, PostprocessingConfig(keep_largest=1, fill_holes=True))
    assert out[1:3, 30:33, 30:33].sum() == 0 and out[2:4, 12:16, 12:16].all()
    kept = postprocess(mask, 0.001, PostprocessingConfig(keep_largest=0, min_component_cc=0.01, fill_holes=False))
    assert kept[1:3, 30:33, 30:33].sum() == 18 and kept[2:4, 12:16, 12:16].sum() == 0
    dropped = postprocess(mask, 0.001, PostprocessingConfig(keep_largest=0, min_component_cc=0.05, fill_holes=False))
    assert dropped[1:3, 30:33, 30:33].sum() == 0 and dropped.sum() > 1000


def test_volume_warnings_flag_empty_and_unusual_ctvs():
    assert "drew no CTV" in volume_warnings(0.0, None)[0]
    assert "drew no CTV" in volume_warnings(0.0, (500.0, 1000.0))[0]
    assert volume_warnings(450.0, None) == []  # no training record: nothing to compare with
    assert volume_warnings(450.0, (500.0, 1000.0)) == []  # within the 1.25 margin
    assert volume_warnings(1200.0, (500.0, 1000.0)) == []
    assert "much smaller" in volume_warnings(390.0, (500.0, 1000.0))[0]
    larger = volume_warnings(1260.0, (500.0, 1000.0))[0]
    assert "much larger" in larger and "1260 cc" in larger and "500-1000 cc" in larger
    # The bundled package records its training volumes; the predictor reads them from there.
    bundled = load_model_package(None)
    target = bundled.manifest["training"]["data"]["info"]["roi_volumes_cc"]["target"]
    assert bundled.training_volumes_cc == (target["min"], target["max"])


@pytest.fixture(scope="module")
def pelvis():
    """A whole phantom pelvis at 5 mm, in memory: (CT image, truth CTV [k, j, i], grid)."""
    from ctv_core.phantom.anatomy import render_phantom
    from ctv_core.phantom.scan import plan_scan

    grid, params, offset, rng = plan_scan(606, ScanSettings(matrix=256, slice_thickness_mm=5.0, metal=False))
    rendered = render_phantom(grid, params, position="HFS", anatomy_offset_mm=offset, rng=rng)
    return grid.image(rendered.hu), rendered.structures["CTV"].astype(np.uint8), grid


def test_anatomy_check_passes_a_true_ctv_and_flags_what_no_ctv_looks_like(pelvis):
    ct, ctv, grid = pelvis
    truth = anatomy_check(ct, ctv)
    assert truth.warnings == [] and truth.parts <= 2 and truth.largest_part_fraction > 0.9
    assert truth.far_from_bone_fraction < 0.02 and truth.bone_cc > 500
    assert min(truth.left_cc, truth.right_cc) > 0.5 * max(truth.left_cc, truth.right_cc) > 50
    assert set(truth.to_dict()) == {"parts", "largest_part_fraction", "bone_cc", "far_from_bone_fraction", "left_cc",
                                    "right_cc"}
    x, y, z = grid.axis_coordinates()
    midline = x[ctv == 1].mean()
    right_only = anatomy_check(ct, (ctv & (x < midline)).astype(np.uint8))  # +x is the patient's left
    assert len(right_only.warnings) == 1 and "mainly the patient's right side" in right_only.warnings[0]
    assert "Review the left side" in right_only.warnings[0] and right_only.left_cc < 5
    forward = anatomy_check(ct, np.roll(ctv, -int(round(100 / grid.spacing[1])), axis=1))  # 100 mm anterior
    assert forward.far_from_bone_fraction > 0.1 and any("from the pelvic bones" in w for w in forward.warnings)
    pieces = ctv.copy()
    centre = int(np.mean(np.nonzero(ctv.any(axis=(1, 2)))))
    pieces[centre - 3:centre + 3] = 0  # cut through: uterus and nodes above, cervix and nodes below
    pieces[:, :, int(np.nonzero(pieces.any(axis=(0, 1)))[0].mean())] = 0
    split = anatomy_check(ct, pieces)
    assert split.parts >= 3 and any("separate parts" in w for w in split.warnings)
    boneless = sitk.Minimum(ct, 60.0)  # every bone replaced by soft tissue
    assert any("No pelvic bones" in w for w in anatomy_check(boneless, ctv).warnings)
    assert anatomy_check(ct, np.zeros_like(ctv)).warnings == []  # an empty CTV: volume_warnings says it


def test_qa_image_shows_the_warnings_in_orange(pelvis, tmp_path):
    from PIL import Image

    from ctv_core.inference.qa_image import write_qa_image

    ct, ctv, grid = pelvis
    mask = grid.image(ctv)
    warning = anatomy_check(ct, (ctv & (grid.axis_coordinates()[0] < 0)).astype(np.uint8)).warnings

    def orange_pixels(warnings):
        path = write_qa_image(ct, mask, tmp_path / "qa.png", "title", ["a note"], warnings)
        rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
        return int(np.sum((rgb[..., 0] > 220) & (np.abs(rgb[..., 1] - 165) < 30) & (rgb[..., 2] < 60)))

    assert len(warning) == 1 and orange_pixels([]) == 0 and orange_pixels(warning) > 200


def test_qa_outline_sampled_from_the_uint8_mask_equals_the_float_copy(pelvis):
    """qa.png samples the mask as uint8 (linear, float32 out) instead of a float32 copy of the whole grid: the
    same values on an oblique plane through the CTV, so the picture is unchanged."""
    from ctv_core.inference.qa_image import _plane

    ct, ctv, grid = pelvis
    mask = grid.image(ctv)
    centre = grid.index_to_lps(np.argwhere(ctv)[:, ::-1].mean(axis=0))
    tilt = np.radians(17.0)
    axes = (np.array([np.cos(tilt), 0.0, np.sin(tilt)]), np.array([0.0, 1.0, 0.0]))
    origin = centre - 80 * axes[0] - 80 * axes[1]
    direct = _plane(mask, origin, axes, (200, 200), 0.8, sitk.sitkLinear, 0.0)
    copied = _plane(sitk.Cast(mask, sitk.sitkFloat32), origin, axes, (200, 200), 0.8, sitk.sitkLinear, 0.0)
    assert direct.dtype == np.float32 and 0.0 < (direct > 0.5).mean() < 1.0
    assert ((direct > 0) & (direct < 1)).sum() > 100  # interpolated values on the outline, not only 0 and 1
    np.testing.assert_array_equal(direct, copied)


def test_nonzero_box_is_the_smallest_box_of_the_nonzero_voxels():
    from ctv_core.geometry import nonzero_box

    array = np.zeros((7, 9, 11), dtype=np.uint8)
    assert nonzero_box(array) is None
    array[2, 3, 4] = 1
    array[5, 3, 9] = 255
    assert nonzero_box(array) == (slice(2, 6), slice(3, 4), slice(4, 10))
    assert nonzero_box(array != 0) == nonzero_box(array)



def test_nonzero_points_are_the_lps_centres_of_every_nonzero_voxel_on_an_oblique_grid():
    from ctv_core.geometry import Grid

    angle = np.deg2rad(12.0)
    direction = (np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, -1.0)
    grid = Grid(size=(11, 9, 7), spacing=(0.8, 1.1, 2.5), origin=(-4.0, 3.0, 10.0), direction=direction)
    array = np.zeros(grid.shape, dtype=np.uint8)
    array[1, 2, 3] = array[5, 7, 10] = array[3, 3, 3] = 1
    expected = grid.index_to_lps(np.argwhere(array)[:, ::-1].astype(float))
    np.testing.assert_allclose(grid.nonzero_points(array), expected)
    assert grid.nonzero_points(np.zeros_like(array)).shape == (0, 3)
