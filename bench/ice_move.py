"""A listener whose address changes mid-utterance (Wi-Fi -> cellular): the bundled web
client in Chromium restarts ICE, and how long the listener hears nothing.

Run from the repository root, as root::

    python -m bench.ice_move [--quick] [--runs N]

The link is ``bench.lossy``'s (``bench/_netem.py``: two network namespaces, a relay between
their TUN devices; here no loss and 25 ms each way). Per run: a fresh server (ours) in the
server namespace, a fresh Chromium in the client one loading the server's own page (``/``),
Connect, a warm-up say, then a long say; 2 s after its speech.started the client's address
changes (a new one is added, the old one removed: sockets bound to it are dead). The page
notices (no audio packet for 1 s while speech plays; else ICE ``disconnected`` for 2 s, or
``failed``), restarts ICE (WHEP ``PATCH`` ``If-Match: *``) and the audio comes back. A script
injected before the page's own taps the remote track in an AudioWorklet (audible: above -45
dBFS) and records ICE states, restartIce() calls and the page's fetches; nothing in the
product is changed for the bench.

Baselines in the same run (not with ``--quick``: one move, about 30 s): the same say without
the move (its longest pause is speech's own), and the page with ``restartIce`` stubbed out:
what a listener had before ICE restart, and still has against a server without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
from collections.abc import Sequence
from typing import Any, Final

import aiohttp

from bench import _report as report
from bench import browser, lossy
from bench._netem import SERVER_ADDRESS, Condition, Link, link_or_skip
from tests.browser_check import CHROMIUM, CHROMIUM_ARGS, _connect, _log_entries, _wait_for_event

LINK: Final = Condition(delay_ms=25.0, jitter_ms=0.0)
"""No jitter: the server's restart start is then the PATCH's answer less exactly 25 ms."""
TEXT: Final = " ".join(browser.HARVARD[1:9])  # 64 words, about 18 s of speech
"""Long enough that speech goes on after the restart: Chromium takes seconds to notice."""
MOVE_AFTER_S: Final = 2.0
"""From speech.started to the move: mid-utterance, with the voice well into its text."""
AFTER_S: Final = 25.0
"""How long past the move a say may take to end: Chromium fails a dead path in ~30 s."""
NEW_ADDRESS: Final = "10.203.0.{}"  # run i moves to .(10 + i): always a fresh address
INIT: Final = """(() => {
const b = window.__bench = { ice: [], fetches: [], edges: [] };
const TAP = `registerProcessor('tap', class extends AudioWorkletProcessor {
  constructor() { super(); this.on = false; }
  process([input]) {  // an edge when audible starts or stops: [on, context time]
    const ch = input[0] ?? [];
    let at = -1;
    for (let i = 0; i < ch.length; i++) if (Math.abs(ch[i]) > __LEVEL__) { at = i; break; }
    if ((at >= 0) !== this.on) { this.on = at >= 0;
      this.port.postMessage([this.on, currentTime + Math.max(at, 0) / sampleRate]); }
    return true;
  }
});`;
async function tap(stream) {
  const ctx = new AudioContext();
  const code = new Blob([TAP], { type: 'text/javascript' });
  await ctx.audioWorklet.addModule(URL.createObjectURL(code));
  const node = new AudioWorkletNode(ctx, 'tap');
  node.port.onmessage = ({ data: [on, t] }) => { const ts = ctx.getOutputTimestamp();
    b.edges.push([on, ts.performanceTime + (t - ts.contextTime) * 1000]); };
  ctx.createMediaStreamSource(stream).connect(node);
  node.connect(ctx.destination);  // pulled by the graph; it outputs silence
  await ctx.resume();
}
const Native = window.RTCPeerConnection;
window.RTCPeerConnection = class extends Native {
  constructor(...args) {
    super(...args);
    for (const kind of ['iceconnectionstate', 'connectionstate'])
      this.addEventListener(`${kind}change`, () => b.ice.push([performance.now(), kind,
        kind === 'connectionstate' ? this.connectionState : this.iceConnectionState]));
    this.addEventListener('track', (e) => tap(new MediaStream([e.track])));
  }
  restartIce() {  // the page's decision to restart (a no-op for the baseline without restart)
    b.ice.push([performance.now(), 'restartIce', 'called']);
    if (!window.__noRestart) super.restartIce();
  }
};
const nativeFetch = window.fetch;
window.fetch = async (url, init = {}) => {
  const r = { method: init.method ?? 'GET', ifMatch: init.headers?.['If-Match'] ?? null,
    sent: performance.now() };
  if (r.method !== 'GET') b.fetches.push(r);
  const response = await nativeFetch(url, init);
  [r.status, r.answered] = [response.status, performance.now()];
  return response;
};
})();""".replace("__LEVEL__", f"{10 ** (browser.LEVEL_DBFS / 20):.6f}")


STATE: Final = "window.__bench.ice.findLast(([, kind]) => kind === 'connectionstate')?.[2]"


def pauses(edges: Sequence[tuple[bool, float]], t0: float) -> list[tuple[float, float]]:
    """Silences between audible stretches that end after ``t0``: (start, end), page ms."""
    out, off = [], None
    for on, t in edges:
        if not on:
            off = t
        elif off is not None:
            out += [(off, t)] * (t > t0)
            off = None
    return out


async def run(link: Link, text: str, move_to: str | None, restart: bool) -> dict[str, Any]:
    """One server, one Chromium, one long say; the client moves to ``move_to`` mid-say."""
    from playwright.async_api import async_playwright

    server = report.ServerProcess(host=SERVER_ADDRESS, netns=link.server_ns)
    out: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession() as http:
            await server.ready(http)
            async with async_playwright() as p:
                secure = f"--unsafely-treat-insecure-origin-as-secure={server.base}"
                chromium = await p.chromium.launch(
                    executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, secure]
                )
                try:
                    page = await chromium.new_page()
                    if not restart:
                        await page.add_init_script("window.__noRestart = true")
                    await page.add_init_script(INIT)
                    await page.goto(f"{server.base}/")
                    await page.fill("#token", report.OPERATOR_TOKEN)
                    await _connect(page)
                    session = await _wait_for_event(page, "whep", 5, contains="session /")
                    for i, say in enumerate((browser.WARM_UP, text), 1):
                        await page.fill("#text", say)
                        await page.click("#speak")
                        await _wait_for_event(page, "speech.started", 30, contains=f"id=c{i}")
                        if i == 1:
                            await _wait_for_event(page, "speech.done", 30, contains="id=c1")
                    await asyncio.sleep(MOVE_AFTER_S)
                    if move_to is not None:
                        link.move_client(move_to)
                    out["moved"] = await page.evaluate("performance.now()")
                    out["move"] = move_to is not None
                    out["end"] = await ended(page)
                    await asyncio.sleep(1.0)  # the tail plays; one more stats tick
                    out.update(await page.evaluate("window.__bench"))
                    out["state"] = await page.evaluate(STATE)
                finally:
                    await chromium.close()
            url = f"{server.base}{session['text'].removeprefix('session ')}/stats"
            async with http.get(url, headers=report.OPERATOR) as resp:
                out["stats"] = await resp.json() if resp.status == 200 else {}
    finally:
        server.stop()
    return out


async def ended(page: Any) -> str:
    """How the long say (c2) ended: speech.done, speech.cancelled, an error, or not at all."""
    for _ in range(int(AFTER_S / 0.2)):
        for entry in await _log_entries(page):
            if entry["kind"] == "error (c2)":
                return "error"
            if entry["kind"] in ("speech.done", "speech.cancelled") and "id=c2" in entry["text"]:
                return entry["kind"]
        await asyncio.sleep(0.2)
    return f"none in {AFTER_S:g} s"


def between(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def figures(r: dict[str, Any]) -> dict[str, float | None | str]:
    """The run's times in ms from the move (the old address gone)."""
    t0, edges = r["moved"], r["edges"]
    bad = [t for t, _, state in r["ice"] if t > t0 and state in ("disconnected", "failed")]
    called = [t for t, kind, _ in r["ice"] if t > t0 and kind == "restartIce"]
    restarts = [f for f in r["fetches"] if f["ifMatch"] == "*" and f["sent"] > t0] or [{}]
    sent, answered = restarts[0].get("sent"), restarts[0].get("answered")
    last = restarts[-1].get("answered")  # the session's ice_restart_checks_ms is the last one's
    checks_ms = r["stats"].get("ice_restart_checks_ms")
    checked = last - LINK.delay_ms + checks_ms if last and checks_ms is not None else None
    if not r["move"]:  # speech's own longest pause after the time of the move
        start, end = max(pauses(edges, t0), key=lambda g: g[1] - g[0], default=(None, None))
    else:  # the detection takes seconds: what plays after the answer came by the new path
        start = max((t for on, t in edges if not on and t < (answered or t0 + 1e9)), default=None)
        end = min((t for on, t in edges if on and answered and t > answered), default=None)
    since = functools.partial(between, t0)
    return {
        "disconn.": since(min(bad, default=None)), "restart": since(min(called, default=None)),
        "PATCH": since(sent), "200": since(answered), "checked": since(checked),
        "audible": since(end), "PATCH→aud": between(sent, end),
        "checks→aud": between(checked, end), "silence": between(start, end), "say": r["end"],
        "restarts": r["stats"].get("ice_restarts"),
        "POSTs": sum(f["method"] == "POST" for f in r["fetches"]), "pc": r["state"] or "-",
        "session": "kept" if r["stats"] else "gone",
    }  # fmt: skip


COLUMNS: Final = ("disconn.", "restart", "PATCH", "200", "checked", "audible", "PATCH→aud",
                  "checks→aud", "silence", "say", "restarts", "POSTs", "pc", "session")  # fmt: skip
LEGEND: Final = """\
ms from the move (the old address removed): disconn. = Chromium's ICE state first
disconnected / failed; restart = the page calls restartIce(); PATCH = its restart PATCH
(If-Match: *) sent; 200 = its answer; checked = the server's new pair nominated (the last
restart's answer - 25 ms link + the session's ice_restart_checks_ms); audible = the first
audible sample after the answer (tap: above -45 dBFS as Chromium plays it); PATCH→aud,
checks→aud = audible - PATCH, - checked; silence = from the last audible sample before the
answer to audible (no move: speech's own longest pause after 2 s in); say = how the long say
ended in the page; restarts = the session's ice_restarts; POSTs = WHEP POSTs (1: the same
session throughout); pc = the page's last peer state; session = its stats URL answers."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = report.command_line("bench.ice_move", __doc__)
    parser.add_argument("--quick", action="store_true", help="1 move, no baselines (CI)")
    parser.add_argument("--runs", type=report.positive(int), help="moves (default 3)")
    args = parser.parse_args(argv)
    if why := lossy.unavailable():
        print(f"bench.ice_move skipped: {why}")
        return 0
    runs = args.runs or (1 if args.quick else 3)
    rows = []
    with contextlib.ExitStack() as stack:
        link = link_or_skip(stack, "bench.ice_move")
        if link is None:
            return 0
        report.print_machine(("playwright", "aiortc", "aioice"), browser.chromium_version())
        print(f"Link: {LINK.describe()}; {len(TEXT.split())} words; move {MOVE_AFTER_S:g} s "
              "after speech.started; nothing pinned\n", flush=True)  # fmt: skip
        realised: dict[str, Any] = {}
        stack.enter_context(link.relay(LINK, realised))
        plan = [("no move", None, True)] * (not args.quick) + [
            (f"move #{i}", NEW_ADDRESS.format(10 + i), True) for i in range(1, runs + 1)
        ]  # fmt: skip
        if not args.quick:
            plan.append(("move, restartIce stubbed", NEW_ADDRESS.format(9), False))
        for name, move_to, restart in plan:
            r = figures(asyncio.run(run(link, TEXT, move_to, restart)))
            cells = [v if isinstance(v, str) else report.fmt(v, 0) for v in map(r.get, COLUMNS)]
            rows.append((name, *cells))
            print(
                f"{name}: " + ", ".join(f"{k} {v}" for k, v in zip(COLUMNS, cells, strict=True)),
                flush=True,
            )
    print()
    print(LEGEND)
    report.print_table("Per run (ms from the move)", ("run", *COLUMNS), rows, left=(0, 10, 13, 14))
    return 0


if __name__ == "__main__":
    sys.exit(main())
