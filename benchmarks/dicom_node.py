"""The DICOM node end to end: from the last CT instance stored at the node to the RTSTRUCT stored in Orthanc.

A 512 x 512 x 200 phantom CT is uploaded to a local Orthanc (Debian's package), which sends it to
``ctv node`` (the real command, bundled model, CPU); the clock runs from the reception time of
the series' last instance in the node's index to the moment Orthanc lists the RTSTRUCT
(polled every 50 ms). Target: series timeout + <= 10 s on this machine.

    .venv/bin/python benchmarks/dicom_node.py [--timeout S] [--engine auto|openvino|torch] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))

from orthanc import Orthanc, free_port  # noqa: E402

from ctv_core.phantom import ScanSettings, make_phantom  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=5.0, help="the node's --series-timeout, seconds")
    parser.add_argument("--engine", default="auto", choices=("auto", "openvino", "torch"))
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ctv_node_bench_"))
    phantom = make_phantom(work / "ct512", seed=0, settings=ScanSettings(matrix=512, slices=200, slice_thickness_mm=2.0))
    port = free_port()
    pacs = Orthanc(work / "orthanc", {"ctvnode": ("CTVNODE", "127.0.0.1", port)}).start()
    ctv = Path(sys.executable).parent / "ctv"
    node = subprocess.Popen([str(ctv), "node", "--port", str(port), "--data", str(work / "node"), "--device", "cpu",
                             "--engine", args.engine, "--series-timeout", str(args.timeout), "--send-to", f"ORTHANC@127.0.0.1:{pacs.dicom_port}"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert "listening" in node.stdout.readline()
        series = pacs.upload(phantom.ct_dir)
        sent = time.time()
        pacs.send(series, "ctvnode")
        transfer = time.time() - sent
        while not pacs.series_of_modality("RTSTRUCT"):
            time.sleep(0.05)
        arrived = time.time()
        db = sqlite3.connect(work / "node" / "index.sqlite")
        last = db.execute("SELECT MAX(last_received) FROM series").fetchone()[0]
        audit = (work / "node" / "audit.log").read_text().splitlines()
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=60)
        pacs.stop()
    total = arrived - last
    print(f"CT 512 x 512 x 200 sent by Orthanc in {transfer:.1f} s (C-STORE of 200 instances)")
    print(f"--engine {args.engine}: last instance stored -> RTSTRUCT stored in Orthanc: {total:.1f} s = series timeout {args.timeout:g} s + "
          f"{total - args.timeout:.1f} s (target: timeout + <= 10 s)")
    for line in audit:
        if any(word in line for word in (" job-start ", " job-done ", " sent ")):
            print("  " + line[:160])


if __name__ == "__main__":
    main()
