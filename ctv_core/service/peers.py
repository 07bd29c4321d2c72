"""Who the DICOM node talks to: destinations (``AE@HOST:PORT``) and peers allowed to send (``AE@HOST``)."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from ..errors import PeerError

#: DICOM AE titles: 1-16 characters of the default repertoire, no backslash, not only spaces.
_AE_TITLE = re.compile(r"[ -\[\]-~]{1,16}")


def check_ae_title(title: str, what: str) -> str:
    """``title`` stripped, or ``PeerError`` when it cannot be a DICOM AE title."""
    stripped = title.strip()
    if not stripped or not _AE_TITLE.fullmatch(title):
        raise PeerError(f"{what} '{title}' is not a DICOM AE title (1 to 16 printable characters, no backslash).")
    return stripped


@dataclass(frozen=True)
class Destination:
    """A Storage SCP results are sent to."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``AE@HOST:PORT`` (e.g. ``TPS@10.0.0.5:104``)."""
        match = re.fullmatch(r"(.+)@(.+):(\d{1,5})", text.strip())
        if not match or not 0 < int(match.group(3)) < 65536:
            raise PeerError(f"--send-to '{text}' is not AE@HOST:PORT (e.g. TPS@10.0.0.5:104).")
        return cls(check_ae_title(match.group(1), "The destination AE title"), match.group(2), int(match.group(3)))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class AllowedPeer:
    """A calling AE title that may send, from one host (``*``: any host)."""

    ae_title: str
    host: str = "*"

    @classmethod
    def parse(cls, text: str) -> AllowedPeer:
        """``AE@HOST`` or ``AE`` (any host)."""
        title, _, host = text.strip().partition("@")
        return cls(check_ae_title(title, "The allowed AE title"), host.strip() or "*")

    def admits(self, ae_title: str, address: str) -> bool:
        """True when a peer calling as ``ae_title`` from ``address`` is this one."""
        if ae_title.strip() != self.ae_title:
            return False
        return self.host == "*" or _same_host(self.host, address)


def _same_host(name: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in {ipaddress.ip_address(a) for a in _addresses(name)}
    except ValueError:
        return False


def _addresses(name: str) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(name, None)}
    except OSError:
        return {name}


def admitted(allowed: tuple[AllowedPeer, ...], ae_title: str, address: str) -> bool:
    """True when no allow list is set, or a peer of it admits the caller."""
    return not allowed or any(peer.admits(ae_title, address) for peer in allowed)
