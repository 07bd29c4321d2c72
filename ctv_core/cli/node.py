"""``ctv node`` (the DICOM node) and its operator commands: ``status``, ``resend``, ``release``."""

from __future__ import annotations

import argparse
import getpass
import json
import signal
import tempfile
from pathlib import Path

from ..errors import require_extra


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``ctv node`` with its ``status``, ``resend`` and ``release`` subcommands."""
    p = sub.add_parser(
        "node", parents=[common], help="the DICOM node: CT in by C-STORE, RTSTRUCT out by C-STORE",
        description="Receive CT series by DICOM (C-STORE, C-ECHO), delineate each complete series with the ctv predict "
                    "job and send the RTSTRUCT to the planning system. Everything is recorded under --data, so a "
                    "restarted node finishes what was pending. A series is delineated when its images say it is "
                    "whole; one that is not waits, listed by 'ctv node status', until its missing instances arrive "
                    "or an operator releases it ('ctv node release'). 'ctv node status' and 'ctv node resend' "
                    "inspect and retry the outbox.")
    p.add_argument("--ae-title", default="CTVNODE", help="this node's AE title (default: CTVNODE)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=11112, help="DICOM port (default: 11112)")
    p.add_argument("--data", type=Path, default=Path("node_data"), metavar="DIR",
                   help="case store: received CTs, results, the index and the audit log (default: ./node_data)")
    p.add_argument("--send-to", action="append", default=[], metavar="AE@HOST:PORT",
                   help="where results go (repeatable); a series sent by one of them goes back to that one only")
    p.add_argument("--allow", action="append", default=[], metavar="AE[@HOST]",
                   help="calling AE titles (from a host) that may send; others are rejected (default: anyone)")
    p.add_argument("--model", type=Path, default=None, metavar="PKG", help="model package (default: the bundled one)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--engine", choices=("auto", "openvino", "torch"), default="auto",
                   help="what runs the network (as ctv predict --engine; auto: OpenVINO on the CPU)")
    p.add_argument("--series-timeout", type=float, default=30.0, metavar="S",
                   help="a series is judged when nothing has arrived for S seconds (default: 30): whole by what its "
                        "images say, it is delineated; otherwise it waits as incomplete")
    p.add_argument("--series-max-wait", type=float, default=600.0, metavar="S",
                   help="a series still receiving after S seconds is judged all the same (default: 600): a slow "
                        "trickle cannot keep it open")
    p.add_argument("--max-instance-mb", type=float, default=64.0, metavar="MB",
                   help="largest instance stored; larger ones are refused with status 0xA700 as they arrive "
                        "(default: 64)")
    p.add_argument("--max-associations", type=int, default=16, metavar="N",
                   help="associations at once from all peers (default: 16); more are rejected (local limit)")
    p.add_argument("--max-associations-per-peer", type=int, default=4, metavar="N",
                   help="associations at once from one address (default: 4)")
    p.add_argument("--workers", type=int, default=1, help="series delineated at once (default: 1)")
    p.add_argument("--formats", default="rtstruct", choices=("rtstruct", "rtstruct,seg"), metavar="LIST",
                   help="what is sent: rtstruct, or rtstruct,seg (default: rtstruct)")
    p.add_argument("--review-before-send", action="store_true",
                   help="hold results until the case is approved in the review station (ctv review --data DIR)")
    p.add_argument("--retry-seconds", type=float, default=10.0, metavar="S",
                   help="first wait before re-sending to a destination that is down; doubles each time (default: 10)")
    p.add_argument("--max-attempts", type=int, default=8, help="attempts per file before it waits for 'resend'")
    p.set_defaults(func=run_node)
    commands = p.add_subparsers(dest="node_command")
    s = commands.add_parser("status", parents=[common], help="cases, jobs and the outbox of a node's data folder")
    s.add_argument("--data", type=Path, default=Path("node_data"), metavar="DIR")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=run_status)
    r = commands.add_parser("resend", parents=[common], help="send failed outbox items again")
    r.add_argument("--data", type=Path, default=Path("node_data"), metavar="DIR")
    r.add_argument("--id", type=int, action="append", default=None,
                   help="outbox item (repeatable; default: all failed)")
    r.set_defaults(func=run_resend)
    rel = commands.add_parser("release", parents=[common],
                              help="delineate an incomplete series as it is (an operator's decision, audited)")
    rel.add_argument("series", metavar="SERIES_UID", help="the SeriesInstanceUID 'ctv node status' lists as incomplete")
    rel.add_argument("--data", type=Path, default=Path("node_data"), metavar="DIR")
    rel.set_defaults(func=run_release)


def run_node(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM."""
    require_extra("pynetdicom", "node", "The DICOM node")
    from ..service.dicom_io import MB, ReceiveLimits
    from ..service.node import DicomNode, NodeConfig
    from ..service.peers import AllowedPeer, Destination, check_ae_title

    limits = ReceiveLimits(max_instance_bytes=int(args.max_instance_mb * MB), max_associations=args.max_associations,
                           max_associations_per_peer=args.max_associations_per_peer)
    config = NodeConfig(ae_title=check_ae_title(args.ae_title, "--ae-title"), port=args.port, data=args.data,
                        host=args.host, send_to=tuple(Destination.parse(d) for d in args.send_to),
                        allow=tuple(AllowedPeer.parse(a) for a in args.allow), model=args.model, device=args.device,
                        engine=args.engine,
                        series_timeout_s=args.series_timeout, series_max_wait_s=args.series_max_wait, limits=limits,
                        workers=args.workers, formats=tuple(args.formats.split(",")),
                        review_before_send=args.review_before_send, retry_s=args.retry_seconds,
                        max_attempts=args.max_attempts)
    node = DicomNode(config)
    # pynetdicom writes each arriving data set to a temporary file; this process's temporary folder is put on
    # the data folder's disk, so that filing an instance is a rename and no RAM-backed /tmp fills.
    tempfile.tempdir = str(node.store.inbox.receiving_dir())
    node.start()
    signal.signal(signal.SIGTERM, lambda *_: node.stop())
    print(f"ctv node {config.ae_title} listening on {config.host}:{config.port}; data in {config.data} "
          f"(audit log {config.data / 'audit.log'})", flush=True)
    try:
        node.wait()
    except KeyboardInterrupt:
        node.stop()
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Print the node's cases, jobs, outbox, the series not (yet) delineated and the quarantine."""
    from ..service.records import INCOMPLETE, RECEIVING, RELEASED
    from ..service.store import CaseStore

    store = CaseStore(args.data)
    summary = store.summary()
    cases = store.cases()
    outbox = [item.__dict__ for item in store.outbox.items()]
    waiting = store.series((RECEIVING, INCOMPLETE, RELEASED))
    quarantine = args.data / "quarantine"
    quarantined = sorted(p.name for p in quarantine.iterdir()) if quarantine.is_dir() else []
    if args.json:
        print(json.dumps({"summary": summary, "cases": cases, "outbox": outbox, "series": waiting,
                          "quarantine": quarantined}, indent=2, default=str))
        return 0
    print(f"{summary['cases']} case(s); jobs {summary['jobs'] or 'none'}; outbox {summary['outbox'] or 'empty'}; "
          f"series {summary['series'] or 'none'}")
    for series in waiting:
        print(f"  series {series['uid']} from {series['sender']}: {series['state'].upper()}, {series['instances']} "
              f"instance(s)" + (f" -- {series['note']}" if series["note"] else ""))
    if waiting:
        print(f"  (release an incomplete series as it is: ctv node release SERIES_UID --data {args.data})")
    if quarantined:
        print(f"  quarantine: {len(quarantined)} folder(s) under {args.data / 'quarantine'} hold what restarts did "
              "not understand (never used; inspect, then delete)")
    for case in cases[:50]:
        line = f"  {case['id']}  {case['status']:8s} {case['source']:6s} {case['sender']:16s} {case['description']}"
        print(line + (f"  -- {case['message']}" if case["message"] else ""))
    for item in outbox:
        print(f"  outbox #{item['id']}: {item['file']} of {item['case_id']} v{item['version']} to "
              f"{item['destination']}: {item['status']} after {item['attempts']} attempt(s)"
              + (f" ({item['last_error']})" if item["last_error"] else ""))
    return 0


def run_resend(args: argparse.Namespace) -> int:
    """Put failed outbox items back to pending (a running node sends them at once)."""
    from ..service.store import CaseStore

    count = CaseStore(args.data).outbox.resend(args.id)
    print(f"{count} outbox item(s) queued to send again")
    return 0


def run_release(args: argparse.Namespace) -> int:
    """Release an incomplete series: the node (running now, or at its next start) delineates it as it is."""
    from ..dicom.uids import uid_problem
    from ..errors import CTVError
    from ..service.audit import AuditLog
    from ..service.records import INCOMPLETE
    from ..service.store import CaseStore

    problem = uid_problem(args.series, "SERIES_UID")
    if problem:
        raise CTVError(f"{problem}; give the SeriesInstanceUID as 'ctv node status --data {args.data}' lists it.")
    store = CaseStore(args.data)
    series = store.release_series(args.series)
    if series is None:
        incomplete = [s["uid"] for s in store.series((INCOMPLETE,))]
        raise CTVError(f"No incomplete series {args.series} in {args.data}; "
                       + (f"the incomplete ones are {', '.join(incomplete)}." if incomplete else
                          "none is incomplete ('ctv node status' lists the series)."))
    AuditLog(args.data / "audit.log")("series-released", f"{series['uid']} ({series['instances']} instance(s) from "
                                                         f"{series['sender']}; {series['note']}) released as it is by "
                                                         f"{getpass.getuser()} with ctv node release")
    print(f"series {series['uid']} released: the node delineates its {series['instances']} instance(s) as they are "
          "(now if it is running, else at its next start)")
    return 0
