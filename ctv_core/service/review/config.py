"""How the review station runs (``ctv review`` options) and who may connect to it.

The station listens on 127.0.0.1 unless told otherwise. On any other address it refuses to start
without an access token: ``ctv review`` then generates one and prints it with the address. A
token is checked on every request (page, its assets, its websocket, the API), from an
``Authorization: Bearer`` header, a ``token`` query parameter or the station's cookie, which a
page opened with the token receives (:mod:`.access`). Several tokens may be given, each with the
name the audit log records for its holder (``--token-file`` lines ``NAME:TOKEN``).
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import CTVError
from .uploads import UploadLimits

#: Shortest token accepted (characters): a guessable token is no access control.
MIN_TOKEN_LENGTH = 16
#: What the audit log calls the holder of an unnamed token.
UNNAMED_TOKEN = "the station token"
DEVICES = ("auto", "cpu", "cuda")
ENGINES = ("auto", "openvino", "torch")


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, "localhost")."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def new_token() -> str:
    """A fresh access token (URL-safe, 32 characters)."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class StationConfig:
    """The station's settings.

    Attributes
    ----------
    data
        The case store's folder (shared with a DICOM node given the same ``--data``).
    host, port
        Where the page and the API listen (port 0: any free port).
    models
        Model packages: the first runs every upload (None: the bundled model); all are offered for
        re-runs.
    device
        auto, cpu or cuda for the predictions.
    engine
        auto, openvino or torch: what runs the network (``ctv predict --engine``).
    token
        The access token (None: no token; refused on a non-loopback host); the one in :attr:`url`.
    users
        Named tokens, (name, token) pairs, beside or instead of ``token``: the audit log records the
        name of the token a request carried.
    limits
        Upload limits.
    workers
        Predictions run at once.
    """

    data: Path = Path("review_data")
    host: str = "127.0.0.1"
    port: int = 8080
    models: tuple[Path | None, ...] = (None,)
    device: str = "auto"
    engine: str = "auto"
    token: str | None = None
    users: tuple[tuple[str, str], ...] = ()
    limits: UploadLimits = field(default_factory=UploadLimits)
    workers: int = 1
    poll_s: float = 0.5

    def __post_init__(self) -> None:
        for value in [self.token] + [token for _, token in self.users]:
            if value is not None and len(value) < MIN_TOKEN_LENGTH:
                raise CTVError(f"An access token is {len(value)} characters long; use at least {MIN_TOKEN_LENGTH} "
                               "random characters (or leave --token out on a non-loopback address to get one "
                               "generated).")
        for name, _ in self.users:
            if not name or len(name) > 64 or not name.isprintable():
                raise CTVError(f"The token name {name[:70]!r} is not a name: 1 to 64 printable characters.")
        if self.token is None and not is_loopback(self.host):
            raise CTVError(f"The station would listen on {self.host}, which other computers can reach, without an "
                           "access token. Give one with --token (or --token-file), or let ctv review generate one.")
        if not 0 <= self.port <= 65535:
            raise CTVError(f"--port {self.port} is not a TCP port (0-65535).")
        if self.device not in DEVICES:
            raise CTVError(f"--device {self.device} is not one of {', '.join(DEVICES)}.")
        if self.engine not in ENGINES:
            raise CTVError(f"--engine {self.engine} is not one of {', '.join(ENGINES)}.")
        if self.workers < 1:
            raise CTVError(f"--workers {self.workers}: at least 1 prediction must be able to run.")
        if not self.models:
            raise CTVError("The station needs a model (none given: the bundled one).")

    @property
    def tokens(self) -> dict[str, str]:
        """Every token -> the name the audit log gives its holder (empty: no token)."""
        named = {token: name for name, token in self.users}
        return {**({self.token: UNNAMED_TOKEN} if self.token else {}), **named}

    @property
    def url(self) -> str:
        """The page's address, with the token when there is one."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")
