"""Who may talk to the station, and from where: the access token, this machine's names, the station's own pages.

The middleware runs before every handler of the station's web application: the page, its
scripts, its websocket and the API. In order:

* A station on a loopback address refuses requests whose ``Host`` names another machine: a web
  page elsewhere cannot reach it through a DNS name rebound to 127.0.0.1.
* A request that changes something (any method but GET, HEAD and OPTIONS) or opens a websocket is
  refused when it comes from another site: ``Sec-Fetch-Site`` other than ``same-origin`` or
  ``none``, or an ``Origin`` that is not the station's own (scheme, host and port of the address
  the request was sent to). This holds with and without a token: a page on another site (or on
  another port of this machine, which a browser counts as the same site for cookies) can neither
  upload, approve or cancel nor read the page's state through its websocket. Scripts that send no
  ``Origin`` (curl, the tests) are not browsers and pass this check.
* With tokens configured, a request passes only with one of them, from an ``Authorization:
  Bearer`` header, a ``token`` query parameter or the station's cookie; a page opened with
  ``?token=`` sets that cookie (HttpOnly, SameSite=Strict) so that its scripts, its websocket and
  its downloads carry it.

Every request that passes carries its **identity** (:func:`identity`): the name of the token it
carried (``--token-file`` may name them, ``alice:TOKEN``), or "the station token", or, on a
loopback station without a token, "a user of this computer", with the address it came from. The
audit log records that identity for what is done, never a name from the request body. The
identities of the pages connected now (their websockets) are kept for what is done on the page.

Every response forbids framing the station in another site's page (clickjacking), embedding its
files elsewhere, and sending its addresses in a Referer. Refusals are JSON for the API and one line
of text elsewhere; nothing says whether a token was close.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections import Counter
from collections.abc import Mapping
from urllib.parse import urlsplit

from aiohttp import web

from .config import is_loopback

logger = logging.getLogger(__name__)

COOKIE = "ctv_review_token"
#: Names a browser on this machine uses for a loopback station.
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
#: The request's identity, under this key of the aiohttp request.
IDENTITY = "ctv_identity"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: Headers every response carries (those a handler set itself are kept).
SECURITY_HEADERS = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
                    "Cross-Origin-Resource-Policy": "same-origin", "Referrer-Policy": "no-referrer",
                    "X-Content-Type-Options": "nosniff"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def refusal(request: web.Request, status: int, message: str) -> web.Response:
    """An error response: JSON ``{"message", "status"}`` for the API, plain text for anything else."""
    if request.path.startswith("/api/"):
        return web.json_response({"message": message, "status": status}, status=status)
    return web.Response(status=status, text=message + "\n")


def identity(request: web.Request) -> str:
    """Who made a request that passed the middleware (see the module docstring)."""
    return request.get(IDENTITY, f"an unchecked request from {request.remote}")


class PageUsers:
    """The identities of the pages connected now (one entry per open websocket)."""

    def __init__(self) -> None:
        self._connected: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, who: str) -> None:
        with self._lock:
            self._connected[who] += 1

    def remove(self, who: str) -> None:
        with self._lock:
            self._connected[who] -= 1
            if self._connected[who] <= 0:
                del self._connected[who]

    def describe(self) -> str:
        """Who is connected, for the audit log ("nobody" when no page is)."""
        with self._lock:
            return ", ".join(sorted(self._connected)) or "nobody connected"


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _host_and_port(host: str, scheme: str) -> tuple[str, int | None]:
    """``Host`` header -> (lower-case name, port); the scheme's default port when it names none."""
    name = _host_name(host).lower()
    rest = host[len(name):]
    try:
        return name, int(rest[1:]) if rest.startswith(":") else _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return name, None


def foreign_origin(request: web.Request) -> str | None:
    """Why a request comes from another site than the station's own pages; None when it does not (or says
    nothing, as scripts do)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return f"Sec-Fetch-Site: {site[:40]}"
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    parts = urlsplit(origin.strip())
    try:
        offered = ((parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(parts.scheme))
    except ValueError:
        return f"Origin {origin[:80]!r}"
    if parts.scheme not in _DEFAULT_PORTS or offered != _host_and_port(request.headers.get("Host", ""),
                                                                        parts.scheme):
        return f"Origin {origin[:80]!r}"
    return None


def access_middleware(tokens: Mapping[str, str] | None, bound_host: str, pages: PageUsers | None = None):
    """The aiohttp middleware enforcing the module docstring's checks.

    ``tokens``: token -> the name the audit log gives its holder (None or empty: no token).
    """
    local_only = is_loopback(bound_host)
    expected = {token.encode(): name for token, name in (tokens or {}).items()}

    @web.middleware
    async def check_access(request: web.Request, handler):
        if local_only and _host_name(request.headers.get("Host", "")).lower() not in LOCAL_NAMES:
            return refusal(request, 403, "This station answers only to this computer's own address "
                                         "(http://127.0.0.1:PORT/).")
        websocket = request.headers.get("Upgrade", "").lower() == "websocket"
        if websocket or request.method not in SAFE_METHODS:
            why = foreign_origin(request)
            if why is not None:
                logger.warning("refused %s %s from %s: from another site (%s)", request.method, request.path,
                               request.remote, why)
                return refusal(request, 403, "Refused: this request comes from another web site; the station takes "
                                             "changes and connections only from its own pages.")
        name = _token_name(request, expected) if expected else "a user of this computer (no token)"
        if name is None:
            logger.warning("refused %s %s from %s: no valid access token", request.method, request.path,
                           request.remote)
            return refusal(request, 401, "An access token is required: open the address ctv review printed "
                                         "(with ?token=...), or send 'Authorization: Bearer TOKEN'.")
        request[IDENTITY] = f"{name} at {request.remote}"
        if websocket and pages is not None:
            pages.add(request[IDENTITY])
            try:
                return await handler(request)
            finally:
                pages.remove(request[IDENTITY])
        response = await handler(request)
        token = request.query.get("token")
        if token and token.encode() in expected and not request.path.startswith("/api/"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    return check_access


def _token_name(request: web.Request, expected: dict[bytes, str]) -> str | None:
    """The name of the token the request carries, or None when it carries none of them."""
    header = request.headers.get("Authorization", "")
    offered = [header[7:].strip()] if header.startswith("Bearer ") else []
    offered += [request.query.get("token", ""), request.cookies.get(COOKIE, "")]
    for value in offered:
        for token, name in expected.items():
            if value and hmac.compare_digest(value.encode(), token):
                return name
    return None


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` signal handler: :data:`SECURITY_HEADERS` on every response."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
