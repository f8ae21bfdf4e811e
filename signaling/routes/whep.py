"""WHEP: ``POST /whep`` (offer -> 201 + answer), ``PATCH`` trickle, ``DELETE``."""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web

from media_server import VoiceSession
from media_server.rtc.client import PeerClient
from signaling.access import bearer_token, client_address, same_token, token_digest
from signaling.body import read_body
from signaling.errors import UnsupportedMediaType
from signaling.keys import MEDIA_KEY
from synthesis import Forbidden, InvalidRequest, Unauthorized

logger = logging.getLogger(__name__)

SDP_TYPE: Final = "application/sdp"
TRICKLE_TYPE: Final = "application/trickle-ice-sdpfrag"
MAX_SDP_BYTES: Final = 64 * 1024

routes = web.RouteTableDef()


async def read_sdp(request: web.Request, content_type: str = SDP_TYPE) -> str:
    """The body as text, after checking its type and size (offers and trickle fragments)."""
    if request.content_type != content_type:
        raise UnsupportedMediaType(
            None,
            f"expected Content-Type {content_type}, got {request.content_type or 'none'}",
            f"send the body with 'Content-Type: {content_type}'",
        )
    raw = await read_body(request, MAX_SDP_BYTES, "send an ordinary SDP offer")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise InvalidRequest("invalid_sdp", "the body is not UTF-8 text", "send SDP text") from None


@routes.post("/whep")
async def create_session(request: web.Request) -> web.Response:
    offer = await read_sdp(request)
    session, answer = await request.app[MEDIA_KEY].create_session(
        offer,
        request.query.get("voice") or None,
        client=client_address(request),
        credential=token_digest(bearer_token(request)),
    )
    return web.Response(
        status=201,
        text=answer,
        content_type=SDP_TYPE,
        headers={"Location": f"/whep/{session.session_id}"},
    )


def check_credential(client: PeerClient, token: str | None) -> None:
    """A WHEP resource is changed or ended only with the token that created it."""
    if same_token(token, client.credential):
        return
    message = "this session was created with a token; the same token is needed to change it"
    solution = "send the 'Authorization: Bearer' header the session was created with"
    if token:
        raise Forbidden("wrong_token", message, solution)
    raise Unauthorized("token_required", message, solution)


def _session(request: web.Request) -> VoiceSession:
    session = request.app[MEDIA_KEY].session(request.match_info["session_id"])
    check_credential(session, bearer_token(request))
    return session


@routes.patch("/whep/{session_id}")
async def trickle(request: web.Request) -> web.Response:
    session = _session(request)
    await session.add_trickle(await read_sdp(request, TRICKLE_TYPE))
    return web.Response(status=204)


@routes.delete("/whep/{session_id}")
async def delete_session(request: web.Request) -> web.Response:
    session = _session(request)
    await request.app[MEDIA_KEY].close_session(session.session_id)
    return web.Response(status=200)


@routes.get("/whep/{session_id}/stats")
async def session_stats(request: web.Request) -> web.Response:
    return web.json_response(_session(request).stats())
