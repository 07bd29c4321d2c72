"""Shared fixtures: the shared real-data folder, synthetic CT series with known HU, validators."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ctv_core.dicom.ct_writer import SeriesIdentity, write_ct_series
from ctv_core.geometry import PATIENT_POSITION_IOP, Grid

REPO = Path(__file__).resolve().parents[1]


def ctv_command() -> str:
    """The installed ``ctv`` console script of the interpreter running the tests."""
    path = Path(sys.executable).parent / "ctv"
    if not path.exists():
        pytest.fail(f"the ctv console script is not installed beside {sys.executable}; run scripts/setup.sh")
    return str(path)


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository (CTV_SHARED_DATA overrides)."""
    return Path(os.environ.get("CTV_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "dicom").is_dir():
        pytest.fail(f"shared test data not found at {path}; set CTV_SHARED_DATA to the shared/data folder")
    return path


def require_tool(name: str) -> str:
    """Path of a command-line validator; the test fails (not skips) when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"'{name}' is not installed; run the tests through scripts/test.sh, which installs it")
    return path


def axial_grid(position: str = "HFS", size=(48, 40, 12), spacing=(1.5, 1.2, 3.0), oblique_deg: float = 0.0,
               centre=(5.0, -20.0, 100.0)) -> Grid:
    """A small grid for a patient position, optionally tilted about the left-right axis."""
    iop = PATIENT_POSITION_IOP[position]
    a = np.radians(oblique_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    row, col = rot @ np.asarray(iop[:3]), rot @ np.asarray(iop[3:])
    direction = np.column_stack([row, col, np.cross(row, col)])
    half = direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2)
    origin = np.asarray(centre) - half
    return Grid(size=size, spacing=spacing, origin=tuple(origin), direction=tuple(direction.flatten()))


def linear_hu(x, y, z):
    """A known HU field of LPS coordinates (mm): distinguishes every axis and sign."""
    return 2.0 * x - 3.0 * y + 1.5 * z - 200.0


def write_linear_series(folder: Path, grid: Grid, position: str = "HFS") -> Path:
    """Write a CT series whose voxel at LPS point p holds round(linear_hu(p))."""
    x, y, z = grid.axis_coordinates()
    hu = np.rint(linear_hu(x, y, z)).astype(np.float32)
    write_ct_series(grid.image(hu), folder, SeriesIdentity(patient_position=position))
    return folder


@pytest.fixture
def linear_series(tmp_path) -> tuple[Path, Grid]:
    grid = axial_grid()
    return write_linear_series(tmp_path / "ct", grid), grid


def sitk_series(folder: Path) -> sitk.Image:
    """The CT as SimpleITK's GDCM series reader reads it (the reference implementation)."""
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(folder))
    assert len(ids) == 1, ids
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    return reader.Execute()


# --- Slicer (the slicer-core wheel): the module's logic on a real MRML scene --------------------

@pytest.fixture(scope="session")
def slicer_lib():
    """The module's ``Logic/`` package, loaded by ``CTVDelineation.loadLogicPackage`` as Slicer would."""
    from slicer_support import logic_package

    return logic_package()


@pytest.fixture(scope="session")
def ctv_scene():
    """ctv_core's MRML side (:mod:`ctv_core.scene`): its modules by name, imported once slicer-core is there."""
    from types import SimpleNamespace

    from slicer_support import require_slicer

    require_slicer()
    from ctv_core.scene import conversion, lattice, model_description, patient_frame, review_steps, rtstruct_export
    from ctv_core.scene import terminology

    return SimpleNamespace(conversion=conversion, lattice=lattice, model_description=model_description,
                           patient_frame=patient_frame, review_steps=review_steps, rtstruct_export=rtstruct_export,
                           terminology=terminology)


@pytest.fixture
def mrml_scene(slicer_lib):
    """A fresh MRML scene with the application's logics set on it."""
    from slicer_support import make_scene

    return make_scene()


@pytest.fixture(scope="session")
def pelvis_phantom(tmp_path_factory):
    """A small pelvic phantom CT (seed 9001, never trained on): 256 x 256 x 48 slices of 5 mm, HFS."""
    from ctv_core.phantom import ScanSettings, make_phantom

    return make_phantom(tmp_path_factory.mktemp("slicer") / "phantom", seed=9001,
                        settings=ScanSettings(matrix=256, slices=48, slice_thickness_mm=5.0))
