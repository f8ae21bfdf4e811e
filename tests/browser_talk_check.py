"""Drive the web client's Talk mode in headless Chromium with a fake microphone.

Not a pytest test: run it by hand (``python3 tests/browser_talk_check.py [screenshot.png]``)
from the repository root, like ``tests/browser_check.py``. Chromium's fake capture device
plays a Piper sentence (48 kHz WAV, padded with silence, looped by Chromium) as the
page's microphone. A listening bot (``voice_bot.RoomBot(listen=True)``) in room "talk"
says a long sentence once the page has joined as a caller; the check wants the bot to hear
the caller's speech, the room's speech paused then cancelled by it (barge-in ``pause``,
the server's default), the page's log to show both with ``heard_text``, and Hang up to
leave the room. It prints the timings (say, the caller's speech onset, the pause).

Exits 0 when everything worked, 1 when something did not, and 0 with a message when
Playwright or /usr/bin/chromium is missing. Never downloads a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any, Final

ROOM: Final = "talk"
SECRET: Final = "browser-talk-check-secret-0123456789"
CALLER: Final = "page-caller"
MIC_RATE_HZ: Final = 48_000
LEAD_S: Final = 5.0
"""Silence before the caller speaks: the page has joined and the bot's sentence plays."""
TAIL_S: Final = 8.0
"""Silence after it, before Chromium loops the file."""
CALLER_TEXT: Final = "Sorry to interrupt, but could you tell me the opening hours instead?"
BOT_TEXT: Final = " ".join(
    ["Welcome to the restaurant line, let me tell you about tonight's specials in detail."] * 5
)
SPEECH_RMS: Final = 300.0
"""A 20 ms frame of 16 kHz s16 louder than this carries speech (silence is near 0)."""
MIN_SPEECH_FRAMES: Final = 25
"""Half a second of loud frames: the bot heard the caller speak, not a click."""
REFUSED: Final = f"POST /rooms/{ROOM}/whep → HTTP 401"

MIC_RECORDER: Final = """
window.__mics = [];
const nativeGetUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (constraints) => {
  const stream = await nativeGetUserMedia(constraints);
  window.__mics.push(stream);
  return stream;
};
"""
"""Keeps the page's microphone streams reachable: Hang up must have stopped their tracks."""


class CheckFailed(Exception):
    pass


def _write_wav(path: Path) -> float:
    """The caller's sentence at 48 kHz between silences; returns its duration in seconds."""
    import numpy as np

    from synthesis.piper import PiperEngine
    from tests.media_server.listening.speech import spoken

    engine = PiperEngine()
    try:
        speech = spoken(engine, MIC_RATE_HZ, CALLER_TEXT)
    finally:
        engine.close()
    lead = np.zeros(int(LEAD_S * MIC_RATE_HZ), np.int16)
    tail = np.zeros(int(TAIL_S * MIC_RATE_HZ), np.int16)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(MIC_RATE_HZ)
        wav.writeframes(np.concatenate([lead, speech, tail]).astype("<i2").tobytes())
    return len(speech) / MIC_RATE_HZ


class BotEars:
    """What the listening bot got, with the monotonic time each thing arrived."""

    def __init__(self) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.caller_joined = asyncio.Event()
        self.frames = 0
        self.speech_frames = 0
        self.peak_rms = 0.0
        self.speech_started: list[tuple[float, Any]] = []
        self.speech_stopped: list[tuple[float, Any]] = []

    async def read_events(self, bot: Any) -> None:
        async for event in bot.events():
            self.events.append((time.monotonic(), event))
            if event.get("type") == "participant.joined" and event.get("identity") == CALLER:
                self.caller_joined.set()

    async def read_audio(self, bot: Any) -> None:
        import numpy as np

        from voice_bot import CallerAudio, CallerSpeechStarted, CallerSpeechStopped

        async for item in bot.caller_audio():
            if isinstance(item, CallerAudio):
                pcm = np.frombuffer(item.pcm, "<i2").astype(np.float64)
                rms = float(np.sqrt(np.mean(pcm**2))) if pcm.size else 0.0
                self.frames += 1
                self.peak_rms = max(self.peak_rms, rms)
                self.speech_frames += rms > SPEECH_RMS
            elif isinstance(item, CallerSpeechStarted):
                self.speech_started.append((time.monotonic(), item))
            elif isinstance(item, CallerSpeechStopped):
                self.speech_stopped.append((time.monotonic(), item))

    async def event(
        self, kind: str, after: float, timeout_s: float
    ) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, event in self.events:
                if at >= after and event.get("type") == kind:
                    return at, event
            await asyncio.sleep(0.05)
        raise CheckFailed(f"the bot got no {kind!r} within {timeout_s:g} s: {self.events}")


async def _room_callers(app: Any) -> int:
    from signaling.keys import MEDIA_KEY

    room = app[MEDIA_KEY].rooms.rooms.get(ROOM)
    return 0 if room is None else len(room.stats()["callers"])


async def _wait_callers(app: Any, want: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while (callers := await _room_callers(app)) != want and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return callers


async def _mics_live(page: Any) -> int:
    """Microphone tracks the page opened that still run."""
    live: int = await page.evaluate(
        "window.__mics.flatMap((s) => s.getTracks()).filter((t) => t.readyState === 'live').length"
    )
    return live


async def _restart_ice(page: Any, app: Any, ears: BotEars) -> str:
    """``pc.restartIce()`` while talking, as the page does itself when its network changes:
    the caller's audio must reach the bot over the new path."""
    from signaling.keys import MEDIA_KEY
    from tests.browser_check import _transport, _wait_for_event

    before = await _transport(page)
    await page.evaluate("window.__peers.at(-1).restartIce()")
    await _wait_for_event(page, "ice", 10, contains="answered with new credentials")
    deadline = time.monotonic() + 5
    after = await _transport(page)
    while time.monotonic() < deadline and not (
        after["ufrag"] != before["ufrag"] and after["ice"] == "connected"
    ):
        await asyncio.sleep(0.1)
        after = await _transport(page)
    if after["ufrag"] == before["ufrag"] or after["ice"] != "connected":
        raise CheckFailed(f"ICE restart did not complete: before {before}, after {after}")
    frames = ears.frames
    deadline = time.monotonic() + 5
    while ears.frames < frames + 50 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if ears.frames < frames + 50:
        raise CheckFailed(f"the bot got {ears.frames - frames} frames after the ICE restart")
    (caller,) = app[MEDIA_KEY].rooms.rooms[ROOM].callers
    ice = caller.ice_stats()
    if ice["ice_restarts"] != 1 or ice["ice_restarts_failed"] != 0:
        raise CheckFailed(f"the server did not complete one restart: {ice}")
    return (
        f"ufrag {before['ufrag']} -> {after['ufrag']}, DTLS {after['dtls']}, the bot got "
        f"{ears.frames - frames} frames after it; server: {ice['ice_restart_checks_ms']} ms checks"
    )


async def _refusals(page: Any) -> dict[str, str]:
    """Talk without a room, and with the microphone denied: the page says why, no peer."""
    from tests.browser_check import _wait_for_event

    results: dict[str, str] = {}
    room = await page.input_value("#room")
    await page.fill("#room", "")
    await page.click("#talk")
    results["Talk without a room"] = (await _wait_for_event(page, "talk", 5, "no room"))["text"]
    await page.fill("#room", room)
    await page.evaluate(
        """() => {
            navigator.mediaDevices.getUserMedia = async () => {
                throw new DOMException('Permission denied', 'NotAllowedError');
            };
        }"""
    )
    await page.click("#talk")
    denied = await _wait_for_event(page, "microphone", 5, "NotAllowedError")
    if "allow the microphone" not in denied["text"]:
        raise CheckFailed(f"a denied microphone without a solution: {denied}")
    results["microphone denied"] = denied["text"]
    await page.wait_for_selector("#talk:not([disabled])", timeout=5_000)
    if await page.evaluate("window.__peers.length") != 2:  # the call and the refused one
        raise CheckFailed("a peer connection was made without a microphone")
    return results


async def _log_times(page: Any) -> list[str]:
    """The page's log lines about the microphone and the room's speech, with their times."""
    lines: list[str] = await page.eval_on_selector_all(
        "#log .entry",
        """items => items.reverse()
            .map(li => [li.querySelector('time').textContent,
                        li.querySelector('.kind').textContent])
            .filter(([, kind]) => kind === 'mic' || kind.startsWith('speech.') || kind === 'talk')
            .map(([time, kind]) => `${time} ${kind}`)""",
    )
    return lines


async def _check(base_url: str, app: Any, wav: Path, screenshot: Path) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    from media_server.rooms.tokens import Role, TokenSigner
    from tests.browser_check import (
        CHROMIUM,
        CHROMIUM_ARGS,
        PEER_RECORDER,
        _log_entries,
        _wait_for_event,
    )
    from voice_bot import RoomBot

    signer = TokenSigner(SECRET.encode())
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    ]  # --use-fake-ui-for-media-stream is in CHROMIUM_ARGS: the permission is granted
    results: dict[str, Any] = {}
    page_errors: list[str] = []
    ears = BotEars()
    async with (
        RoomBot(base_url, ROOM, signer.issue(ROOM, Role.BOT, "talk-bot"), listen=True) as bot,
        async_playwright() as p,
    ):
        readers = [
            asyncio.create_task(ears.read_events(bot), name="talk-check-events"),
            asyncio.create_task(ears.read_audio(bot), name="talk-check-audio"),
        ]
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            await page.add_init_script(MIC_RECORDER)
            await page.add_init_script(PEER_RECORDER)
            await page.goto(base_url + "/")

            await page.fill("#room", ROOM)
            await page.fill("#token", signer.issue(ROOM, Role.CALLER, CALLER))
            talk_t = time.monotonic()
            await page.click("#talk")
            await _wait_for_event(page, "room.joined", 15)
            try:
                await asyncio.wait_for(ears.caller_joined.wait(), 10)
            except TimeoutError:
                raise CheckFailed(f"the bot saw no caller join: {ears.events}") from None
            if await _room_callers(app) != 1:
                raise CheckFailed("the room does not count the page as a caller")
            results["ICE restart while talking"] = await _restart_ice(page, app, ears)
            say_t = time.monotonic()
            said = await bot.say(BOT_TEXT)
            started_t, _ = await ears.event("speech.started", say_t, 15)
            paused_t, paused = await ears.event("speech.paused", say_t, 30)
            cancelled_t, cancelled = await ears.event("speech.cancelled", say_t, 10)
            if paused.get("id") != said or cancelled.get("id") != said:
                raise CheckFailed(f"another utterance was stopped: {paused}, {cancelled}")
            if not cancelled.get("heard_text"):
                raise CheckFailed(f"speech.cancelled without heard_text: {cancelled}")
            onsets = [(at, s) for at, s in ears.speech_started if s.server_ms / 1000 >= say_t]
            if not onsets:
                raise CheckFailed(f"no CallerSpeechStarted after the say: {ears.speech_started}")
            heard_at, onset = onsets[0]
            await asyncio.sleep(1.0)  # more of the caller's sentence reaches the bot
            if ears.speech_frames < MIN_SPEECH_FRAMES:
                raise CheckFailed(
                    f"the bot heard {ears.speech_frames} loud frames of {ears.frames} "
                    f"(peak RMS {ears.peak_rms:.0f})"
                )

            page_paused = await _wait_for_event(page, "speech.paused", 5, "heard_text=")
            results["page log (oldest first)"] = await _log_times(page)
            page_cancelled = await _wait_for_event(page, "speech.cancelled", 5, "heard_text=")
            await page.wait_for_timeout(300)
            await page.screenshot(path=str(screenshot), full_page=True)
            results.update(
                {
                    "bot heard": f"{ears.frames} frames, {ears.speech_frames} with speech "
                    f"(RMS > {SPEECH_RMS:g}), peak RMS {ears.peak_rms:.0f}",
                    "caller speech onset (server VAD)": f"position {onset.position / 16000:.2f} s"
                    f" into the caller's stream (the WAV's speech starts at {LEAD_S:g} s)",
                    "page speech.paused": page_paused["text"],
                    "page speech.cancelled": page_cancelled["text"],
                    "agent badge": await page.text_content("#agent-state"),
                    "timings (ms)": {
                        "Talk click -> say": round((say_t - talk_t) * 1000),
                        "say -> speech.started at the bot": round((started_t - say_t) * 1000),
                        "say -> caller speech onset (server VAD)": round(
                            (onset.server_ms / 1000 - say_t) * 1000
                        ),
                        "onset -> CallerSpeechStarted at the bot": round(
                            (heard_at - onset.server_ms / 1000) * 1000
                        ),
                        "onset -> speech.paused at the bot": round(
                            (paused_t - onset.server_ms / 1000) * 1000
                        ),
                        "speech.paused -> speech.cancelled at the bot": round(
                            (cancelled_t - paused_t) * 1000
                        ),
                        "played_ms at the pause": paused.get("played_ms"),
                    },
                }
            )

            await page.click("#hangup")
            await page.wait_for_selector("#talk:not([disabled])", timeout=5_000)
            if (left := await _wait_callers(app, 0, 5)) != 0:
                raise CheckFailed(f"{left} caller(s) still in the room after Hang up")
            if (live := await _mics_live(page)) != 0:
                raise CheckFailed(f"{live} microphone track(s) still live after Hang up")
            results["after Hang up"] = "0 callers in the room, microphone tracks ended"

            # A refused join shows the server's JSON error and lets the microphone go.
            await page.fill("#token", signer.issue(ROOM, Role.LISTENER, "not-a-caller") + "x")
            await page.click("#talk")
            refused = await _wait_for_event(page, REFUSED, 15)
            await page.wait_for_selector("#talk:not([disabled])", timeout=5_000)
            if (live := await _mics_live(page)) != 0:
                raise CheckFailed(f"{live} microphone track(s) live after a refused Talk")
            results["refused Talk"] = refused["text"]
            results.update(await _refusals(page))

            errors = [
                e for e in await _log_entries(page)
                if e["level"] == "error" and e["kind"] not in (REFUSED, "talk", "microphone")
            ]  # fmt: skip
            if errors:
                raise CheckFailed(f"the page logged errors: {errors}")
            if page_errors:
                raise CheckFailed(f"JavaScript errors: {page_errors}")
        finally:
            await browser.close()
            for task in readers:
                task.cancel()
            for task in readers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return results


async def _run(screenshot: Path) -> int:
    from aiohttp import web

    from media_server.config import Settings
    from signaling.app import KEEPALIVE_TIMEOUT_S, create_app
    from tests.browser_check import _free_port

    with tempfile.TemporaryDirectory(prefix="talk-check-") as tmp:
        wav = Path(tmp) / "caller.wav"
        spoken_s = await asyncio.to_thread(_write_wav, wav)
        settings = Settings(
            port=_free_port(), ice_host_addresses=("127.0.0.1",), token_secret=SECRET
        )
        app = create_app(settings)
        runner = web.AppRunner(app, keepalive_timeout=KEEPALIVE_TIMEOUT_S)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", settings.port).start()
        try:
            results = await _check(f"http://127.0.0.1:{settings.port}", app, wav, screenshot)
        except CheckFailed as exc:
            _say(f"browser talk check FAILED: {exc}", error=True)
            return 1
        finally:
            await runner.cleanup()
    results["caller WAV"] = (
        f"{LEAD_S:g} s silence, {spoken_s:.2f} s of speech, {TAIL_S:g} s silence"
    )
    _say(json.dumps(results, indent=2, ensure_ascii=False))
    _say(f"browser talk check passed; screenshot: {screenshot}")
    return 0


def _say(message: str, *, error: bool = False) -> None:
    print(message, file=sys.stderr if error else sys.stdout)  # noqa: T201


def main(argv: list[str] | None = None) -> int:
    # Run as a script, only tests/ is on sys.path; the packages live at the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    args = sys.argv[1:] if argv is None else argv
    screenshot = Path(args[0] if args else "/tmp/webclient-talk-check.png")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _say("browser talk check skipped: the 'playwright' Python package is not installed")
        return 0
    from tests.browser_check import CHROMIUM

    if not CHROMIUM.exists():
        _say(f"browser talk check skipped: {CHROMIUM} is missing (apt-get install chromium)")
        return 0
    return asyncio.run(_run(screenshot))


if __name__ == "__main__":
    sys.exit(main())
