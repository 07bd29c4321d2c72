"""What a hostile peer costs the services: the DICOM node's memory for one large instance, the review station's CPU
for one zip of zeros.

* Node: ``ctv node`` (the real command) receives one CT instance of ``--instance-mb`` MiB of pixel data from a
  pynetdicom peer (sent from a file, in the PDUs the node announced); the node process's peak resident memory
  (VmHWM, /proc) before and after, and the C-STORE status. Run once with the default limit (the instance is
  refused as it arrives) and once with ``--max-instance-mb`` above the instance (it is received to disk).
* Station: ``ctv review`` (loopback, no token) receives a zip of ``--zeros-mb`` MiB of zeros in one member
  (about 100 kB on the wire); the station process's CPU seconds (utime + stime, /proc) spent on it, and the
  answer.

    .venv/bin/python benchmarks/hostile_peers.py [--instance-mb 128] [--zeros-mb 100] [--source DIR]

``--source DIR`` runs the services from another copy of the code (e.g. ``git archive main | tar -x -C DIR``) with
this interpreter, to compare before and after.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))

from orthanc import free_port  # noqa: E402


def _status(pid: int, field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/PID/status, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True, env=env,
                               cwd=log.parent)  # not the checkout: "python -m" puts the working folder first
    line = ""
    while "listening" not in line:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            raise SystemExit(f"{command[3]} did not start: {log.read_text()[-2000:]}")
    return process


def _large_instance(path: Path, megabytes: int) -> None:
    """A CT instance with ``megabytes`` MiB of pixel data (a square int16 image)."""
    from ctv_core.phantom import ScanSettings, make_phantom
    import pydicom
    from pydicom.uid import generate_uid

    ct = make_phantom(path.parent / "phantom", seed=1, settings=ScanSettings(matrix=256, slice_thickness_mm=5.0))
    ds = pydicom.dcmread(sorted(ct.ct_dir.iterdir())[0])
    side = int((megabytes * 2**20 / 2) ** 0.5)
    ds.Rows = ds.Columns = side
    ds.PixelData = bytes(side * side * 2)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(path)


def node_memory(work: Path, env: dict, instance: Path, extra: list[str]) -> tuple[int, int, str]:
    """(VmHWM before, VmHWM after, C-STORE status) of one node receiving ``instance``, kB."""
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import CTImageStorage

    port = free_port()
    data = work / f"node{port}"
    node = _start([sys.executable, "-m", "ctv_core", "node", "--port", str(port), "--data", str(data),
                   "--device", "cpu", *extra], env, work / f"node{port}.log")
    try:
        time.sleep(2)
        before = _status(node.pid, "VmHWM")
        ae = AE("BENCH")
        ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
        _config.STORE_SEND_CHUNKED_DATASET = True  # the client streams the file: only the node's memory counts
        assoc = ae.associate("127.0.0.1", port, ae_title="CTVNODE")
        answer = assoc.send_c_store(instance)
        assoc.release()
        time.sleep(1)
        after = _status(node.pid, "VmHWM")
        status = f"0x{answer.Status:04X}" if answer and "Status" in answer else "no answer"
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=60)
    return before, after, status


def station_cpu(work: Path, env: dict, megabytes: int) -> tuple[float, int, int, str]:
    """(CPU seconds, zip bytes, HTTP status, message) of one station receiving a zip of zeros."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zipped:
        zipped.writestr("ct/zeros.dcm", bytes(megabytes << 20))
    body = buffer.getvalue()
    port = free_port()
    station = _start([sys.executable, "-m", "ctv_core", "review", "--port", str(port), "--data",
                      str(work / f"station{port}"), "--device", "cpu"], env, work / f"station{port}.log")
    try:
        time.sleep(2)
        before = _cpu_seconds(station.pid)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/cases", data=body, method="POST",
                                         headers={"Content-Type": "application/zip"})
        try:
            with urllib.request.urlopen(request, timeout=3600) as answer:
                status, text = answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        spent = _cpu_seconds(station.pid) - before
    finally:
        station.send_signal(signal.SIGTERM)
        station.wait(timeout=90)
    return spent, len(body), status, text[:120]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instance-mb", type=int, default=128)
    parser.add_argument("--zeros-mb", type=int, default=100)
    parser.add_argument("--source", type=Path, default=None, help="run the services from this copy of the code")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ctv_hostile_"))
    env = dict(os.environ, VTK_DEFAULT_OPENGL_WINDOW="vtkEGLRenderWindow")
    if args.source is not None:
        env["PYTHONPATH"] = str(args.source.resolve())
    print(f"code: {args.source or 'this checkout'}")
    instance = work / "large.dcm"
    _large_instance(instance, args.instance_mb)
    print(f"instance file: {instance.stat().st_size / 2**20:.1f} MiB")
    runs = [("default limits", [])]
    if args.source is None:
        runs.append((f"--max-instance-mb {args.instance_mb * 2}", ["--max-instance-mb", str(args.instance_mb * 2)]))
    for what, extra in runs:
        before, after, status = node_memory(work, env, instance, extra)
        print(f"node, {what}: peak RSS {before / 1024:.0f} MB before, {after / 1024:.0f} MB after one "
              f"{args.instance_mb} MiB instance (+{(after - before) / 1024:.0f} MB); C-STORE status {status}")
    spent, size, status, text = station_cpu(work, env, args.zeros_mb)
    print(f"station: zip of {args.zeros_mb} MiB of zeros ({size / 1000:.0f} kB sent): {spent:.2f} s of CPU, "
          f"answer {status}: {text}")


if __name__ == "__main__":
    main()
