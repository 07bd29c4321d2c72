"""The DICOM node for tests: ``ctv node`` as a real process on a free loopback port, a real PACS (Orthanc) that
knows it, and a hostile peer: a pynetdicom client that sends whatever an attacker would."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from conftest import ctv_command
from orthanc import Orthanc, free_port
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, RTStructureSetStorage, Verification

NODE_AE = "CTVNODE"


class Node:
    """``ctv node`` as a process."""

    def __init__(self, data: Path, port: int, *args: str) -> None:
        self.data, self.port, self.args = data, port, args
        self.process: subprocess.Popen | None = None

    def start(self) -> Node:
        self.data.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([ctv_command(), "node", "--ae-title", NODE_AE, "--port", str(self.port),
                                         "--data", str(self.data), "--series-timeout", "1", "--device", "cpu",
                                         *self.args], stdout=subprocess.PIPE, stderr=open(self.data.parent /
                                         f"{self.data.name}.stderr", "ab"), text=True)
        line = self.process.stdout.readline()
        assert "listening" in line, (line, (self.data.parent / f"{self.data.name}.stderr").read_text()[-2000:])
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def audit(self) -> list[str]:
        path = self.data / "audit.log"
        return path.read_text().splitlines() if path.exists() else []

    def status(self) -> dict:
        """``ctv node status --json``."""
        done = subprocess.run([ctv_command(), "node", "status", "--data", str(self.data), "--json"],
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    def wait_audit(self, word: str, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.audit():
                if word in line:
                    return line
            time.sleep(0.1)
        raise AssertionError(f"no '{word}' in the audit log: {self.audit()}")


@pytest.fixture
def pacs_and_node(tmp_path):
    """An Orthanc that knows the node as a modality, and a node (not started) that sends back to it."""
    port = free_port()
    pacs = Orthanc(tmp_path / "orthanc", {"ctvnode": (NODE_AE, "127.0.0.1", port)})
    nodes: list[Node] = []

    def node(*args: str) -> Node:
        made = Node(tmp_path / "node_data", port, "--send-to", f"{pacs.aet}@127.0.0.1:{pacs.dicom_port}", *args)
        nodes.append(made)
        return made

    pacs.start()
    yield pacs, node
    for made in nodes:
        made.stop()
    pacs.stop()


class Peer:
    """A calling AE (pynetdicom) that may send anything: datasets, or files sent as they are on disk (their
    file meta then makes the C-STORE request, whatever the data set says)."""

    def __init__(self, port: int, ae_title: str = "ATTACKER") -> None:
        self.port = port
        self.ae = AE(ae_title=ae_title)
        for sop_class in (CTImageStorage, MRImageStorage, RTStructureSetStorage):
            self.ae.add_requested_context(sop_class, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        self.ae.add_requested_context(Verification)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 30

    def associate(self):
        return self.ae.associate("127.0.0.1", self.port, ae_title=NODE_AE)

    @staticmethod
    def store(assoc, what) -> int | None:
        """C-STORE a dataset, or a file as it is (request from its file meta); the status, or None."""
        if isinstance(what, Path):
            previous, _config.STORE_SEND_CHUNKED_DATASET = _config.STORE_SEND_CHUNKED_DATASET, True
            try:
                answer = assoc.send_c_store(what)
            finally:
                _config.STORE_SEND_CHUNKED_DATASET = previous
        else:
            answer = assoc.send_c_store(what)
        return getattr(answer, "Status", None)

    def send_series(self, files, abort_after: int | None = None) -> list[int | None]:
        """Send ``files`` on one association, released at the end (or aborted after ``abort_after`` of them)."""
        assoc = self.associate()
        assert assoc.is_established
        statuses = []
        for n, path in enumerate(files):
            if abort_after is not None and n == abort_after:
                assoc.abort()
                return statuses
            statuses.append(self.store(assoc, pydicom.dcmread(path)))
        assoc.release()
        return statuses


def wait_for(condition, timeout_s: float, what: str):
    """Poll ``condition()`` until it returns something true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s} s")
