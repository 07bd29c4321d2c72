"""The ``ctv`` command line: contract, exit status and messages without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pydicom
from conftest import axial_grid, ctv_command, write_linear_series

from ctv_core.cli.progress import StageBars


def run(*args, module: bool = False):
    command = [sys.executable, "-m", "ctv_core", *args] if module else [ctv_command(), *args]
    return subprocess.run(command, capture_output=True, text=True)


def test_version_through_console_script_and_module():
    import ctv_core

    for module in (False, True):
        result = run("--version", module=module)
        assert result.returncode == 0
        assert ctv_core.__version__ in result.stdout


def test_inspect_reports_the_series_as_json(tmp_path):
    grid = axial_grid("FFS")
    folder = write_linear_series(tmp_path / "ct", grid, "FFS")
    result = run("inspect", str(folder), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["size"] == list(grid.size)
    assert info["direction"][0] == -1.0  # feet first: columns run to the patient's right
    assert info["patient_position"] == "FFS"
    uid = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SeriesInstanceUID
    assert info["series_instance_uid"] == uid


def test_user_errors_exit_non_zero_with_one_message_and_no_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    for args in (["inspect", str(tmp_path / "empty")], ["inspect", str(tmp_path / "missing")]):
        result = run(*args)
        assert result.returncode == 2
        assert result.stderr.startswith("ctv inspect: error: ")
        assert "Traceback" not in result.stderr
        assert "folder" in result.stderr


def test_missing_slice_message_reaches_the_user(tmp_path):
    folder = write_linear_series(tmp_path / "ct", axial_grid())
    sorted(folder.iterdir())[4].unlink()
    result = run("inspect", str(folder))
    assert result.returncode == 2 and "missing slices" in result.stderr and "--allow-gaps" in result.stderr
    assert run("inspect", str(folder), "--allow-gaps").returncode == 0


def test_stage_bars_show_one_bar_per_stage_and_nothing_when_quiet(capsys):
    with StageBars(units={"scanning": "folder"}) as bars:
        bars("scanning", 1, 4)
        bars("scanning", 4, 4)
        bars("building", 1, 3)
    err = capsys.readouterr().err
    assert "scanning" in err and "/4 [" in err and "folder" in err
    assert "building" in err and "/3 [" in err and err.index("scanning") < err.index("building")
    with StageBars(quiet=True) as bars:
        bars("scanning", 1, 4)
    assert capsys.readouterr().err == ""
