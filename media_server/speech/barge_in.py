"""Barge-in: a caller speaking over a room's speech pauses it, then cancels or resumes it.

A cough or an "uh-huh" must not kill a reply, and a real interruption must stop it
within a blink. ``pause`` stops the audio at VAD onset; a caller's speech that lasts
``min_speech_ms`` then cancels the room's speech, a shorter burst resumes the same
utterance where it stopped. ``cancel`` lets the audio play on until that decision and
cancels then; a shorter burst changes nothing. ``off`` ignores callers.

How long the caller spoke is measured on the caller's own stream (the positions of the
VAD's start and stop), not by when the events arrive: the VAD reports a stop only after
its minimum silence (``stop_delay_ms``), so a speech still without a stop that long past
``min_speech_ms`` has certainly lasted it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from media_server.clock import Clock
from media_server.config import MAX_BARGE_IN_MIN_SPEECH_MS, Settings
from media_server.listening.caller_audio import INPUT_RATE_HZ, CallerFrame, VoiceActivity
from media_server.speech.paced import PacedSpeech
from media_server.speech.protocol import ProtocolError
from media_server.tasks import cancel_and_wait
from media_server.telemetry.metrics import ServerMetrics

logger = logging.getLogger(__name__)

BARGE_IN_TYPE: Final = "barge_in"


class BargeInMode(StrEnum):
    OFF = "off"
    CANCEL = "cancel"
    PAUSE = "pause"


@dataclass(frozen=True, slots=True)
class BargeInPolicy:
    mode: BargeInMode = BargeInMode.PAUSE
    min_speech_ms: int = 400
    """A caller's speech this long cancels; shorter, it resumes (``pause``) or is ignored."""

    @classmethod
    def of(cls, settings: Settings) -> BargeInPolicy:
        return cls(BargeInMode(settings.barge_in), settings.barge_in_min_speech_ms)


def barge_in_request(data: dict[str, Any], current: BargeInPolicy) -> BargeInPolicy:
    """A bot's ``{"type": "barge_in", "mode": ..., "min_speech_ms": ...}`` (decoded)
    applied to ``current``: a field left out keeps its value. Raises
    :class:`ProtocolError` for a bad value or an unknown field."""
    unknown = sorted(set(data) - {"type", "mode", "min_speech_ms"})
    if unknown:
        raise ProtocolError(
            "invalid_request",
            f"{unknown[0]!r}: not a barge_in field",
            "send 'mode' and/or 'min_speech_ms'",
        )
    mode = data.get("mode", current.mode.value)
    if mode not in tuple(BargeInMode):
        raise ProtocolError(
            "invalid_request",
            f"'mode': {mode!r} is not a barge-in mode",
            "use one of 'off', 'cancel' or 'pause'",
        )
    min_speech_ms: Any = data.get("min_speech_ms", current.min_speech_ms)
    if (
        not isinstance(min_speech_ms, int)
        or isinstance(min_speech_ms, bool)
        or not 0 <= min_speech_ms <= MAX_BARGE_IN_MIN_SPEECH_MS
    ):
        raise ProtocolError(
            "invalid_request",
            f"'min_speech_ms': {min_speech_ms!r} is not a whole number of ms "
            f"from 0 to {MAX_BARGE_IN_MIN_SPEECH_MS}",
            "send the caller's speech duration that cancels the room's speech, e.g. 400",
        )
    return BargeInPolicy(BargeInMode(mode), min_speech_ms)


class BargeIn:
    """A room's barge-in: a :class:`~media_server.listening.caller_audio.CallerAudioSink`
    that pauses, resumes and cancels the room's :class:`PacedSpeech`.

    An interruption begins when a caller starts speaking while the room's queue holds
    speech and nobody else is already speaking; it lasts while any caller speaks. If
    it lasts ``min_speech_ms`` (a timer on the room's clock, owned here), everything
    the room has queued is cancelled (``speech.cancelled`` with ``heard_text``); if every
    caller stops sooner, ``pause`` mode resumes the paused utterance. Events reach every
    member through the speech's event sink (the room's broadcast).
    """

    def __init__(
        self,
        speech: PacedSpeech,
        clock: Clock,
        policy: BargeInPolicy,
        stop_delay_ms: int = 0,
        *,
        metrics: ServerMetrics | None = None,
    ) -> None:
        """``stop_delay_ms``: how long after a caller's speech really ends the VAD says so
        (its minimum silence, ``VMS_VAD_MIN_SILENCE_MS``)."""
        self._speech = speech
        self._clock = clock
        self._metrics = metrics
        self.policy = policy
        self._stop_delay_s = stop_delay_ms / 1000
        self._began: VoiceActivity | None = None
        """The start that began the interruption going on (its caller and position)."""
        self._rules = policy
        """The policy the interruption going on began with."""
        self._speaking: set[str] = set()
        """Callers whose voice is on now."""
        self._timer: asyncio.Task[None] | None = None
        """The min-speech decision of the interruption going on, if any."""
        self._closed = False
        self.interruptions = 0
        self.cancels = 0
        self.short_bursts = 0

    def configure(self, policy: BargeInPolicy) -> None:
        """From the next interruption on (one going on keeps the rules it began with)."""
        self.policy = policy

    @property
    def interrupting(self) -> bool:
        return self._timer is not None

    def stats(self) -> dict[str, Any]:
        """The room's setting and what it did (a room's stats)."""
        return {
            "mode": self.policy.mode.value,
            "min_speech_ms": self.policy.min_speech_ms,
            "interruptions": self.interruptions,
            "cancels": self.cancels,
            "short_bursts": self.short_bursts,
        }

    # -- CallerAudioSink ------------------------------------------------------------

    def caller_frame(self, frame: CallerFrame) -> None:
        """Audio is not needed here: the VAD's decisions are."""

    def voice_activity(self, activity: VoiceActivity) -> None:
        if self._closed:
            return
        if activity.speaking:
            first = not self._speaking
            self._speaking.add(activity.participant)
            if first and self._timer is None:
                self._begin(activity)
            return
        self._speaking.discard(activity.participant)
        if not self._speaking and self._timer is not None:
            if self._spoke_ms(activity) >= self._rules.min_speech_ms:
                timer, self._timer = self._timer, None
                timer.cancel()
                self._cancel(self._rules)
            else:
                self._short_burst(activity)

    def _spoke_ms(self, stop: VoiceActivity) -> float:
        """How long the interruption's speech lasted, on the caller's stream where the
        same caller began and ended it; else by when the events came (less the VAD's
        stop delay)."""
        began = self._began
        if began is None:
            return 0.0
        if began.participant == stop.participant:
            return (stop.position - began.position) * 1000 / INPUT_RATE_HZ
        return stop.server_ms - began.server_ms - self._stop_delay_s * 1000

    # -- decisions ------------------------------------------------------------------

    def _begin(self, activity: VoiceActivity) -> None:
        policy = self.policy
        if policy.mode is BargeInMode.OFF or not self._speech.speaking:
            return
        self.interruptions += 1
        if policy.mode is BargeInMode.PAUSE:
            self._speech.pause()
        self._log("began", activity.participant, policy)
        self._began, self._rules = activity, policy
        deadline = self._clock.now() + policy.min_speech_ms / 1000 + self._stop_delay_s
        self._timer = asyncio.get_running_loop().create_task(
            self._decide_at(deadline, policy), name="barge-in-decision"
        )

    async def _decide_at(self, deadline: float, policy: BargeInPolicy) -> None:
        await self._clock.sleep_until(deadline)
        self._timer = None  # this task is ending: nothing to cancel any more
        self._cancel(policy)

    def _cancel(self, policy: BargeInPolicy) -> None:
        self.cancels += 1
        if self._metrics is not None:
            self._metrics.barge_ins.labels(outcome="cancelled").inc()
        self._log("cancelled", None, policy)
        self._speech.queue.cancel(None, everyone=True)
        self._speech.resume()  # the queue is empty: what comes next plays

    def _short_burst(self, activity: VoiceActivity) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.short_bursts += 1
        if self._metrics is not None:
            self._metrics.barge_ins.labels(outcome="resumed").inc()
        self._log("ended", activity.participant, self._rules)
        self._speech.resume()  # pause mode: the same utterance plays on

    def _log(self, what: str, participant: str | None, policy: BargeInPolicy) -> None:
        logger.debug(
            "barge-in %s (%s, %d ms)",
            what,
            policy.mode.value,
            policy.min_speech_ms,
            extra={
                "event": f"barge_in.{what}",
                **({} if participant is None else {"participant": participant}),
            },
        )

    async def aclose(self) -> None:
        self._closed = True
        timer, self._timer = self._timer, None
        await cancel_and_wait(timer)
