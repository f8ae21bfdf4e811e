"""Rooms: bots speak, every listener hears the same frames, synthesised and encoded once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import secrets
from collections.abc import Callable
from typing import Any, Final, Protocol

from media_server.audio.budget import EncodeBudget
from media_server.audio.encoder import StreamEncoder
from media_server.clock import Clock
from media_server.config import Settings
from media_server.link.adaptor import AudioDecision, merged
from media_server.listening.caller_audio import CallerAudioSink
from media_server.listening.caller_input import CallerInput
from media_server.listening.sinks import CallerSinks
from media_server.log_context import log_context
from media_server.playout.pacer import Pacer
from media_server.playout.stats import LATENESS_WINDOW_FRAMES, PacingStats
from media_server.rooms.fanout import FanOut
from media_server.rooms.tokens import Claims, Role
from media_server.rtc.client import PeerClient
from media_server.rtc.inbound import InboundAudio
from media_server.speech.barge_in import BargeIn, BargeInPolicy
from media_server.speech.events import (
    ErrorEvent,
    Event,
    ParticipantJoined,
    ParticipantLeft,
    RoomJoined,
)
from media_server.speech.paced import PacedSpeech
from media_server.speech.protocol import (
    ClientMessage,
    parse_client_message,
)
from media_server.speech.talker import Talker
from media_server.tasks import cancel_and_wait
from media_server.telemetry.api import count_refusal
from media_server.telemetry.metrics import ServerMetrics, SpeechKind
from synthesis import SynthesisService
from synthesis.errors import ClientError, Forbidden, ServerBusy

logger = logging.getLogger(__name__)


RETRY_AFTER_S: Final = 5
"""What a client refused by a room or server limit is told to wait before trying again."""


class RoomFull(ServerBusy):
    default_code = "room_full"

    def __init__(self, room: str, limit: int) -> None:
        super().__init__(
            None,
            f"room {room!r} already has {limit} participants",
            "retry later, or raise VMS_MAX_ROOM_PARTICIPANTS",
            retry_after_s=RETRY_AFTER_S,
        )
        self.limit = limit


class TooManyCallers(ServerBusy):
    default_code = "too_many_callers"

    def __init__(self, room: str, limit: int) -> None:
        super().__init__(
            None,
            f"room {room!r} already has {limit} callers",
            "retry later, join as a listener or speaker, or raise VMS_MAX_CALLERS_PER_ROOM",
            retry_after_s=RETRY_AFTER_S,
        )
        self.limit = limit


class Member(Protocol):
    """Anyone in a room who receives its events (a bot's WebSocket, a listener's channel)."""

    @property
    def identity(self) -> str: ...

    def send_text(self, text: str) -> None:
        """An event, already serialised: a broadcast encodes it once for everyone."""


class Room:
    """One speaker pipeline shared by everyone in the room.

    Bots' utterances are **queued**, not mixed: they play one after another on
    one PacedSpeech → one Opus encoder → one Pacer, and each tick the same packet is
    fanned out to every listener's track. Turn-taking voice agents do not talk
    over each other, overlapping synthetic voices are hard to follow, and a
    queue keeps the cost per room at one encode per frame however many bots
    there are. A bot's ``cancel`` (barge-in) removes only its own utterances; a
    listener holding a ``speaker`` token can cancel everything.
    """

    def __init__(
        self,
        name: str,
        settings: Settings,
        synthesis: SynthesisService,
        clock: Clock,
        silence_payload: bytes,
        *,
        encode_executor: concurrent.futures.Executor | None = None,
        encode_budget: EncodeBudget | None = None,
        metrics: ServerMetrics | None = None,
        admit: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.encode_budget = encode_budget
        """Callers' audio processing counts against it too (the loop's media CPU)."""
        self.metrics = metrics
        """Shared with its listeners' peers (RTCP, link decisions, ICE restarts)."""
        self.admit = admit
        """Every member's :class:`Talker` asks it before opening an utterance (drain)."""
        self.settings = settings
        self.synthesis = synthesis
        self.clock = clock
        self.fanout = FanOut()
        self.speech = PacedSpeech(
            synthesis,
            StreamEncoder(settings.opus),
            self.broadcast,
            encode_executor=encode_executor,
            encode_budget=encode_budget,
            max_queued=settings.max_queued_utterances,
            debug_timings=settings.debug_timings,
            metrics=metrics,
            kind=SpeechKind.ROOM,
        )
        # the fan-out writes each listener's packet in turn: the last one's wait is kept too
        self.pacer = Pacer(
            self.speech,
            self.fanout,
            clock,
            silence_payload,
            stats=PacingStats(send_window=LATENESS_WINDOW_FRAMES),
            metrics=metrics,
        )
        self.listeners: dict[str, ListenerSession] = {}
        self.bots: dict[str, Member] = {}
        self.caller_sinks = CallerSinks()
        """Told every caller's frames and voice activity (bots that listen, barge-in)."""
        self._pacer_task: asyncio.Task[None] | None = None
        self.closed = False

        self.barge_in = BargeIn(
            self.speech,
            clock,
            BargeInPolicy.of(settings),
            settings.vad_min_silence_ms,
            metrics=metrics,
        )
        """Callers speaking over the room pause or cancel its speech."""
        self.add_caller_sink(self.barge_in)

    def links_changed(self) -> None:
        """A listener's link (or the set of listeners) changed: the one encoder codes for
        the listener that needs the most protection; RED stays per listener."""
        self.speech.encoder.target = merged(
            [
                listener.adaptor.decision
                for listener in self.listeners.values()
                if listener.adaptor.reports and not listener.closed
            ]
        )

    @property
    def participants(self) -> int:
        return len(self.listeners) + len(self.bots)

    @property
    def empty(self) -> bool:
        return not self.listeners and not self.bots

    def start(self) -> None:
        self.speech.start()
        self._pacer_task = asyncio.get_running_loop().create_task(
            self.pacer.run(), name=f"room-pacer-{self.name}"
        )

    def _check_capacity(self, role: Role | None = None) -> None:
        if self.participants >= self.settings.max_room_participants:
            raise RoomFull(self.name, self.settings.max_room_participants)
        limit = self.settings.max_callers_per_room
        if role is Role.CALLER and len(self.callers) >= limit:
            raise TooManyCallers(self.name, limit)

    @property
    def callers(self) -> list[ListenerSession]:
        """Members whose microphone the server takes."""
        return [lst for lst in self.listeners.values() if lst.claims.role is Role.CALLER]

    def roster(self) -> list[dict[str, str]]:
        """Who is in the room; a caller's entry also has the ``member`` id its audio
        frames and voice activity carry."""
        return [{"identity": b.identity, "role": Role.BOT.value} for b in self.bots.values()] + [
            listener.roster_entry() for listener in self.listeners.values()
        ]

    def stats(self) -> dict[str, Any]:
        """The room's figures: who is in it, whether it speaks, its stream's pacing."""
        return {
            "room": self.name,
            "participants": self.roster(),
            "speaking": self.speech.speaking,
            "queued_utterances": self.speech.pending,
            "callers": [
                {"identity": c.identity, **c.caller.stats()} for c in self.callers if c.caller
            ],
            "barge_in": self.barge_in.stats(),
            **self.pacer.stats.snapshot().as_dict(),
        }

    # -- members ------------------------------------------------------------------

    async def add_listener(
        self,
        claims: Claims,
        offer_sdp: str,
        request_close: Callable[[str, str], None],
        *,
        client: str | None = None,
        credential: bytes | None = None,
    ) -> tuple[ListenerSession, str]:
        """Negotiate a listener; ``client`` and ``credential`` as for 1:1 sessions
        (:meth:`SessionRegistry.create <media_server.sessions.registry.SessionRegistry.create>`)."""
        self._check_capacity(claims.role)
        listener_id = secrets.token_urlsafe(12)
        with log_context(room=self.name, listener=listener_id):  # for its tasks' log lines
            listener = ListenerSession(listener_id, self, claims, request_close)
        listener.client = client
        listener.credential = credential
        self.listeners[listener_id] = listener
        try:
            with log_context(**listener.log_ids):
                answer = await listener.start(offer_sdp)
        except BaseException:
            self.listeners.pop(listener_id, None)
            await listener.aclose()
            raise
        self.broadcast(ParticipantJoined(listener.identity, claims.role.value, listener.member))
        self._log_member("joined", listener_id, listener.identity, claims.role)
        return listener, answer

    async def remove_listener(self, listener_id: str, reason: str = "left") -> bool:
        listener = self.listeners.pop(listener_id, None)
        if listener is None:
            return False
        with log_context(**listener.log_ids):
            await listener.aclose()
        self.broadcast(
            ParticipantLeft(listener.identity, listener.claims.role.value, listener.member)
        )
        self._log_member("left", listener_id, listener.identity, listener.claims.role, reason)
        return True

    def add_bot(self, bot: Member) -> str:
        self._check_capacity()
        member_id = secrets.token_urlsafe(12)
        self._announce(ParticipantJoined, bot.identity, Role.BOT)  # to the others
        self.bots[member_id] = bot
        self._log_member("joined", member_id, bot.identity, Role.BOT)
        return member_id

    def remove_bot(self, member_id: str) -> None:
        bot = self.bots.pop(member_id, None)
        if bot is not None:
            self.speech.queue.cancel(bot.identity, everyone=False)
            self._announce(ParticipantLeft, bot.identity, Role.BOT)
            self._log_member("left", member_id, bot.identity, Role.BOT, "bot disconnected")

    def _log_member(
        self, what: str, member_id: str, identity: str, role: Role, reason: str | None = None
    ) -> None:
        """``room.joined`` / ``room.left``: the member's id is its listener id (WHEP) or
        a bot's id in this room; the identity comes from its join token."""
        logger.info(
            "%s %s (%s) %s room %s%s (%d participants)",
            role.value,
            member_id,
            identity,
            what,
            self.name,
            "" if reason is None else f": {reason}",
            self.participants,
            extra={
                "event": f"room.{what}",
                "room": self.name,
                "listener" if role is not Role.BOT else "member": member_id,
                "identity": identity,
                "role": role.value,
                **({} if reason is None else {"reason": reason}),
            },
        )

    # -- events -------------------------------------------------------------------

    def broadcast(self, event: Event) -> None:
        """Speech events (with their ``owner``) go to every bot and listener, serialised
        once."""
        text = event.to_json()
        for bot in list(self.bots.values()):
            bot.send_text(text)
        for listener in list(self.listeners.values()):
            listener.send_text(text)

    def _announce(
        self, kind: type[ParticipantJoined | ParticipantLeft], identity: str, role: Role
    ) -> None:
        self.broadcast(kind(identity, role.value))

    # -- callers' audio ------------------------------------------------------------

    def add_caller_sink(self, sink: CallerAudioSink) -> None:
        """``sink`` is told every caller's frames and voice activity from now on."""
        self.caller_sinks.add(sink)

    def remove_caller_sink(self, sink: CallerAudioSink) -> None:
        self.caller_sinks.remove(sink)

    # -- speech -------------------------------------------------------------------

    def handle(self, message: ClientMessage, talker: Talker, *, cancel_everyone: bool) -> None:
        """Act on a member's message; a :class:`~synthesis.errors.ClientError` is for the member."""
        talker.apply(
            message, self.speech.queue, self.speech.engine, cancel_everyone=cancel_everyone
        )

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.remove_caller_sink(self.barge_in)  # callers leaving below must not wake it
        await self.barge_in.aclose()
        await cancel_and_wait(self._pacer_task)
        for listener_id in list(self.listeners):
            await self.remove_listener(listener_id, "room closed")
        await self.speech.aclose()
        self.caller_sinks.clear()


class ListenerSession(PeerClient):
    """A WebRTC member of a room: hears the room's stream from its next frame on.

    With a ``speaker`` token it may also send text and ``cancel`` (which stops
    everyone's speech: a person barging in); with a ``listener`` token it only
    receives events. A ``caller`` is a speaker whose microphone the server takes: its
    decoded audio goes to the room's caller-audio sinks as :class:`CallerFrame` and
    :class:`VoiceActivity`, tagged with its :attr:`member` id.
    """

    def __init__(
        self,
        listener_id: str,
        room: Room,
        claims: Claims,
        request_close: Callable[[str, str], None],
    ) -> None:
        caller = claims.role is Role.CALLER
        super().__init__(
            listener_id,
            room.settings,
            room.clock,
            request_close,
            metrics=room.metrics,
            receive_audio=caller,
        )
        self.room = room
        self.claims = claims
        self.member = secrets.token_urlsafe(9) if caller else None
        """A caller's id in the room (not its listener id: that names its WHEP resource)."""
        self.caller = (
            None
            if self.member is None
            else CallerInput(
                self.member, room.caller_sinks, room.settings, budget=room.encode_budget
            )
        )
        self.talker = Talker(
            claims.identity, claims.voice, room.settings, room.clock, admit=room.admit
        )

    @property
    def identity(self) -> str:
        return self.claims.identity

    async def _run_media(self) -> None:
        # Join the fan-out once aiortc's sender asks for frames: the first packet
        # this listener gets is the room's next frame.
        await self._transport_ready()
        self.room.fanout.add(self.track, on_first=self._joined_at)
        await asyncio.Event().wait()

    def roster_entry(self) -> dict[str, str]:
        entry = {"identity": self.identity, "role": self.claims.role.value}
        if self.member is not None:
            entry["member"] = self.member
        return entry

    async def _run_inbound(self, inbound: InboundAudio) -> None:
        if self.caller is not None:
            await self.caller.run(inbound)

    def _joined_at(self, pts: int) -> None:
        self.send_event(
            RoomJoined(
                self.room.name, self.identity, self.claims.role.value, pts, self.room.roster()
            )
        )

    async def _on_close(self) -> None:
        self.room.fanout.remove(self.track)
        self.room.links_changed()

    def _link_changed(self, decision: AudioDecision) -> None:
        self.room.links_changed()

    def stats(self) -> dict[str, Any]:
        """This listener's connection and its room's stream."""
        return {
            "connection_state": self.peer.connection_state,
            "dropped_frames": self.track.dropped_frames,
            "link": self.link_stats(),
            **self.ice_stats(),
            **self.room.stats(),
        }

    def _on_message(self, raw: str | bytes) -> None:
        self.last_activity = self._clock.now()
        try:
            message = parse_client_message(raw, limits=self.talker.limits)
            if self.claims.role not in (Role.SPEAKER, Role.CALLER):
                raise Forbidden(
                    "forbidden",
                    f"a {self.claims.role.value} token cannot send text or cancel",
                    "join with a 'speaker' or 'caller' token to talk in this room",
                )
            self.room.handle(message, self.talker, cancel_everyone=True)
        except ClientError as exc:
            count_refusal(self._metrics, exc)
            self.send_event(ErrorEvent.of(exc))
