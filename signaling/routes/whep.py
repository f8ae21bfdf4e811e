"""WHEP: ``POST /whep`` (offer -> 201 + answer), ``PATCH`` trickle or ICE restart, ``DELETE``.

A ``PATCH`` is conditional, as draft-ietf-wish-whep says: ``If-Match`` with the
session's ``ETag`` (from the ``POST`` or the last restart) trickles candidates,
``If-Match: "*"`` with new ICE credentials restarts ICE; no ``If-Match`` is
``428``, a stale one ``412``. Every client of ours sends it.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web

from media_server import VoiceSession
from media_server.rtc.client import PeerClient
from signaling.access import bearer_token, client_address, same_token, token_digest
from signaling.body import read_body
from signaling.errors import PreconditionFailed, PreconditionRequired, UnsupportedMediaType
from signaling.keys import MEDIA_KEY
from synthesis import Forbidden, InvalidRequest, Unauthorized

logger = logging.getLogger(__name__)

SDP_TYPE: Final = "application/sdp"
TRICKLE_TYPE: Final = "application/trickle-ice-sdpfrag"
MAX_SDP_BYTES: Final = 64 * 1024
ANY_ETAG: Final = frozenset({"*", '"*"'})
"""``If-Match: *`` (RFC 9110); ``"*"`` too, as the WHEP draft's prose quotes it and
some clients send it so."""
_IF_MATCH_SOLUTION: Final = (
    "send 'If-Match' with the ETag of the POST's answer (or of the last ICE restart's) "
    "to trickle candidates, or 'If-Match: *' with new a=ice-ufrag/a=ice-pwd to restart ICE"
)

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
        headers=created_headers(f"/whep/{session.session_id}", session),
    )


def created_headers(location: str, client: PeerClient) -> dict[str, str]:
    """The headers of a ``201`` for a new WHEP resource."""
    return {"Location": location, "ETag": client.ice_etag, "Accept-Patch": TRICKLE_TYPE}


def check_if_match(request: web.Request, etag: str) -> None:
    """The precondition of a ``PATCH``: ``If-Match`` with ``"*"`` or ``etag``
    (strong comparison, RFC 9110 section 13.1.1)."""
    header = request.headers.get("If-Match")
    if header is None:
        raise PreconditionRequired(
            "if_match_required", "a PATCH of a WHEP session needs If-Match", _IF_MATCH_SOLUTION
        )
    tags = [tag.strip() for tag in header.split(",")]
    if ANY_ETAG.isdisjoint(tags) and etag not in tags:
        raise PreconditionFailed(
            "stale_etag",
            f"If-Match {header[:100]!r} is not the session's current ETag {etag}: "
            "its ICE was restarted meanwhile, or the tag is not this session's",
            _IF_MATCH_SOLUTION,
        )


async def patch_ice(request: web.Request, client: PeerClient) -> web.Response:
    """Trickle (``204``) or, for a fragment with new ICE credentials, restart ICE
    (``200``, the server's new credentials and candidates, and a new ``ETag``)."""
    fragment = await read_sdp(request, TRICKLE_TYPE)
    check_if_match(request, client.ice_etag)
    if not client.is_ice_restart(fragment):
        await client.add_trickle(fragment)
        return web.Response(status=204, headers={"ETag": client.ice_etag})
    answer = await client.restart_ice(fragment)
    return web.Response(
        status=200, text=answer, content_type=TRICKLE_TYPE, headers={"ETag": client.ice_etag}
    )


def endpoint_options() -> web.Response:
    """``OPTIONS`` on a WHEP endpoint (``/whep``, a room's): what it takes."""
    return web.Response(status=204, headers={"Accept-Post": SDP_TYPE, "Allow": "OPTIONS, POST"})


def resource_options() -> web.Response:
    """``OPTIONS`` on a session's WHEP resource: the ``PATCH`` bodies it takes."""
    return web.Response(
        status=204, headers={"Accept-Patch": TRICKLE_TYPE, "Allow": "OPTIONS, PATCH, DELETE"}
    )


@routes.options("/whep")
async def whep_options(request: web.Request) -> web.Response:
    return endpoint_options()


@routes.options("/whep/{session_id}")
async def session_options(request: web.Request) -> web.Response:
    return resource_options()


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
    return await patch_ice(request, _session(request))


@routes.delete("/whep/{session_id}")
async def delete_session(request: web.Request) -> web.Response:
    session = _session(request)
    await request.app[MEDIA_KEY].close_session(session.session_id)
    return web.Response(status=200)


@routes.get("/whep/{session_id}/stats")
async def session_stats(request: web.Request) -> web.Response:
    return web.json_response(_session(request).stats())
