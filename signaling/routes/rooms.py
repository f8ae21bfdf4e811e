"""Room signaling: WHEP per listener, a WebSocket per bot, HMAC join tokens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any, Final

from aiohttp import WSMsgType, web

from media_server.rooms.registry import ROOM_NAME, RoomLimitReached, RoomRegistry
from media_server.rooms.room import Room, RoomFull
from media_server.rooms.tokens import Claims, Role, TokenError
from media_server.rtc.peer import OfferError
from media_server.speech.protocol import ProtocolError, parse_client_message
from media_server.speech.talker import Talker
from media_server.tasks import cancel_and_wait
from signaling.access import (
    bearer_token,
    client_address,
    token_digest,
    ws_protocols,
)
from signaling.body import message_refused
from signaling.errors import json_error
from signaling.keys import ROOMS_KEY, SIGNER_KEY
from signaling.routes.whep import (
    RETRY_AFTER_S,
    SDP_TYPE,
    TRICKLE_TYPE,
    apply_trickle,
    check_credential,
    pending_refused,
    read_sdp,
)

logger = logging.getLogger(__name__)

BOT_HEARTBEAT_S: Final = 30.0
BOT_MAX_MESSAGE_BYTES: Final = 64 * 1024

routes = web.RouteTableDef()


def _rooms(request: web.Request) -> RoomRegistry:
    if SIGNER_KEY not in request.app:
        raise json_error(
            503, "rooms_disabled", "rooms need a token secret, and none is configured",
            "start the server with VMS_TOKEN_SECRET set (at least 16 bytes)",
        )  # fmt: skip
    return request.app[ROOMS_KEY]


def _room_name(request: web.Request) -> str:
    name = request.match_info["room"]
    if not ROOM_NAME.fullmatch(name):
        raise json_error(
            400, "invalid_room", f"{name!r} is not a room name",
            "use 1-64 letters, digits, '_' or '-'",
        )  # fmt: skip
    return name


def _join_token(request: web.Request) -> str | None:
    """The join token: a Bearer header or WebSocket subprotocol, else ``?token=``
    (redacted from the access log)."""
    return bearer_token(request) or request.query.get("token") or None


def _claims(request: web.Request, room: str, roles: set[Role]) -> Claims:
    token = _join_token(request)
    try:
        return request.app[SIGNER_KEY].verify(token, room, roles)
    except TokenError as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="rooms"'} if exc.status == 401 else None
        raise json_error(exc.status, exc.error, exc.message, exc.solution, headers) from None


def _room_for_join(registry: RoomRegistry, name: str) -> Room:
    try:
        return registry.get_or_create(name)
    except RoomLimitReached as exc:
        raise json_error(
            503, "too_many_rooms", str(exc), f"retry in {RETRY_AFTER_S} s",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None  # fmt: skip


def _room_full(exc: RoomFull) -> web.HTTPException:
    return json_error(
        503, "room_full", str(exc), "retry later, or raise VMS_MAX_ROOM_PARTICIPANTS",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )  # fmt: skip


@routes.post("/rooms/{room}/whep")
async def join_as_listener(request: web.Request) -> web.Response:
    registry = _rooms(request)
    name = _room_name(request)
    claims = _claims(request, name, {Role.LISTENER, Role.SPEAKER})
    offer = await read_sdp(request)
    client = client_address(request)
    limit = registry.settings.max_pending_sessions_per_client
    if client is not None and limit and registry.unconnected(client) >= limit:
        raise pending_refused(limit)
    room = _room_for_join(registry, name)
    try:
        listener, answer = await room.add_listener(
            claims,
            offer,
            registry.listener_closer(name),
            client=client,
            credential=token_digest(_join_token(request)),
        )
    except RoomFull as exc:
        await registry.close_if_empty(room)
        raise _room_full(exc) from None
    except OfferError as exc:
        await registry.close_if_empty(room)
        raise json_error(400, "invalid_offer", exc.message, exc.solution) from None
    return web.Response(
        status=201,
        text=answer,
        content_type=SDP_TYPE,
        headers={"Location": f"/rooms/{name}/whep/{listener.client_id}"},
    )


def _listener(request: web.Request) -> tuple[RoomRegistry, str, str]:
    registry = _rooms(request)
    name = _room_name(request)
    listener_id = request.match_info["listener_id"]
    room = registry.rooms.get(name)
    if room is None or listener_id not in room.listeners:
        raise json_error(
            404, "session_not_found", f"no such listener in room {name!r}",
            f"the session ended; POST /rooms/{name}/whep to join again",
        )  # fmt: skip
    check_credential(room.listeners[listener_id], _join_token(request))
    return registry, name, listener_id


@routes.patch("/rooms/{room}/whep/{listener_id}")
async def listener_trickle(request: web.Request) -> web.Response:
    registry, name, listener_id = _listener(request)
    fragment = await read_sdp(request, TRICKLE_TYPE)
    await apply_trickle(registry.rooms[name].listeners[listener_id].peer, fragment)
    return web.Response(status=204)


@routes.get("/rooms/{room}/whep/{listener_id}/stats")
async def listener_stats(request: web.Request) -> web.Response:
    registry, name, listener_id = _listener(request)
    return web.json_response(registry.rooms[name].listeners[listener_id].stats())


@routes.delete("/rooms/{room}/whep/{listener_id}")
async def leave_as_listener(request: web.Request) -> web.Response:
    registry, name, listener_id = _listener(request)
    await registry.remove_listener(name, listener_id)
    return web.Response(status=200)


class BotConnection:
    """A bot in a room over a WebSocket: its messages in, the room's events out."""

    def __init__(self, ws: web.WebSocketResponse, claims: Claims, voice: str | None, room: Room):
        self._ws = ws
        self.claims = claims
        self.room = room
        self.talker = Talker(claims.identity, voice, room.settings, room.clock)
        self._outbox: deque[dict[str, Any]] = deque()
        self._ready = asyncio.Event()

    @property
    def identity(self) -> str:
        return self.claims.identity

    def send_event(self, event: dict[str, Any]) -> None:
        self._outbox.append(event)
        self._ready.set()

    async def write_events(self) -> None:
        """The bot's writer task: events leave in the order they happened."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._outbox:
                event = self._outbox.popleft()
                with contextlib.suppress(ConnectionError):  # the bot has gone
                    await self._ws.send_json(event)

    def handle(self, raw: str) -> None:
        try:
            message = parse_client_message(raw, limits=self.talker.limits)
            self.room.handle(message, self.talker, cancel_everyone=False)
        except ProtocolError as exc:
            self.send_event(exc.event())


@routes.get("/rooms/{room}/bot")
async def join_as_bot(request: web.Request) -> web.WebSocketResponse:
    registry = _rooms(request)
    name = _room_name(request)
    claims = _claims(request, name, {Role.BOT})
    voice = request.query.get("voice") or claims.voice
    room = _room_for_join(registry, name)
    ws = web.WebSocketResponse(
        heartbeat=BOT_HEARTBEAT_S,
        max_msg_size=BOT_MAX_MESSAGE_BYTES,
        protocols=ws_protocols(request),
    )
    bot = BotConnection(ws, claims, voice, room)
    bot.send_event(
        {
            "type": "ready",
            "room": name,
            "identity": claims.identity,
            "engine": room.synthesis.engine.name,
            "participants": room.roster(),
        }
    )
    try:
        member_id = room.add_bot(bot)
    except RoomFull as exc:
        await registry.close_if_empty(room)
        raise _room_full(exc) from None
    writer: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        writer = asyncio.get_running_loop().create_task(bot.write_events(), name="bot-writer")
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                refused = message_refused(request, len(msg.data))
                if refused is not None:
                    bot.send_event(refused.event())
                else:
                    bot.handle(msg.data)
            elif msg.type == WSMsgType.BINARY:
                bot.send_event(
                    ProtocolError(
                        "invalid_message", "binary messages are not accepted", "send JSON text"
                    ).event()
                )
    finally:
        room.remove_bot(member_id)
        await cancel_and_wait(writer)
        await registry.close_if_empty(room)
    return ws


def rooms_open(request: web.Request) -> int:
    return len(request.app[ROOMS_KEY].rooms) if SIGNER_KEY in request.app else 0


def rooms_stats(request: web.Request) -> list[dict[str, Any]]:
    if SIGNER_KEY not in request.app:
        return []
    return [room.stats() for room in request.app[ROOMS_KEY].rooms.values()]
