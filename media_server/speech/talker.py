"""Talker: what one client may say to an utterance queue (identity, voice, rate, limits)."""

from __future__ import annotations

from collections.abc import Callable

from media_server.clock import Clock
from media_server.config import Settings
from media_server.speech.protocol import (
    CancelMessage,
    ClientMessage,
    ProtocolError,
    SayMessage,
    TextDeltaMessage,
    TextDoneMessage,
    checked_request,
    queue_full,
    rate_limited,
    streamed_text_too_long,
)
from media_server.speech.queue import UtteranceQueue, monotonic_ms
from media_server.speech.rate import TokenBucket
from synthesis import Engine, RequestLimits, SynthesisRequest


class Talker:
    """One client's voice on an :class:`UtteranceQueue`: a 1:1 session's, a bot's, a room
    speaker's, a ``/tts/ws`` socket's.

    ``identity`` becomes the owner of its utterances (``None`` for a 1:1 session),
    ``voice`` the default ``speaker_id``; ``say`` and each new streamed text take a
    token from its rate limit, and one streamed text may collect at most
    ``limits.max_streamed_text_chars`` characters. ``admit`` is asked before a new
    utterance is opened (a draining server refuses it; what is open goes on).
    """

    def __init__(
        self,
        identity: str | None,
        voice: str | None,
        settings: Settings,
        clock: Clock,
        *,
        admit: Callable[[], None] | None = None,
    ) -> None:
        self.identity = identity
        self._admit = admit
        self.voice = voice
        self.settings = settings
        self.rate = TokenBucket(settings.say_rate_per_s, settings.say_burst, clock)
        self.limits = RequestLimits(max_text_chars=settings.max_text_chars)

    def _admit_new(self) -> None:
        if self._admit is not None:
            self._admit()

    def _take_token(self) -> None:
        if not self.rate.take():
            raise rate_limited(self.settings.say_burst, self.settings.say_rate_per_s)

    def apply(
        self,
        message: ClientMessage,
        queue: UtteranceQueue,
        engine: Engine,
        *,
        cancel_everyone: bool,
        received_ms: float | None = None,
    ) -> None:
        """Act on ``message`` (checked against ``engine``); a
        :class:`~synthesis.errors.ClientError` is for the client's ``error`` event.

        ``cancel_everyone``: whether this client's ``cancel`` stops everyone's speech
        (a person barging in) or only its own (a bot in a shared room).
        ``received_ms``: when the message arrived (:func:`monotonic_ms`; default now),
        stamped on the utterance it opens.
        """
        if received_ms is None:
            received_ms = monotonic_ms()
        owner = self.identity
        try:
            if isinstance(message, CancelMessage):
                queue.cancel(owner, everyone=cancel_everyone)
            elif isinstance(message, SayMessage):
                request = checked_request(engine, message.request, self.voice)
                self._admit_new()
                self._take_token()
                said = queue.say(request, message.utterance_id, owner)
                said.timings.received_ms = received_ms
            elif isinstance(message, TextDeltaMessage):
                if queue.text_delta_opens(message.utterance_id, owner):
                    self._admit_new()
                    self._take_token()
                base = checked_request(engine, SynthesisRequest(text=" "), self.voice)
                # An empty delta finds (or opens) the utterance without adding text, so
                # the cap is checked before this delta's text is taken.
                utterance = queue.text_delta("", base, message.utterance_id, owner)
                if utterance.timings.received_ms is None:
                    utterance.timings.received_ms = received_ms
                total = utterance.streamed_chars + len(message.text)
                if total > self.limits.max_streamed_text_chars:
                    raise streamed_text_too_long(self.limits.max_streamed_text_chars)
                utterance.streamed_chars = total
                queue.text_delta(message.text, base, message.utterance_id, owner)
            elif isinstance(message, TextDoneMessage):
                if queue.text_done(message.utterance_id, owner) is None:
                    raise ProtocolError(
                        "no_open_text",
                        "there is no streamed text to finish",
                        "send 'text.done' after 'text.delta' messages, with the same 'id'",
                    )
        except OverflowError:
            raise queue_full(queue.pending, queue.max_queued) from None
