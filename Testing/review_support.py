"""The review station for tests: ``ctv review`` as a real process on a free loopback port, HTTP calls to it,
zips of DICOM folders, and headless Chromium (Debian's ``chromium`` with ``chromium-driver``) for the page."""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
from conftest import ctv_command
from orthanc import free_port

#: Long enough that a test can mistype nothing.
TOKEN = "test-token-0123456789abcdef"
CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1600,1000")


class Station:
    """``ctv review`` in its own process, started on a free port of 127.0.0.1."""

    def __init__(self, data: Path, *args: str, token: str | None = TOKEN) -> None:
        self.data, self.args, self.token = data, args, token
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = data.parent / f"{data.name}.station.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120) -> Station:
        command = [ctv_command(), "review", "--port", str(self.port), "--data", str(self.data), "--device", "cpu",
                   *self.args] + (["--token", self.token] if self.token else [])
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=open(self.log, "ab"), text=True)
        deadline = time.monotonic() + timeout_s
        line = ""
        while time.monotonic() < deadline and "listening" not in line:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                break
        assert "listening" in line, (line, self.log.read_text()[-3000:])
        return self

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; returns the exit status."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(timeout=90)
        return self.process.returncode if self.process else 0

    def call(self, method: str, path: str, body: bytes | dict | None = None, *, token: str | None = "default",
             headers: dict | None = None, timeout: float = 120) -> tuple[int, dict | bytes, dict]:
        """An HTTP request; returns the status, the JSON (or bytes) answer and the headers."""
        headers = dict(headers or {})
        token = self.token if token == "default" else token
        if token:
            headers.setdefault("Authorization", f"Bearer {token}")
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                status, data, got = answer.status, answer.read(), dict(answer.headers)
        except urllib.error.HTTPError as error:
            status, data, got = error.code, error.read(), dict(error.headers)
        if got.get("Content-Type", "").startswith("application/json"):
            return status, json.loads(data), got
        return status, data, got

    def upload(self, zipped: bytes, **query) -> tuple[int, dict]:
        suffix = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
        status, answer, _ = self.call("POST", "/api/cases" + suffix, zipped,
                                      headers={"Content-Type": "application/zip"})
        return status, answer

    def wait_case(self, case_id: str, statuses=("done", "failed"), timeout_s: float = 300) -> dict:
        """Wait until the case's status is one of ``statuses``; returns the case."""
        return self._wait(case_id, lambda case: case["status"] in statuses, f"status in {statuses}", timeout_s)

    def wait_stage(self, case_id: str, stages: tuple[str, ...], timeout_s: float = 300) -> dict:
        """Wait until the case's prediction process reports one of ``stages`` (its progress, written only by
        the running process: not the status ``running``, set before any process exists); returns the case."""
        def at_stage(case: dict) -> bool:
            assert case["status"] not in ("done", "failed"), f"case {case_id} ended before {stages}: {case}"
            return case.get("progress", {}).get("stage") in stages

        return self._wait(case_id, at_stage, f"a stage in {stages}", timeout_s, every_s=0.05)

    def _wait(self, case_id: str, condition, what: str, timeout_s: float, every_s: float = 0.5) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            status, case, _ = self.call("GET", f"/api/cases/{case_id}")
            assert status == 200, case
            if condition(case):
                return case
            if time.monotonic() > deadline:
                raise AssertionError(f"case {case_id}: no {what} after {timeout_s} s: {case}")
            time.sleep(every_s)


def zip_folder(folder: Path, *extra: tuple[str, bytes]) -> bytes:
    """A zip of every file below ``folder`` (paths relative to its parent), plus ``extra`` members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zipped.write(path, path.relative_to(folder.parent).as_posix())
        for name, data in extra:
            zipped.writestr(name, data)
    return buffer.getvalue()


def axial_view(browser):
    """The axial view as the browser shows it: RGB ``(height, width, 3)`` int, and its element (the largest
    image of the page)."""
    import numpy as np
    from PIL import Image

    images = browser.find_elements("css selector", "img")
    if not images:
        return np.zeros((1, 1, 3), int), None
    image = max(images, key=lambda i: i.size["width"] * i.size["height"])
    return np.asarray(Image.open(io.BytesIO(image.screenshot_as_png)).convert("RGB")).astype(int), image


def magenta(rgb) -> int:
    """Pixels where the CTV's magenta (255, 0, 255) is drawn over the grey CT: red and blue well above green."""
    return int(((rgb[..., 0] - rgb[..., 1] > 60) & (rgb[..., 2] - rgb[..., 1] > 60)).sum())


def chromium():
    """Headless Chromium driven by chromium-driver (the test fails, not skips, when either is missing)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail("chromium and chromium-driver are not installed; run the tests through scripts/test.sh")
    options = webdriver.ChromeOptions()
    for argument in CHROMIUM_ARGS:
        options.add_argument(argument)
    options.binary_location = browser
    return webdriver.Chrome(service=Service(driver), options=options)
