"""RoomBot: a bot in a voice-media-server room, over one WebSocket. No WebRTC needed."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterable, AsyncIterator
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from voice_bot.hearing import Heard, Hearing

logger = logging.getLogger(__name__)

Event = dict[str, Any]


class BotError(Exception):
    """The server refused something (an ``error`` event) or the connection failed."""

    def __init__(self, event: Event) -> None:
        super().__init__(f"{event.get('error')}: {event.get('message')} ({event.get('solution')})")
        self.event = event


class RoomBot:
    """Speak into a room as a bot.

    ``async with RoomBot(url, room, token) as bot:`` connects and waits for the
    server's ``ready``. :meth:`say` queues a whole text; :meth:`stream` sends an
    LLM's text as it is generated (``text.delta`` … ``text.done``); :meth:`cancel`
    stops this bot's speech (barge-in). Every event the room sends
    (``speech.started`` / ``speech.done`` / ``speech.cancelled``,
    ``participant.joined`` / ``participant.left``, ``error``) arrives through
    :meth:`events` or :meth:`wait_for`.

    With ``listen=True`` (or :meth:`listen`) the bot also hears the room's callers:
    :meth:`caller_audio` yields their 20 ms frames of 16 kHz PCM and their voice
    activity (the ``input.*`` events go there, not to :meth:`events`).
    """

    def __init__(
        self,
        base_url: str,
        room: str,
        token: str,
        *,
        voice: str | None = None,
        session: aiohttp.ClientSession | None = None,
        listen: bool = False,
    ) -> None:
        self._url = f"{base_url.rstrip('/')}/rooms/{quote(room, safe='')}/bot"
        self._params = {"voice": voice} if voice else {}
        # In a header, not ?token=: URLs end up in logs.
        self._headers = {"Authorization": f"Bearer {token}"}
        self._own_session = session is None
        self._session = session
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._listen = listen
        self._hearing = Hearing()
        self.ready: Event = {}

    async def __aenter__(self) -> RoomBot:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> Event:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(
                self._url, params=self._params, headers=self._headers
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise BotError(
                {
                    "error": f"http_{exc.status}",
                    "message": exc.message,
                    "solution": "check the token",
                }
            ) from exc
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="room-bot-reader")
        self.ready = await self.wait_for("ready")
        if self._listen:
            await self.listen()
        return self.ready

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    event = msg.json()
                    if str(event.get("type", "")).startswith("input."):
                        self._hearing.event(event)
                    else:
                        self._events.put_nowait(event)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self._hearing.frame(msg.data)
        finally:
            self._events.put_nowait(None)  # the connection ended
            self._hearing.close()

    async def events(self) -> AsyncIterator[Event]:
        """Every event from the room, until the connection closes."""
        while (event := await self._events.get()) is not None:
            yield event

    async def wait_for(
        self, kind: str, utterance_id: str | None = None, wait_s: float = 30.0
    ) -> Event:
        """The next event of ``kind`` (for ``utterance_id``); an ``error`` for it raises."""
        async with asyncio.timeout(wait_s):
            while (event := await self._events.get()) is not None:
                if event.get("type") == "error" and event.get("id") in (None, utterance_id):
                    raise BotError(event)
                if event.get("type") == kind and utterance_id in (None, event.get("id")):
                    return event
        raise BotError({"error": "closed", "message": "the connection closed", "solution": ""})

    async def listen(self, audio: bool = True, wait_s: float = 10.0) -> None:
        """Turn hearing the callers on (or off); returns once the server confirms."""
        self._hearing.answered.clear()
        await self._send({"type": "input.listen", "audio": audio})
        try:
            async with asyncio.timeout(wait_s):
                await self._hearing.answered.wait()
        except TimeoutError:
            raise BotError(
                {
                    "error": "no_answer",
                    "message": f"the server did not confirm input.listen within {wait_s:g} s",
                    "solution": "check for an error event; does the server support listening?",
                }
            ) from None

    async def caller_audio(self) -> AsyncIterator[Heard]:
        """What the bot hears, in order, until the connection closes:
        :class:`~voice_bot.hearing.CallerAudio` frames,
        :class:`~voice_bot.hearing.CallerSpeechStarted` / ``CallerSpeechStopped``, and
        :class:`~voice_bot.hearing.CallerAudioDropped` when audio was lost to slow reading."""
        while (item := await self._hearing.get()) is not None:
            yield item

    @property
    def identities(self) -> dict[str, str]:
        """Participant id → identity, for every caller heard so far."""
        return dict(self._hearing.identities)

    async def _send(self, message: Event) -> None:
        if self._ws is None or self._ws.closed:
            raise BotError({"error": "closed", "message": "not connected", "solution": "connect"})
        await self._ws.send_json(message)

    def _new_id(self, utterance_id: str | None) -> str:
        return utterance_id or f"b{next(self._ids)}"

    async def say(self, text: str, utterance_id: str | None = None, **fields: Any) -> str:
        """Queue ``text`` (plus any request field: ``speed``, ``speaker_id``...); returns its id."""
        utterance_id = self._new_id(utterance_id)
        await self._send({"type": "say", "text": text, "id": utterance_id, **fields})
        return utterance_id

    async def stream(self, chunks: AsyncIterable[str], utterance_id: str | None = None) -> str:
        """Send text as it is generated; speech starts at the first complete clause."""
        utterance_id = self._new_id(utterance_id)
        async for chunk in chunks:
            await self._send({"type": "text.delta", "text": chunk, "id": utterance_id})
        await self._send({"type": "text.done", "id": utterance_id})
        return utterance_id

    async def cancel(self) -> None:
        """Stop this bot's speech now and drop what it has queued."""
        await self._send({"type": "cancel"})

    async def barge_in(self, mode: str | None = None, min_speech_ms: int | None = None) -> Event:
        """Set what a caller speaking over the room does (``off``, ``cancel``, ``pause``;
        a field left None keeps its value); returns the room's setting (``barge_in``)."""
        fields = {"mode": mode, "min_speech_ms": min_speech_ms}
        await self._send({"type": "barge_in", **{k: v for k, v in fields.items() if v is not None}})
        return await self.wait_for("barge_in")

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            # wait, not "await and suppress CancelledError": that would also swallow a
            # cancellation of close() itself
            self._reader.cancel()
            await asyncio.wait([self._reader])
            if not self._reader.cancelled():
                self._reader.exception()  # retrieved: how the reader ended is moot now
        if self._own_session and self._session is not None:
            await self._session.close()
