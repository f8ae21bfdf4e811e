"""Drive the browser client in headless Chromium against an in-process server.

Not a pytest test: run it by hand (``python3 tests/browser_check.py [screenshot.png]``)
from the repository root. It starts the real app on a free loopback port, opens the
page, connects, speaks a sentence, checks the events and the received RTP, cancels a
long sentence with Stop, and disconnects. It exits 0 when everything worked, 1 when
something did not, and 0 with a message when Playwright or /usr/bin/chromium is missing.

Needs the ``playwright`` Python package and the Debian ``chromium`` package; it never
downloads a browser (``playwright install`` is not used).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    # Offer raw host candidates (127.0.0.1) rather than mDNS names the server cannot resolve.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
SHORT_TEXT = "Hello from the browser check. One, two, three."
LONG_TEXT = " ".join(
    ["This is a long sentence that keeps going so that the stop button has something to cut."] * 6
)


class CheckFailed(Exception):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _log_entries(page: Any) -> list[dict[str, str]]:
    entries: list[dict[str, str]] = await page.eval_on_selector_all(
        "#log .entry",
        """items => items.map(li => ({
            level: li.classList.contains('error') ? 'error' : 'ok',
            kind: li.querySelector('.kind').textContent,
            text: li.querySelector('.text').textContent}))""",
    )
    return entries


async def _stat(page: Any, name: str) -> str | None:
    value: str | None = await page.evaluate(
        """name => {
            for (const dt of document.querySelectorAll('.stats dt'))
                if (dt.textContent === name) return dt.nextElementSibling.textContent;
            return null;
        }""",
        name,
    )
    return value


SECRET = "browser-check-secret-0123456789"
ROOM = "browser-check"
API_TOKEN = "browser-check-operator-token-0123"
REFUSED = "POST /whep → HTTP 401"


async def _wait_for_event(
    page: Any, kind: str, timeout_s: float, contains: str = ""
) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in await _log_entries(page):
            if entry["kind"] == kind and contains in entry["text"]:
                return entry
        await asyncio.sleep(0.1)
    raise CheckFailed(f"no {kind!r} event in the page log within {timeout_s:g} s")


PEER_RECORDER = """
const Native = window.RTCPeerConnection;
window.__peers = [];
window.RTCPeerConnection = class extends Native {
  constructor(...args) { super(...args); window.__peers.push(this); }
};
"""
"""Keeps the page's peer connections reachable, for the ICE restart step."""


async def _transport(page: Any) -> dict[str, Any]:
    """The page's newest peer: its ICE state, local ufrag, DTLS state, RTP packets."""
    state: dict[str, Any] = await page.evaluate(
        """async () => {
            const pc = window.__peers.at(-1);
            const out = {ice: pc.iceConnectionState, packets: 0};
            (await pc.getStats()).forEach((s) => {
                if (s.type === 'transport') {
                    out.ufrag = s.iceLocalUsernameFragment;
                    out.dtls = s.dtlsState;
                    out.pairChanges = s.selectedCandidatePairChanges;
                }
                if (s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === 'audio')
                    out.packets = s.packetsReceived;
            });
            return out;
        }"""
    )
    return state


async def _server_stats(page: Any, base_url: str) -> dict[str, Any]:
    """The page's session's stats, from the server (its URL is in the page's log)."""
    from aiohttp import ClientSession

    entry = await _wait_for_event(page, "whep", 1, contains="session /")
    path = entry["text"].removeprefix("session ")
    async with ClientSession() as http, http.get(f"{base_url}{path}/stats") as response:
        stats: dict[str, Any] = await response.json()
        return stats


async def _restart_ice(page: Any, base_url: str) -> dict[str, Any]:
    """``pc.restartIce()`` mid-utterance, as the page does itself when its network
    changes: the session must carry on (same DTLS, audio again at once)."""
    before = await _transport(page)
    await page.evaluate("window.__peers.at(-1).restartIce()")
    started = time.monotonic()
    await _wait_for_event(page, "ice", 10, contains="answered with new credentials")
    answered_s = time.monotonic() - started
    deadline = time.monotonic() + 5
    after = await _transport(page)
    while time.monotonic() < deadline and not (
        after["ufrag"] != before["ufrag"]
        and after["ice"] == "connected"
        and after["packets"] > before["packets"] + 50
    ):
        await asyncio.sleep(0.1)
        after = await _transport(page)
    if after["ufrag"] == before["ufrag"] or after["ice"] != "connected":
        raise CheckFailed(f"ICE restart did not complete: before {before}, after {after}")
    if after["packets"] <= before["packets"] + 50:
        raise CheckFailed(f"no audio after the ICE restart: before {before}, after {after}")
    if after["dtls"] != "connected" or before["dtls"] != "connected":
        raise CheckFailed(f"DTLS changed over the ICE restart: before {before}, after {after}")
    server = await _server_stats(page, base_url)
    if server["ice_restarts"] != 1 or server["ice_restarts_failed"] != 0:
        raise CheckFailed(f"the server did not complete one restart: {server}")
    return {
        "ICE restart (server)": f"{server['ice_restarts']} completed, its checks took "
        f"{server['ice_restart_checks_ms']} ms",
        "ICE restart": f"ufrag {before['ufrag']} -> {after['ufrag']}, answered in "
        f"{answered_s * 1000:.0f} ms, RTP packets {before['packets']} -> {after['packets']}, "
        f"DTLS {after['dtls']}, selected pair changes {after.get('pairChanges')}",
    }


async def _connect(page: Any) -> None:
    """Press Connect and wait until the page may speak."""
    await page.click("#connect")
    await page.wait_for_function(
        "document.querySelector('#pc-state').textContent === 'connected'", timeout=15_000
    )
    await page.wait_for_selector("#speak:not([disabled])", timeout=10_000)


async def _check(base_url: str, screenshot: Path) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    from media_server.rooms.tokens import Role, TokenSigner
    from voice_bot import RoomBot

    results: dict[str, Any] = {}
    page_errors: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            await page.add_init_script(PEER_RECORDER)
            await page.goto(base_url + "/")

            await _connect(page)
            await page.fill("#text", SHORT_TEXT)
            await page.click("#speak")
            started = await _wait_for_event(page, "speech.started", 20)
            done = await _wait_for_event(page, "speech.done", 30)
            results["speech.started"] = started["text"]
            results["speech.done"] = done["text"]

            packets = 0
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                raw = await _stat(page, "packetsReceived")
                packets = int(raw) if raw and raw.isdigit() else 0
                if packets > 0:
                    break
                await asyncio.sleep(0.25)
            results["packetsReceived"] = packets
            results["time_to_first_audio"] = await _stat(page, "Time to first audio (last)")
            results["jitter"] = await _stat(page, "jitter")
            results["server_frames_sent"] = await _stat(page, "frames_sent")
            if packets <= 0:
                raise CheckFailed("inbound-rtp packetsReceived never went above 0")

            # Streamed text: word-by-word text.delta messages, as from an LLM, at 1.5x speed.
            await page.check("#as-deltas")
            await page.fill("#text", "Words arrive one at a time, and speech starts early.")
            await page.click("#speak")
            streamed = await _wait_for_event(page, "speech.done", 30, contains="id=c2")
            results["streamed speech.done"] = streamed["text"]
            await page.uncheck("#as-deltas")

            # Ctrl+Enter speaks too; Stop during a long sentence cancels it.
            await page.fill("#text", LONG_TEXT)
            await page.press("#text", "Control+Enter")
            await _wait_for_event(page, "speech.started", 20)
            await page.wait_for_selector("#stop:not([disabled])", timeout=5_000)
            await page.wait_for_timeout(1000)
            # mid-utterance: the session carries on, and Stop still works after
            results.update(await _restart_ice(page, base_url))
            await page.click("#stop")
            cancelled = await _wait_for_event(page, "speech.cancelled", 10)
            results["speech.cancelled"] = cancelled["text"]

            await page.wait_for_timeout(1200)  # one more stats tick for the screenshot
            await page.screenshot(path=str(screenshot), full_page=True)
            # Chromium offers RED and sends an RTCP receiver report every few seconds:
            # the server answered RED and its link adaptor has read the page's reports
            results["RED negotiated"] = await _stat(page, "RED negotiated")
            results["link reports"] = await _stat(page, "link reports")
            if results["RED negotiated"] != "true":
                raise CheckFailed(f"RED was not negotiated: {results['RED negotiated']}")
            if not (results["link reports"] or "0").isdigit() or results["link reports"] == "0":
                raise CheckFailed(f"no RTCP report reached the link adaptor: {results}")

            errors = [e for e in await _log_entries(page) if e["level"] == "error"]
            if errors:
                raise CheckFailed(f"the page logged errors: {errors}")
            if page_errors:
                raise CheckFailed(f"JavaScript errors: {page_errors}")

            await page.click("#disconnect")
            await page.wait_for_selector("#connect:not([disabled])", timeout=5_000)

            # A room: the page joins as a listener with a token; a bot speaks there.
            await page.fill("#room", ROOM)
            await page.fill(
                "#token", TokenSigner(SECRET.encode()).issue(ROOM, Role.LISTENER, "page")
            )
            await page.click("#connect")
            await _wait_for_event(page, "room.joined", 15)
            bot_token = TokenSigner(SECRET.encode()).issue(ROOM, Role.BOT, "check-bot")
            async with RoomBot(base_url, ROOM, bot_token) as bot:
                said = await bot.say("Hello to everyone in the room.")
                await bot.wait_for("speech.done", said)
            heard = await _wait_for_event(page, "speech.done", 10, contains="owner")
            results["room speech.done"] = heard["text"]
            await page.screenshot(path=str(screenshot.with_name(screenshot.stem + "-room.png")))
            await page.click("#disconnect")
        finally:
            await browser.close()
    return results


async def _check_operator_token(base_url: str) -> dict[str, Any]:
    """A server with ``VMS_API_TOKEN``: without the token the page is refused (and says
    why); with it typed into the token field, a 1:1 session speaks and ends cleanly."""
    from playwright.async_api import async_playwright

    results: dict[str, Any] = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(base_url + "/")
            await page.click("#connect")
            refused = await _wait_for_event(page, REFUSED, 15)
            if "token_required" not in refused["text"]:
                raise CheckFailed(f"without the token: {refused}")
            results["without the operator token"] = refused["text"]
            await page.wait_for_selector("#connect:not([disabled])", timeout=5_000)
            await page.fill("#token", API_TOKEN)
            await _connect(page)
            await page.fill("#text", SHORT_TEXT)
            await page.click("#speak")
            done = await _wait_for_event(page, "speech.done", 30)
            results["with the operator token: speech.done"] = done["text"]
            await page.wait_for_timeout(1200)  # a stats tick: GET .../stats with the token
            if await _stat(page, "frames_sent") in (None, ""):
                raise CheckFailed("the session's stats were not readable with its token")
            await page.click("#disconnect")
            await page.wait_for_selector("#connect:not([disabled])", timeout=5_000)
            errors = [
                e for e in await _log_entries(page)
                if e["level"] == "error" and e["kind"] != REFUSED
            ]  # fmt: skip
            if errors:
                raise CheckFailed(f"the page logged errors: {errors}")
        finally:
            await browser.close()
    return results


async def _sessions_left(base_url: str) -> int:
    from aiohttp import ClientSession

    async with ClientSession() as http:
        deadline = time.monotonic() + 5
        while True:
            async with http.get(base_url + "/healthz") as response:
                sessions = int((await response.json())["sessions"])
            if sessions == 0 or time.monotonic() > deadline:
                return sessions
            await asyncio.sleep(0.1)


async def _serve(settings: Any) -> tuple[Any, str]:
    from aiohttp import web

    from signaling.app import KEEPALIVE_TIMEOUT_S, create_app

    runner = web.AppRunner(create_app(settings), keepalive_timeout=KEEPALIVE_TIMEOUT_S)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.port).start()
    return runner, f"http://127.0.0.1:{settings.port}"


async def _run(screenshot: Path) -> int:
    from media_server.config import Settings

    loopback = ("127.0.0.1",)
    settings = Settings(port=_free_port(), ice_host_addresses=loopback, token_secret=SECRET)
    runner, base_url = await _serve(settings)
    try:
        results = await _check(base_url, screenshot)
        results["server_sessions_after_disconnect"] = sessions = await _sessions_left(base_url)
        if sessions != 0:
            raise CheckFailed(f"{sessions} session(s) still open after Disconnect")
    except CheckFailed as exc:
        _say(f"browser check FAILED: {exc}", error=True)
        return 1
    finally:
        await runner.cleanup()
    guarded = Settings(port=_free_port(), ice_host_addresses=loopback, api_token=API_TOKEN)
    runner, base_url = await _serve(guarded)
    try:
        results.update(await _check_operator_token(base_url))
        sessions = await _sessions_left(base_url)
        if sessions != 0:
            raise CheckFailed(f"{sessions} session(s) still open after Disconnect (token)")
    except CheckFailed as exc:
        _say(f"browser check FAILED (operator token): {exc}", error=True)
        return 1
    finally:
        await runner.cleanup()
    _say(json.dumps(results, indent=2))
    _say(f"browser check passed; screenshot: {screenshot}")
    return 0


def _say(message: str, *, error: bool = False) -> None:
    print(message, file=sys.stderr if error else sys.stdout)  # noqa: T201


def main(argv: list[str] | None = None) -> int:
    # Run as a script, only tests/ is on sys.path; the packages live at the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    args = sys.argv[1:] if argv is None else argv
    screenshot = Path(args[0] if args else "/tmp/webclient-check.png")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _say("browser check skipped: the 'playwright' Python package is not installed")
        return 0
    if not CHROMIUM.exists():
        _say(f"browser check skipped: {CHROMIUM} is missing (apt-get install chromium)")
        return 0
    return asyncio.run(_run(screenshot))


if __name__ == "__main__":
    sys.exit(main())
