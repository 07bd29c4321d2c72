"""Who may talk to the station: the access token on every request, and, on loopback, this machine's names only.

The middleware runs before every handler of the station's web application: the page, its
scripts, its websocket and the API. With a token configured, a request passes only with it, from
an ``Authorization: Bearer`` header, a ``token`` query parameter or the station's cookie; a page
opened with ``?token=`` sets that cookie (HttpOnly, SameSite=Strict) so that its scripts, its
websocket and its downloads carry it. A station on a loopback address also refuses requests
whose ``Host`` names another machine: a web page elsewhere cannot reach it through a DNS name
rebound to 127.0.0.1. Refusals are JSON for the API and one line of text elsewhere; nothing says
whether a token was close.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from .config import is_loopback

logger = logging.getLogger(__name__)

COOKIE = "ctv_review_token"
#: Names a browser on this machine uses for a loopback station.
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def refusal(request: web.Request, status: int, message: str) -> web.Response:
    """An error response: JSON ``{"message", "status"}`` for the API, plain text for anything else."""
    if request.path.startswith("/api/"):
        return web.json_response({"message": message, "status": status}, status=status)
    return web.Response(status=status, text=message + "\n")


def _host_name(request: web.Request) -> str:
    host = request.headers.get("Host", "")
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def access_middleware(token: str | None, bound_host: str):
    """The aiohttp middleware enforcing the token (when given) and, on loopback, local host names."""
    local_only = is_loopback(bound_host)
    expected = token.encode() if token else None

    @web.middleware
    async def check_access(request: web.Request, handler):
        if local_only and _host_name(request).lower() not in LOCAL_NAMES:
            return refusal(request, 403, "This station answers only to this computer's own address "
                                         "(http://127.0.0.1:PORT/).")
        if expected is None:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        offered = [header[7:].strip()] if header.startswith("Bearer ") else []
        offered += [request.query.get("token", ""), request.cookies.get(COOKIE, "")]
        if not any(value and hmac.compare_digest(value.encode(), expected) for value in offered):
            logger.warning("refused %s %s from %s: no valid access token", request.method, request.path,
                           request.remote)
            return refusal(request, 401, "An access token is required: open the address ctv review printed "
                                         "(with ?token=...), or send 'Authorization: Bearer TOKEN'.")
        response = await handler(request)
        if request.query.get("token") and not request.path.startswith("/api/"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    return check_access
