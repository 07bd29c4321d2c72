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


#: Every command, an option its help must name, and arguments that fail as a user would make them fail.
COMMANDS = {
    "phantom": ("--position", lambda tmp: ["phantom", str(_non_empty(tmp))]),
    "inspect": ("--allow-gaps", lambda tmp: ["inspect", str(_empty(tmp))]),
    "convert": ("--to", lambda tmp: ["convert", str(_empty(tmp)), str(tmp / "in.dcm"), str(tmp / "out.nii.gz")]),
    "predict": ("--formats", lambda tmp: ["predict", str(_empty(tmp)), str(tmp / "out")]),
    "dataset build": ("--extra-roi", lambda tmp: ["dataset", "build", str(tmp / "no_archive"), str(tmp / "o.h5")]),
    "dataset info": ("--json", lambda tmp: ["dataset", "info", str(tmp / "missing.h5")]),
    "train": ("--folds", lambda tmp: ["train", str(tmp / "missing.h5"), str(tmp / "run")]),
    "export": ("--checkpoint", lambda tmp: ["export", str(_empty(tmp)), str(tmp / "pkg")]),
    "add-graph": ("NEW_PKG", lambda tmp: ["add-graph", str(_empty(tmp)), str(tmp / "pkg")]),
    "evaluate": ("--tolerance", lambda tmp: ["evaluate", str(tmp / "p.nii.gz"), str(tmp / "r.nii.gz"), str(tmp / "o")]),
    "report": ("SOURCE", lambda tmp: ["report", str(tmp / "no_store"), str(tmp / "o")]),
    "model compare": ("--held-out", lambda tmp: ["model", "compare", str(_empty(tmp)), str(_empty(tmp)), "--held-out",
                                                 str(tmp / "missing.h5")]),
}


def _empty(tmp):
    folder = tmp / "empty"
    folder.mkdir(exist_ok=True)
    return folder


def _non_empty(tmp):
    folder = tmp / "full"
    folder.mkdir(exist_ok=True)
    (folder / "something.txt").write_text("x")
    return folder


def test_every_command_has_help_naming_its_options():
    top = run("--help")
    assert top.returncode == 0
    for command, (option, _) in COMMANDS.items():
        assert command.split()[0] in top.stdout
        result = run(*command.split(), "--help")
        assert result.returncode == 0, command
        assert f"usage: ctv {command}" in result.stdout and option in result.stdout, command


def test_every_command_fails_with_one_paragraph_and_exit_2(tmp_path):
    for command, (_, arguments) in COMMANDS.items():
        result = run(*arguments(tmp_path))
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, command
        message = result.stderr.strip()
        assert message.startswith(f"ctv {command.split()[0]}: error: "), (command, message)
        assert "\n" not in message, (command, message)  # one paragraph, no log spill
        assert len(message) > 40, (command, message)  # says what was wrong and what to do


def test_argument_errors_exit_2_with_usage(tmp_path):
    result = run("predict")
    assert result.returncode == 2 and "usage: ctv predict" in result.stderr and "Traceback" not in result.stderr
    result = run("phantom", str(tmp_path / "x"), "--matrix", "300")
    assert result.returncode == 2 and "invalid choice" in result.stderr
