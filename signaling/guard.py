"""The access rules every request passes before its handler (``docs/security.md``)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import hdrs, web

from signaling.access import check_ws_origin, client_address, require_operator
from signaling.keys import QUOTAS_KEY
from signaling.quotas import Quota

OPERATOR_ROUTES: Final = frozenset(
    {
        ("POST", "/whep"),
        ("POST", "/tts"),
        ("GET", "/tts/ws"),
        ("POST", "/voices"),
        ("POST", "/stats/window"),
        ("GET", "/metrics"),
    }
)
"""What costs the server work for a client it cannot tell apart from any other: the
operator token guards these. Session resources are guarded by the token that made
them; rooms by their join tokens."""


def _is_upgrade(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


@web.middleware
async def access_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The operator token where it is needed; WebSockets: their origin, and at most
    ``max_sockets_per_client`` open from one address for as long as they last."""
    resource = request.match_info.route.resource
    if resource is not None and (request.method, resource.canonical) in OPERATOR_ROUTES:
        require_operator(request)
    if not _is_upgrade(request):
        return await handler(request)
    check_ws_origin(request)
    with contextlib.ExitStack() as held:
        held.enter_context(request.app[QUOTAS_KEY].hold(Quota.SOCKETS, client_address(request)))
        return await handler(request)
