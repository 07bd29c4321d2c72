"""A real PACS for the DICOM tests: Debian's Orthanc, started on free loopback ports with a generated configuration.

Orthanc's HTTP API (``RemoteAccessAllowed: false``: localhost only) drives it: upload files,
send a series to a modality, list and download what it holds. Its DICOM side accepts only the
modalities named in the configuration, from their own hosts.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """One Orthanc server in ``root`` (its storage survives :meth:`stop` / :meth:`start`)."""

    def __init__(self, root: Path, modalities: dict[str, tuple[str, str, int]]) -> None:
        binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        if not Path(binary).exists():
            pytest.fail("Orthanc is not installed; run the tests through scripts/test.sh, which installs it")
        self.binary, self.root = binary, root
        self.http_port, self.dicom_port = free_port(), free_port()
        self.aet = "ORTHANC"
        config = {
            "Name": "ctv-test-pacs", "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": self.aet,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
            "DicomServerEnabled": True, "DicomCheckCalledAet": False, "DicomCheckModalityHost": True,
            "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowStore": False, "DicomScuTimeout": 30,
            "DicomModalities": {name: list(spec) for name, spec in modalities.items()},
            "Plugins": [], "StableAge": 2, "ConcurrentJobs": 2, "LimitJobs": 10,
        }
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "orthanc.json"
        self.config.write_text(json.dumps(config, indent=2))
        self.process: subprocess.Popen | None = None

    def start(self) -> Orthanc:
        self.process = subprocess.Popen([self.binary, str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=open(self.root / "orthanc.log", "ab"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.get("/system")
                return self
            except OSError:
                if self.process.poll() is not None:
                    pytest.fail(f"Orthanc exited at start: {(self.root / 'orthanc.log').read_text()[-2000:]}")
                time.sleep(0.1)
        pytest.fail("Orthanc did not answer within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    # --- HTTP ---------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None = None, kind: str = "application/json") -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method,
                                         headers={"Content-Type": kind} if body is not None else {})
        with urllib.request.urlopen(request, timeout=120) as answer:
            data = answer.read()
        if answer.headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(data)
        return data

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, payload: Any) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self._request("POST", path, body, "application/dicom" if isinstance(payload, bytes) else "application/json")

    def upload(self, folder: Path) -> str:
        """Store every file of ``folder``; returns the Orthanc id of their series."""
        series = set()
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                series.add(self.post("/instances", path.read_bytes())["ParentSeries"])
        assert len(series) == 1, series
        return series.pop()

    def send(self, series_id: str, modality: str, synchronous: bool = True) -> Any:
        """C-STORE a series to a configured modality (Orthanc's job); raises ``HTTPError`` when it fails."""
        return self.post(f"/modalities/{modality}/store", {"Resources": [series_id], "Synchronous": synchronous})

    def series_of_modality(self, modality: str) -> list[dict]:
        return [s for s in self.get("/series?expand") if s["MainDicomTags"].get("Modality") == modality]

    def instance_file(self, instance_id: str) -> bytes:
        return self.get(f"/instances/{instance_id}/file")

    def wait_for(self, modality: str, count: int, timeout_s: float) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.series_of_modality(modality)
            if len(found) >= count:
                return found
            time.sleep(0.2)
        return self.series_of_modality(modality)


def http_error(call) -> urllib.error.HTTPError | None:
    """The HTTPError ``call()`` raises, or None."""
    try:
        call()
    except urllib.error.HTTPError as exc:
        return exc
    return None
