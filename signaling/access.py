"""Who may do what: the operator token, client addresses, CORS and WebSocket origins.

The operator token (``VMS_API_TOKEN``) guards everything that costs the server work
or reveals other clients: starting 1:1 sessions, HTTP and WebSocket synthesis,
registering voices, the detail of ``/stats``. Browsers cannot set headers on a
WebSocket, so there it may travel as a subprotocol (``vms.token.<token>``), which
(unlike ``?token=``) never reaches an access log. See ``docs/security.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Iterable
from typing import Final

from aiohttp import hdrs, web

from media_server.config import Settings
from signaling.keys import SETTINGS_KEY
from synthesis import Forbidden, Unauthorized

logger = logging.getLogger(__name__)

WS_PROTOCOL: Final = "vms"
"""The subprotocol the server answers with when the client offered a token in one."""
WS_TOKEN_PREFIX: Final = "vms.token."
LOOPBACK_NAMES: Final = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def is_loopback_host(host: str) -> bool:
    """True when listening on ``host`` reaches no other machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_error(settings: Settings) -> str | None:
    """Why these settings must not start, or None.

    Without an operator token anyone who can reach the port can start sessions
    and synthesis; that is only safe on a loopback address, or when the operator
    says so (``VMS_ALLOW_ANONYMOUS=1``, e.g. behind an authenticating proxy).
    """
    if settings.api_token is not None or settings.allow_anonymous:
        return None
    if is_loopback_host(settings.host):
        return None
    return (
        f"refusing to serve anonymous clients on {settings.host}: set VMS_API_TOKEN "
        "(--api-token) so clients must authenticate, listen on 127.0.0.1, or set "
        "VMS_ALLOW_ANONYMOUS=1 if something in front of this server authenticates them"
    )


def _ws_protocols(request: web.Request) -> list[str]:
    raw = request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def bearer_token(request: web.Request) -> str | None:
    """The token of ``Authorization: Bearer``, or of a ``vms.token.`` WebSocket subprotocol."""
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    for protocol in _ws_protocols(request):
        if protocol.startswith(WS_TOKEN_PREFIX):
            return protocol[len(WS_TOKEN_PREFIX) :] or None
    return None


def token_digest(token: str | None) -> bytes | None:
    """What a resource remembers of the token that created it (never the token)."""
    return None if token is None else hashlib.sha256(token.encode()).digest()


def same_token(token: str | None, digest: bytes | None) -> bool:
    """``token`` is the one a resource was created with (or it was created with none)."""
    if digest is None:
        return True
    presented = token_digest(token)
    return presented is not None and hmac.compare_digest(presented, digest)


def is_operator(request: web.Request) -> bool:
    expected = request.app[SETTINGS_KEY].api_token
    token = bearer_token(request)
    return (
        expected is not None
        and token is not None
        and hmac.compare_digest(token.encode(), expected.encode())
    )


def require_operator(request: web.Request) -> None:
    """401 unless the server has no operator token or the request carries it."""
    if request.app[SETTINGS_KEY].api_token is None or is_operator(request):
        return
    presented = bearer_token(request) is not None
    raise Unauthorized(
        "invalid_token" if presented else "token_required",
        "the operator token does not match"
        if presented
        else "this endpoint needs the operator token",
        "send 'Authorization: Bearer <VMS_API_TOKEN>' (WebSockets from a browser: the "
        "subprotocol 'vms.token.<token>'; see docs/security.md)",
    )


def client_address(request: web.Request) -> str | None:
    """The address per-client bounds are counted against; None for the operator.

    It is the TCP peer: behind a reverse proxy every client shares the proxy's
    address, so raise the bounds or give the proxy the operator token.
    """
    if is_operator(request):
        return None
    return request.remote or "unknown"


def allowed_origin(origin: str, allowed: Iterable[str]) -> bool:
    allowed = tuple(allowed)
    return "*" in allowed or origin.rstrip("/") in {a.rstrip("/") for a in allowed}


def same_origin(request: web.Request, origin: str) -> bool:
    """``Origin`` names this server (the bundled page's own requests)."""
    host = request.headers.get(hdrs.HOST)
    if host is None:
        return False
    return origin.rstrip("/") in {f"http://{host}", f"https://{host}"}


def check_ws_origin(request: web.Request) -> None:
    """403 for a WebSocket upgrade from a page on an origin not allowed.

    Browsers send cookies and reach loopback from any page, so a foreign page
    must not open a socket here; programs send no ``Origin`` and are not affected.
    """
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or same_origin(request, origin):
        return
    if allowed_origin(origin, request.app[SETTINGS_KEY].cors_origins):
        return
    raise Forbidden(
        "origin_not_allowed",
        f"WebSocket connections from {origin} are not allowed",
        "add the page's origin to VMS_CORS_ORIGINS, or serve the page from this server",
    )


def ws_protocols(request: web.Request) -> tuple[str, ...]:
    """Subprotocols to accept: ``vms`` when the client offered its token in one.

    A browser fails the handshake unless the server picks one of the offered
    subprotocols, so a client sending ``['vms', 'vms.token.<t>']`` gets ``vms``.
    """
    return (WS_PROTOCOL,) if WS_PROTOCOL in _ws_protocols(request) else ()
