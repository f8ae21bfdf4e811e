"""Room signaling: WHEP per listener, a WebSocket per bot, HMAC join tokens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any, Final

from aiohttp import WSMsgType, web

from media_server import Claims, ListenerSession, Role, Room, RoomFull
from media_server.rooms.registry import ROOM_NAME
from media_server.speech.barge_in import BARGE_IN_TYPE, barge_in_request
from media_server.speech.events import BargeInSet, ErrorEvent, Event, RoomReady
from media_server.speech.protocol import binary_refused, decode_message, parse_client_message
from media_server.speech.talker import Talker
from media_server.tasks import cancel_and_wait
from media_server.telemetry.api import count_refusal
from signaling.access import bearer_token, client_address, token_digest, ws_protocols
from signaling.body import message_refused
from signaling.keys import MEDIA_KEY
from signaling.routes.whep import (
    SDP_TYPE,
    check_credential,
    created_headers,
    endpoint_options,
    patch_ice,
    read_sdp,
    resource_options,
)
from synthesis import ClientError, InvalidRequest

logger = logging.getLogger(__name__)

BOT_HEARTBEAT_S: Final = 30.0
BOT_MAX_MESSAGE_BYTES: Final = 64 * 1024

routes = web.RouteTableDef()


def _room_name(request: web.Request) -> str:
    name = request.match_info["room"]
    if not ROOM_NAME.fullmatch(name):
        raise InvalidRequest(
            "invalid_room", f"{name!r} is not a room name", "use 1-64 letters, digits, '_' or '-'"
        )
    return name


def _join_token(request: web.Request) -> str | None:
    """The join token: a Bearer header or WebSocket subprotocol, else ``?token=``
    (redacted from the access log)."""
    return bearer_token(request) or request.query.get("token") or None


def _claims(request: web.Request, room: str, roles: set[Role]) -> Claims:
    return request.app[MEDIA_KEY].verify_join(_join_token(request), room, roles)


@routes.post("/rooms/{room}/whep")
async def join_as_listener(request: web.Request) -> web.Response:
    name = _room_name(request)
    claims = _claims(request, name, {Role.LISTENER, Role.SPEAKER, Role.CALLER})
    offer = await read_sdp(request)
    listener, answer = await request.app[MEDIA_KEY].join_listener(
        name,
        claims,
        offer,
        client=client_address(request),
        credential=token_digest(_join_token(request)),
    )
    return web.Response(
        status=201,
        text=answer,
        content_type=SDP_TYPE,
        headers=created_headers(f"/rooms/{name}/whep/{listener.client_id}", listener),
    )


@routes.options("/rooms/{room}/whep")
async def room_whep_options(request: web.Request) -> web.Response:
    return endpoint_options()


@routes.options("/rooms/{room}/whep/{listener_id}")
async def listener_options(request: web.Request) -> web.Response:
    return resource_options()


def _listener(request: web.Request) -> ListenerSession:
    name = _room_name(request)
    listener = request.app[MEDIA_KEY].listener(name, request.match_info["listener_id"])
    check_credential(listener, _join_token(request))
    return listener


@routes.patch("/rooms/{room}/whep/{listener_id}")
async def listener_trickle(request: web.Request) -> web.Response:
    return await patch_ice(request, _listener(request))


@routes.get("/rooms/{room}/whep/{listener_id}/stats")
async def listener_stats(request: web.Request) -> web.Response:
    return web.json_response(_listener(request).stats())


@routes.delete("/rooms/{room}/whep/{listener_id}")
async def leave_as_listener(request: web.Request) -> web.Response:
    listener = _listener(request)
    await request.app[MEDIA_KEY].leave(listener.room.name, listener.client_id)
    return web.Response(status=200)


class BotConnection:
    """A bot in a room over a WebSocket: its messages in, the room's events out."""

    def __init__(self, ws: web.WebSocketResponse, claims: Claims, voice: str | None, room: Room):
        self._ws = ws
        self.claims = claims
        self.room = room
        self.talker = Talker(claims.identity, voice, room.settings, room.clock, admit=room.admit)
        self._outbox: deque[str] = deque()
        self._ready = asyncio.Event()

    @property
    def identity(self) -> str:
        return self.claims.identity

    def send_event(self, event: Event) -> None:
        self.send_text(event.to_json())

    def send_text(self, text: str) -> None:
        self._outbox.append(text)
        self._ready.set()

    async def write_events(self) -> None:
        """The bot's writer task: events leave in the order they happened."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._outbox:
                text = self._outbox.popleft()
                with contextlib.suppress(ConnectionError):  # the bot has gone
                    await self._ws.send_str(text)

    def handle(self, raw: str) -> None:
        try:
            data = decode_message(raw)  # parsed again below: messages are small
            if data.get("type") == BARGE_IN_TYPE:
                self.set_barge_in(data)
                return
            message = parse_client_message(raw, limits=self.talker.limits)
            self.room.handle(message, self.talker, cancel_everyone=False)
        except ClientError as exc:
            self.refuse(exc)

    def set_barge_in(self, data: dict[str, Any]) -> None:
        """The room's barge-in, from now on and for everyone in it: the bot decides."""
        barge_in = self.room.barge_in
        policy = barge_in_request(data, barge_in.policy)
        barge_in.configure(policy)
        self.send_event(BargeInSet(policy.mode.value, policy.min_speech_ms))

    def refuse(self, exc: ClientError) -> None:
        """An ``error`` event; counted when it is a refusal (a limit, not a mistake)."""
        count_refusal(self.room.metrics, exc)
        self.send_event(ErrorEvent.of(exc))


@routes.get("/rooms/{room}/bot")
async def join_as_bot(request: web.Request) -> web.WebSocketResponse:
    media = request.app[MEDIA_KEY]
    name = _room_name(request)
    claims = _claims(request, name, {Role.BOT})
    voice = request.query.get("voice") or claims.voice
    room = media.room_for_bot(name)
    ws = web.WebSocketResponse(
        heartbeat=BOT_HEARTBEAT_S,
        max_msg_size=BOT_MAX_MESSAGE_BYTES,
        protocols=ws_protocols(request),
    )
    bot = BotConnection(ws, claims, voice, room)
    bot.send_event(RoomReady(name, claims.identity, room.synthesis.engine.name, room.roster()))
    try:
        member_id = room.add_bot(bot)
    except RoomFull:
        await media.release_room(room)
        raise
    writer: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        writer = asyncio.get_running_loop().create_task(bot.write_events(), name="bot-writer")
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                refused = message_refused(request, len(msg.data))
                if refused is not None:
                    bot.refuse(refused)
                else:
                    bot.handle(msg.data)
            elif msg.type == WSMsgType.BINARY:
                bot.send_event(ErrorEvent.of(binary_refused()))
    finally:
        room.remove_bot(member_id)
        await cancel_and_wait(writer)
        await media.release_room(room)
    return ws
