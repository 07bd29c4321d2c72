"""Stopping the prediction process stops the interpreter, not only the launcher in front of it.

Slicer's ``PythonSlicer`` is a CTKAppLauncher: it sets the library paths and runs the real
interpreter as its child. The launcher played here does the same (starts a child that inherits
its stdout, waits for it), so a runner that signals only the process it started leaves the child
running, and its open stdout keeps the run looking active."""

from __future__ import annotations

import os
import sys
import time

import pytest

LAUNCHER = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c",
                          "import os, time; print(os.getpid(), flush=True); time.sleep(600)"])
sys.exit(child.wait())
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (ended, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(os.name == "nt", reason="the process-group path; Windows ends the tree with taskkill /T")
@pytest.mark.parametrize("stop", ["terminate", "kill"])
def test_stopping_reaches_the_interpreter_the_launcher_started(slicer_lib, stop):
    runner = slicer_lib.SubprocessRunner()
    runner.start([sys.executable, "-c", LAUNCHER])
    deadline = time.monotonic() + 30
    lines = []
    while not lines:
        assert time.monotonic() < deadline, "the launcher's child did not start"
        lines = runner.readLines()
        time.sleep(0.05)
    child = int(lines[0])
    assert _alive(child)
    getattr(runner, stop)()
    deadline = time.monotonic() + 10
    while _alive(child) or runner.exitCode() is None:
        assert time.monotonic() < deadline, f"after {stop}(): child alive={_alive(child)}, exit={runner.exitCode()}"
        time.sleep(0.05)
    assert runner.exitCode() in (-15, -9)
