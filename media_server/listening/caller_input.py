"""A caller's microphone in a room: the loop that reads it, its stream and its VAD."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from media_server.audio.budget import EncodeBudget
from media_server.config import Settings
from media_server.listening.caller_audio import CallerAudioSink
from media_server.listening.caller_stream import CallerStream
from media_server.listening.vad import EarshotScorer, VoiceActivityDetector
from media_server.rtc.inbound import InboundAudio


class CallerInput:
    """Reads one caller's decoded audio into a :class:`CallerStream` for ``sink``.

    Runs on the loop: aiortc decodes in its own thread, and what is left (mono,
    48 → 16 kHz, 20 ms frames, VAD) costs about 0.1 ms a frame (docs/rooms.md); that
    time is reported to the server's :class:`EncodeBudget` (the media CPU the loop
    spends), so many callers lower the Opus complexity before pacing suffers. While
    the caller speaks, no packets for the VAD's minimum silence (a muted or lost
    sender) end the speech, as the stream's end does.
    """

    def __init__(
        self,
        member: str,
        sink: CallerAudioSink,
        settings: Settings,
        *,
        budget: EncodeBudget | None = None,
    ) -> None:
        self.member = member
        self._budget = budget
        self._sink = sink
        self._settings = settings
        self.stream: CallerStream | None = None
        """Made when the caller's audio was negotiated (a ``sendrecv`` offer)."""

    async def run(self, inbound: InboundAudio) -> None:
        """Until the track ends (the peer closed) or the owner cancels it."""
        settings = self._settings
        detector = VoiceActivityDetector(
            self.member,
            EarshotScorer(),
            threshold=settings.vad_threshold,
            min_speech_ms=settings.vad_min_speech_ms,
            min_silence_ms=settings.vad_min_silence_ms,
        )
        stream = self.stream = CallerStream(self.member, self._sink, detector)
        quiet_s = settings.vad_min_silence_ms / 1000
        try:
            while True:
                try:
                    async with asyncio.timeout(quiet_s if stream.speaking else None):
                        chunk = await inbound.read()
                except TimeoutError:
                    stream.finish()
                    continue
                if chunk is None:
                    return
                started = time.perf_counter()
                stream.feed(chunk.pts, chunk.rate_hz, chunk.pcm)
                if self._budget is not None:
                    self._budget.record(time.perf_counter() - started)
        finally:
            stream.finish()

    @property
    def speaking(self) -> bool:
        """The caller's voice is on now (its VAD)."""
        return self.stream is not None and self.stream.speaking

    def stats(self) -> dict[str, Any]:
        """``receiving``: its audio was negotiated; then its frames and voice activity."""
        stream = self.stream
        return {
            "member": self.member,
            "receiving": stream is not None,
            **({} if stream is None else stream.stats()),
        }
