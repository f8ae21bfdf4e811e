"""The caller's side: audio coming in from room participants who may publish, decoded,
resampled to 16 kHz mono, with voice activity, handed to the bots that listen."""

from media_server.listening.caller_audio import (
    INPUT_FRAME_MS,
    INPUT_FRAME_SAMPLES,
    INPUT_RATE_HZ,
    CallerAudioSink,
    CallerFrame,
    VoiceActivity,
)

__all__ = [
    "INPUT_FRAME_MS",
    "INPUT_FRAME_SAMPLES",
    "INPUT_RATE_HZ",
    "CallerAudioSink",
    "CallerFrame",
    "VoiceActivity",
]
