"""WHEP: ``POST /whep`` (offer -> 201 + answer), ``PATCH`` trickle, ``DELETE``."""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web

from media_server.rtc.client import PeerClient
from media_server.rtc.peer import IceRestartUnsupported, OfferError, PeerSession, TooManyCandidates
from media_server.sessions.registry import ClientSessionLimit, SessionLimitReached
from media_server.sessions.session import VoiceSession
from signaling.access import (
    bearer_token,
    client_address,
    same_token,
    token_digest,
)
from signaling.body import read_body
from signaling.errors import json_error
from signaling.keys import ENGINE_KEY, REGISTRY_KEY

logger = logging.getLogger(__name__)

SDP_TYPE: Final = "application/sdp"
TRICKLE_TYPE: Final = "application/trickle-ice-sdpfrag"
MAX_SDP_BYTES: Final = 64 * 1024
RETRY_AFTER_S: Final = 5

routes = web.RouteTableDef()


async def read_sdp(request: web.Request, content_type: str = SDP_TYPE) -> str:
    """The body as text, after checking its type and size (offers and trickle fragments)."""
    if request.content_type != content_type:
        raise json_error(
            415,
            "unsupported_media_type",
            f"expected Content-Type {content_type}, got {request.content_type or 'none'}",
            f"send the body with 'Content-Type: {content_type}'",
        )
    raw = await read_body(request, MAX_SDP_BYTES, "send an ordinary SDP offer")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise json_error(
            400, "invalid_sdp", "the body is not UTF-8 text", "send SDP text"
        ) from None


@routes.post("/whep")
async def create_session(request: web.Request) -> web.Response:
    offer = await read_sdp(request)
    registry = request.app[REGISTRY_KEY]
    voice = request.query.get("voice") or None
    if voice is not None:
        voices = {v.voice_id for v in request.app[ENGINE_KEY].voices}
        if voice not in voices:
            raise json_error(
                400,
                "unknown_voice",
                f"voice {voice!r} does not exist",
                f"use one of: {', '.join(sorted(voices))}, or omit ?voice=",
            )
    try:
        session, answer = await registry.create(
            offer,
            voice_id=voice,
            client=client_address(request),
            credential=token_digest(bearer_token(request)),
        )
    except ClientSessionLimit as exc:
        raise pending_refused(exc.limit) from None
    except SessionLimitReached as exc:
        raise json_error(
            503,
            "too_many_sessions",
            str(exc),
            f"retry in {RETRY_AFTER_S} s, or raise VMS_MAX_SESSIONS",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None
    except OfferError as exc:
        raise json_error(400, "invalid_offer", exc.message, exc.solution) from None
    location = f"/whep/{session.session_id}"
    return web.Response(
        status=201,
        text=answer,
        content_type=SDP_TYPE,
        headers={"Location": location},
    )


def pending_refused(limit: int) -> web.HTTPException:
    return json_error(
        429,
        "too_many_pending_sessions",
        f"this client already has {limit} sessions that have not connected",
        "complete ICE on (or DELETE) the sessions you started before starting more; the "
        "operator can raise VMS_MAX_PENDING_SESSIONS_PER_CLIENT",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def check_credential(client: PeerClient, token: str | None) -> None:
    """A WHEP resource is changed or ended only with the token that created it."""
    if same_token(token, client.credential):
        return
    raise json_error(
        403 if token else 401,
        "wrong_token" if token else "token_required",
        "this session was created with a token; the same token is needed to change it",
        "send the 'Authorization: Bearer' header the session was created with",
        headers={"WWW-Authenticate": 'Bearer realm="voice-media-server"'},
    )


def _session(request: web.Request) -> VoiceSession:
    session_id = request.match_info["session_id"]
    session = request.app[REGISTRY_KEY].get(session_id)
    if session is None:
        raise json_error(
            404,
            "session_not_found",
            "no such session",
            "the session ended or never existed; POST /whep to start a new one",
        )
    check_credential(session, bearer_token(request))
    return session


@routes.patch("/whep/{session_id}")
async def trickle(request: web.Request) -> web.Response:
    session = _session(request)
    fragment = await read_sdp(request, TRICKLE_TYPE)
    await apply_trickle(session.peer, fragment)
    return web.Response(status=204)


async def apply_trickle(peer: PeerSession, fragment: str) -> None:
    """Add a trickle fragment's candidates; a refused fragment changes nothing and the
    session stays up."""
    try:
        await peer.add_trickle(fragment)
    except IceRestartUnsupported as exc:
        raise json_error(405, "ice_restart_unsupported", exc.message, exc.solution) from None
    except TooManyCandidates as exc:
        raise json_error(400, "too_many_candidates", exc.message, exc.solution) from None
    except OfferError as exc:
        raise json_error(400, "invalid_candidate", exc.message, exc.solution) from None


@routes.delete("/whep/{session_id}")
async def delete_session(request: web.Request) -> web.Response:
    session = _session(request)
    await request.app[REGISTRY_KEY].close(session.session_id)
    return web.Response(status=200)


@routes.get("/whep/{session_id}/stats")
async def session_stats(request: web.Request) -> web.Response:
    session = _session(request)
    return web.json_response(session.stats())
