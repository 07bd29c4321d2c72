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
#: A node that shows no sign of work (audit log, index) for this long while a test waits on it has stopped
#: working: the test fails. A busy machine slows the node down; it does not make it this quiet.
QUIET_S = 90.0
#: However busy it looks, no wait on a node lasts longer than this.
CEILING_S = 1800.0


class Node:
    """``ctv node`` as a process; every node started is stopped when its test ends (``nodes_stopped``)."""

    running: list[Node] = []

    def __init__(self, data: Path, port: int, *args: str) -> None:
        self.data, self.port, self.args = data, port, args
        self.process: subprocess.Popen | None = None

    def start(self) -> Node:
        self.data.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([ctv_command(), "node", "--ae-title", NODE_AE, "--port", str(self.port),
                                         "--data", str(self.data), "--series-timeout", "1", "--device", "cpu",
                                         *self.args], stdout=subprocess.PIPE, stderr=open(self.data.parent /
                                         f"{self.data.name}.stderr", "ab"), text=True)
        if self not in Node.running:
            Node.running.append(self)
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

    def wait_audit(self, word: str) -> str:
        """The first audit line holding ``word``, once there is one (see :meth:`wait_working`)."""
        return self.wait_working(lambda: next((line for line in self.audit() if word in line), None),
                                 f"'{word}' in the audit log")

    def _activity(self) -> tuple:
        """What changes while the node works: its audit log and its index (a job's progress is written there)."""
        marks = []
        for path in (self.data / "audit.log", self.data / "index.sqlite", self.data / "index.sqlite-wal"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                marks.append(None)
            else:
                marks.append((stat.st_size, stat.st_mtime_ns))
        return tuple(marks)

    def wait_working(self, condition, what: str):
        """Poll ``condition()`` until it returns something true, and return that. Fails, naming ``what``, when the
        node has shown no sign of work for :data:`QUIET_S` (or after :data:`CEILING_S` in all): waits by the
        node's progress, not by a guess of how long it takes on a quiet machine."""
        start = quiet_since = time.monotonic()
        seen = self._activity()
        while True:
            value = condition()
            if value:
                return value
            now, activity = time.monotonic(), self._activity()
            if activity != seen:
                seen, quiet_since = activity, now
            if now - quiet_since > QUIET_S or now - start > CEILING_S:
                raise AssertionError(f"{what}: not after {now - start:.0f} s, the node quiet for "
                                     f"{now - quiet_since:.0f} s; its audit log ends {self.audit()[-8:]}")
            time.sleep(0.1)

    def settled(self) -> dict:
        """Wait until the node has nothing left to do (no series receiving, no job queued or running, no file
        pending in its outbox: whatever it would still send has gone); returns ``ctv node status --json``."""
        def idle() -> dict | None:
            status = self.status()
            summary = status["summary"]
            busy = summary["series_receiving"] or {"queued", "running"} & set(summary["jobs"]) or \
                summary["outbox"].get("pending")
            return None if busy else status

        return self.wait_working(idle, "the node settling")

    def rtstructs(self, pacs: Orthanc, count: int) -> list[dict]:
        """The PACS's RTSTRUCT series, once it holds ``count`` of them (see :meth:`wait_working`)."""
        return self.wait_working(lambda: found if len(found := pacs.series_of_modality("RTSTRUCT")) >= count
                                 else None, f"{count} RTSTRUCT series in the PACS")


@pytest.fixture(autouse=True)
def nodes_stopped():
    """Stops, after each test of a module that imports this fixture, every node the test started, passed or failed:
    a node left running outlives pytest (its parent is gone, it keeps its port and its data folder open)."""
    yield
    while Node.running:
        Node.running.pop().stop()


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
