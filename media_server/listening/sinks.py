"""The consumers of a room's callers' audio, told in turn."""

from __future__ import annotations

import logging

from media_server.listening.caller_audio import CallerAudioSink, CallerFrame, VoiceActivity

logger = logging.getLogger(__name__)


class CallerSinks:
    """Every :class:`CallerAudioSink` of a room, itself one: each frame and voice activity
    goes to each sink, in the order they were added. A sink that raises is removed, so
    one broken consumer neither ends the caller's stream nor fills the log 50 times a
    second."""

    def __init__(self) -> None:
        self._sinks: list[CallerAudioSink] = []

    def __len__(self) -> int:
        return len(self._sinks)

    def add(self, sink: CallerAudioSink) -> None:
        if sink not in self._sinks:
            self._sinks.append(sink)

    def remove(self, sink: CallerAudioSink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def clear(self) -> None:
        self._sinks.clear()

    def caller_frame(self, frame: CallerFrame) -> None:
        for sink in tuple(self._sinks):
            try:
                sink.caller_frame(frame)
            except Exception:
                self._drop(sink)

    def voice_activity(self, activity: VoiceActivity) -> None:
        logger.debug(
            "caller %s %s speaking at %d",
            activity.participant,
            "started" if activity.speaking else "stopped",
            activity.position,
            extra={"event": "room.voice_activity"},
        )
        for sink in tuple(self._sinks):
            try:
                sink.voice_activity(activity)
            except Exception:
                self._drop(sink)

    def _drop(self, sink: CallerAudioSink) -> None:
        logger.exception("caller audio sink %r failed; removed", sink)
        self.remove(sink)
