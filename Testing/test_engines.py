"""The engines: the network as a graph in the package (each weight stored once, checked, strict), OpenVINO and
PyTorch giving the same CTV, and CPU prediction without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import ctv_command
from scipy import ndimage

from ctv_core import load_ct_series
from ctv_core.errors import DeviceError, ModelPackageError
from ctv_core.inference.predictor import CTVPredictor
from ctv_core.model.engines import OpenVINOEngine, open_engine
from ctv_core.model.graph import CONSTANTS, GRAPH
from ctv_core.model.network_config import NetworkConfig
from ctv_core.model.qa_models import HUWindowConfig, HUWindowModel
from ctv_core.model.package import (BUNDLED, MANIFEST, load_model_package, model_fingerprint, save_model_package,
                                    sha256_of)
from ctv_core.model.settings import InferenceConfig, ModelSettings, PreprocessingConfig
from ctv_core.model.unet3d import UNet3D
from ctv_core.phantom import ScanSettings, make_phantom


def _tiny_package(path: Path, in_channels: int = 1, seed: int = 0, weights_dtype: str = "float32",
                  graph: bool = True):
    torch.manual_seed(seed)
    config = NetworkConfig(in_channels=in_channels, widths=(4, 8, 8), passes=2)
    settings = ModelSettings(preprocessing=PreprocessingConfig(spacing_mm=(6.0, 6.0, 6.0)),
                             inference=InferenceConfig(patch_zyx=(32, 48, 64), overlap=0.25, threshold=0.5))
    return save_model_package(path, UNet3D(config), "unet3d", config, settings, name="tiny", version="0",
                              description="untrained weights for engine tests", weights_dtype=weights_dtype,
                              graph=graph)


def _constant_spans(package) -> list[tuple[int, int]]:
    """(offset, size) of every constant of the package's IR, in the weights-then-constants buffer."""
    tree = ET.parse(package.path / GRAPH)
    return [(int(d.get("offset")), int(d.get("size"))) for layer in tree.getroot().iter("layer")
            if layer.get("type") == "Const" and (d := layer.find("data")) is not None]


def test_the_demo_package_carries_its_graph_with_each_weight_once():
    package = load_model_package(None)
    graph = package.manifest["graph"]
    assert package.has_graph and graph["format"] == "openvino-ir"
    weights_bytes = (BUNDLED / package.manifest["weights"]["file"]).stat().st_size
    spans = set(_constant_spans(package))
    inside = sum(size for offset, size in spans if offset + size <= weights_bytes)
    # the learned weights are the safetensors file's own bytes: the graph's own constants are a few bytes
    assert inside > 0.95 * weights_bytes
    assert (BUNDLED / CONSTANTS).stat().st_size == graph["constants"]["bytes"] < 1024
    shipped = sum(f.stat().st_size for f in BUNDLED.iterdir())
    assert shipped < 7.5 * 2**20, shipped
    # checked against PyTorch at export, and recorded
    assert graph["check"]["max_abs_logit_difference"] <= graph["check"]["tolerance"] <= 2e-4


def test_an_exported_float16_package_shares_its_weights_with_its_graph_and_matches_torch(tmp_path):
    package = _tiny_package(tmp_path / "pkg", weights_dtype="float16")
    record = package.manifest["graph"]
    assert record["check"]["max_abs_logit_difference"] <= record["check"]["tolerance"]
    weights_bytes = (package.path / package.manifest["weights"]["file"]).stat().st_size
    spans = set(_constant_spans(package))
    own = sum(size for offset, size in spans if offset >= weights_bytes)
    # every learned weight (float16) and batch-norm statistic (float32) is read from the weights file
    assert own == record["constants"]["bytes"] < 256 < sum(size for offset, size in spans) - own
    # the engines agree on an input the export check never saw
    sample = np.random.default_rng(1).uniform(-1, 1, (1, 1, 16, 32, 48)).astype(np.float32)
    a = OpenVINOEngine(package).logits(sample)
    b = open_engine(package, "torch", "cpu").logits(sample)
    assert a.shape == b.shape == (1, 1, 16, 32, 48)
    np.testing.assert_allclose(a, b, atol=1e-4)


def _copy(package_path: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(package_path, copy)
    return copy


def _rewrite_manifest(path: Path, change) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    change(manifest)
    manifest["fingerprint"] = model_fingerprint(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2))


def test_a_graph_that_does_not_match_its_manifest_is_refused(tmp_path):
    path = _copy(BUNDLED, tmp_path)
    xml = (path / GRAPH).read_text()
    (path / GRAPH).write_text(xml.replace('element_type="f32"', 'element_type="f16"', 1))  # same size
    with pytest.raises(ModelPackageError, match="SHA-256 of network.xml .* the graph file is corrupt or was replaced"):
        load_model_package(path)
    (path / GRAPH).write_text(xml)
    (path / CONSTANTS).write_bytes((path / CONSTANTS).read_bytes()[:-4])
    with pytest.raises(ModelPackageError, match="network_constants.bin has 80 bytes, the manifest says 84"):
        load_model_package(path)


def _qa_package(path: Path):
    """The HU-window QA model: its graph reads an input of any channel count (it uses the first)."""
    settings = ModelSettings(preprocessing=PreprocessingConfig(spacing_mm=(6.0, 6.0, 6.0)),
                             inference=InferenceConfig(patch_zyx=(32, 48, 64)))
    config = HUWindowConfig(low_hu=500.0, high_hu=10000.0, input_window=settings.preprocessing.hu_window)
    return save_model_package(path, HUWindowModel(config), "hu_window", config, settings, name="qa", version="1",
                              description="geometric QA model")


def _replace_graph(path: Path, xml: str) -> None:
    """Write ``xml`` as the package's graph and record it in the manifest as an export would."""
    (path / GRAPH).write_text(xml)

    def record(manifest):
        manifest["graph"]["sha256"] = sha256_of(path / GRAPH)
        manifest["graph"]["bytes"] = (path / GRAPH).stat().st_size

    _rewrite_manifest(path, record)


def test_a_graph_of_another_network_is_refused_by_its_shapes(tmp_path):
    one = _tiny_package(tmp_path / "one")
    # the recorded shapes are checked on loading
    path = _copy(one.path, tmp_path)
    _rewrite_manifest(path, lambda m: m["graph"].__setitem__("input_shape", [1, 2, -1, -1, -1]))
    with pytest.raises(ModelPackageError, match=r"its graph takes \[1, 2, -1, -1, -1\].*belongs to another model"):
        load_model_package(path)
    # and the IR's own shapes when the engine reads it: a graph taking two channels under a manifest saying one
    qa = _qa_package(tmp_path / "qa")
    xml = (qa.path / GRAPH).read_text()
    assert xml.count('shape="1,1,?,?,?"') == 1
    _replace_graph(qa.path, xml.replace('shape="1,1,?,?,?"', 'shape="1,2,?,?,?"'))
    package = load_model_package(qa.path)
    with pytest.raises(ModelPackageError, match=r"network.xml takes \[\[1, 2, -1, -1, -1\]\].*another model"):
        open_engine(package, "openvino", "cpu")
    # a graph whose constants point elsewhere than the weights: OpenVINO's reason, and what to do
    _replace_graph(qa.path, xml.replace('offset="152"', 'offset="99999999"'))
    with pytest.raises(ModelPackageError, match=r"network.xml cannot be read by OpenVINO .*Export the package again"):
        open_engine(load_model_package(qa.path), "openvino", "cpu")


def test_engine_choice(tmp_path):
    bundled = load_model_package(None)
    assert open_engine(bundled, "auto", "cpu").name == "openvino"
    assert open_engine(bundled, "torch", "cpu").name == "torch"
    plain = _tiny_package(tmp_path / "plain", graph=False)
    assert "graph" not in plain.manifest and open_engine(plain, "auto", "cpu").name == "torch"
    with pytest.raises(ModelPackageError, match="has no graph .* --engine torch"):
        open_engine(plain, "openvino", "cpu")
    with pytest.raises(DeviceError, match="unknown engine 'onnx'"):
        open_engine(bundled, "onnx", "cpu")
    # a graph computes the manifest's network: another number of passes runs on PyTorch
    from dataclasses import replace

    from ctv_core.model.package import ModelPackage

    three = ModelPackage(path=bundled.path, manifest=bundled.manifest,
                         network_config=replace(bundled.network_config, passes=3), settings=bundled.settings)
    assert not three.has_graph and open_engine(three, "auto", "cpu").name == "torch"


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` or next to it (6-neighbourhood) whose label differs from a neighbour's."""
    inside = ndimage.binary_dilation(mask) & ~mask
    outside = mask & ~ndimage.binary_erosion(mask)
    return inside | outside


def assert_same_mask(a: np.ndarray, b: np.ndarray) -> None:
    """Identical, or Dice >= 0.999 with every differing voxel on both masks' boundary (the 0.5 iso-surface)."""
    differ = a != b
    if not differ.any():
        return
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice >= 0.999, dice
    assert (differ <= (_surface(a) & _surface(b))).all(), int((differ & ~(_surface(a) & _surface(b))).sum())


def _masks(image: sitk.Image, package) -> tuple[np.ndarray, np.ndarray]:
    masks = []
    for engine in ("openvino", "torch"):
        result = CTVPredictor(package, device="cpu", engine=engine).run(image)
        assert result.engine == engine
        masks.append(sitk.GetArrayFromImage(result.mask) != 0)
    return masks[0], masks[1]


@pytest.mark.parametrize("position, oblique", [("FFS", 0.0), ("HFS", 12.0)])
def test_openvino_and_torch_draw_the_same_ctv_on_feet_first_and_oblique_cts(tmp_path, position, oblique):
    phantom = make_phantom(tmp_path / "ct", seed=9002,
                           settings=ScanSettings(matrix=256, slices=40, slice_thickness_mm=5.0, position=position,
                                                 oblique_deg=oblique))
    a, b = _masks(load_ct_series(phantom.ct_dir).image, load_model_package(None))
    assert a.sum() > 1000
    assert_same_mask(a, b)


def test_openvino_and_torch_draw_the_same_ctv_on_the_demo_ct(tmp_path):
    """The CT of scripts/demo.sh (seed 0, 512 x 512)."""
    phantom = make_phantom(tmp_path / "ct", seed=0, settings=ScanSettings(matrix=512))
    a, b = _masks(load_ct_series(phantom.ct_dir).image, load_model_package(None))
    assert a.sum() > 10000
    assert_same_mask(a, b)


#: Runs ``ctv predict`` in a Python where importing torch (or MONAI) fails, then says which torch and SciPy modules
#: were imported.
NO_TORCH = textwrap.dedent("""
    import importlib.abc, json, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "monai", "torchvision"):
                raise ImportError(f"{name} is not installed (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoTorch())
    from ctv_core.cli import main
    code = main(["predict", sys.argv[1], sys.argv[2], "--device", sys.argv[3], "-q"])
    print(json.dumps({"code": code, "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch"),
                      "scipy": sorted(m for m in sys.modules if m.split(".")[0] == "scipy")}))
""")


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_cpu_prediction_through_openvino_needs_no_torch(tmp_path, device):
    phantom = make_phantom(tmp_path / "ct", seed=9001, settings=ScanSettings(matrix=256, slices=26,
                                                                             slice_thickness_mm=4.0))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-c", NO_TORCH, str(phantom.ct_dir), str(out), device],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert answer == {"code": 0, "torch": [], "scipy": []}  # nor SciPy: the morphology is SimpleITK's
    report = json.loads((out / "report.json").read_text())
    assert report["engine"] == "openvino" and report["device"] == "cpu"
    assert report["ctv"]["volume_cc"] > 100


def test_ctv_predict_refuses_the_openvino_engine_on_a_package_without_a_graph(tmp_path):
    plain = _tiny_package(tmp_path / "plain", graph=False)
    phantom = make_phantom(tmp_path / "ct", seed=9001, settings=ScanSettings(matrix=256, slices=26,
                                                                             slice_thickness_mm=4.0))
    run = subprocess.run([ctv_command(), "predict", str(phantom.ct_dir), str(tmp_path / "out"), "--model",
                          str(plain.path), "--engine", "openvino", "--device", "cpu"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2
    assert "has no graph" in run.stderr and "--engine torch" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out" / "report.json").exists()


def test_the_services_take_an_engine_setting(tmp_path):
    from ctv_core.cli import build_parser
    from ctv_core.errors import CTVError
    from ctv_core.service.review.config import StationConfig

    parser = build_parser()
    assert parser.parse_args(["review", "--engine", "torch"]).engine == "torch"
    assert parser.parse_args(["node", "--engine", "openvino"]).engine == "openvino"
    assert parser.parse_args(["predict", "ct", "out"]).engine == "auto"
    assert StationConfig(data=tmp_path, engine="openvino").engine == "openvino"
    with pytest.raises(CTVError, match="--engine onnx is not one of auto, openvino, torch"):
        StationConfig(data=tmp_path, engine="onnx")


def test_openvino_is_imported_with_its_telemetry_off():
    # `import openvino` otherwise sends a usage event to Google Analytics from a forked process; with a caller
    # holding stdin as a pipe, that fork hung a cancelled `ctv predict --progress json` at exit.
    probe = ("import sys\nfrom ctv_core.model.graph import import_openvino\nimport_openvino()\n"
             "import openvino.tools.ovc as ovc\n"
             "print(repr(sys.modules.get('openvino_telemetry', 'absent')), type(ovc.telemetry).__module__)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["None", "openvino.tools.ovc.telemetry_stub"], out.stdout


def test_the_openvino_engine_gives_the_same_logits_after_releasing_its_memory(tmp_path):
    """The predictor releases the compiled network after the network stage; a later prediction with the same
    engine (a reused predictor) compiles it again and gets the same logits."""
    engine = open_engine(_tiny_package(tmp_path / "pkg"), "openvino", "cpu")
    batch = np.random.default_rng(0).normal(size=(1, 1, 32, 48, 64)).astype(np.float32)
    before = engine.logits(batch)
    engine.release_memory()
    np.testing.assert_array_equal(engine.logits(batch), before)
    assert np.abs(before).max() > 0


def test_ctv_add_graph_writes_a_copy_that_runs_on_openvino_like_the_original_on_torch(tmp_path, capsys):
    from ctv_core.cli.main import main

    old = _tiny_package(tmp_path / "old", seed=3, graph=False)
    (old.path / "training_log.csv").write_text("step,loss\n1,0.5\n")
    before = {p.name: p.read_bytes() for p in old.path.iterdir()}
    assert not old.has_graph
    assert main(["add-graph", str(old.path), str(tmp_path / "new")]) == 0
    assert "checked against the PyTorch network" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in old.path.iterdir()} == before  # the input is never modified
    new = load_model_package(tmp_path / "new")
    assert new.has_graph and (new.name, new.version, new.weights_sha256) == (old.name, old.version,
                                                                            old.weights_sha256)
    assert (new.path / "weights.safetensors").read_bytes() == before["weights.safetensors"]
    assert (new.path / "training_log.csv").read_bytes() == before["training_log.csv"]
    assert new.sha256 != old.sha256  # the fingerprint covers the graph, as for an exported package
    batch = np.random.default_rng(1).uniform(-1, 1, size=(1, 1, 32, 48, 64)).astype(np.float32)
    on_openvino = open_engine(new, "openvino", "cpu").logits(batch)
    on_torch = open_engine(old, "torch", "cpu").logits(batch)
    assert np.abs(on_torch).max() > 0
    np.testing.assert_allclose(on_openvino, on_torch, atol=1e-4, rtol=0)
    assert main(["add-graph", str(new.path), str(tmp_path / "again")]) == 2
    assert "already has a graph" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()
    assert main(["add-graph", str(old.path), str(tmp_path / "new")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
