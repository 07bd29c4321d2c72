"""The ``ctv`` command: builds the parser from each command's module, configures logging, runs one handler.

Errors that users or the environment can cause (``CTVError``, and any ``OSError`` a stage did
not turn into one) are printed as one paragraph on stderr with exit status 2; no traceback.
Logging is configured here and nowhere else. Building the parser imports no library of the
field (torch, SimpleITK, pydicom, …): each handler imports what its command needs when it runs.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from .._version import __version__
from ..errors import CTVError, describe_os_error
from . import convert, dataset, evaluate, inspect, model, node, phantom, predict, report, review, training

logger = logging.getLogger("ctv_core")

#: The command modules, in the order ``ctv --help`` lists them; each has ``add_commands(sub, common)``.
COMMANDS = (phantom, inspect, convert, predict, dataset, training, model, evaluate, report, node, review)


def build_parser() -> argparse.ArgumentParser:
    """The ``ctv`` argument parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="ctv", description="CTV auto-delineation for cervical cancer radiotherapy (ctv_core)."
    )
    parser.add_argument("--version", action="version", version=f"ctv_core {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log details")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.add_commands(sub, common)
    return parser


def _interrupt_on_sigterm():
    """SIGTERM (a service stopping a job, a cancel) ends a command as Ctrl+C does: cleanly, leftovers removed.

    Returns the handler it replaced (None off the main thread, where signals cannot be handled).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, signal.default_int_handler)


def user_message(command: str, exc: CTVError | OSError) -> str:
    """The one paragraph a user is told about ``exc``, an error they or the environment caused while running
    ``ctv command``."""
    if isinstance(exc, CTVError):
        return str(exc)
    return describe_os_error(exc, f"running ctv {command}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ctv`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # pydicom logs every oddity of every file it probes (vendor files, odd VRs); ours are enough.
    logging.getLogger("pydicom").setLevel(logging.INFO if args.verbose else logging.ERROR)
    previous = _interrupt_on_sigterm()
    try:
        return args.func(args)
    except (CTVError, OSError) as exc:  # OSError: the environment's, where no stage named it more precisely
        print(f"ctv {args.command}: error: {user_message(args.command, exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ctv {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
