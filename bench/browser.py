"""Time to first audio as a real browser hears it: headless Chromium against the server.

Run from the repository root::

    python -m bench.browser [--quick] [--runs N] [--mode pinned|shared|both]

``voice-media-server`` (``python -m signaling``, ``VMS_DEBUG_TIMINGS=1``) and the baseline
(``bench/_naive_aiortc.py``: the whole text synthesised, then played by an aiortc track) each
in a child process; Chromium loads this bench's own page on the server's origin, connects
over WHEP and sends one ``say`` per run. The page taps the remote track in an AudioWorklet
and times the first sample above -45 dBFS as Chromium plays it; ``getStats()`` gives the
jitter buffer's figures. ``pinned``: the server on core 0, Chromium (and this script) on
core 1; ``shared``: nothing pinned.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

import aiohttp
import numpy as np

from bench import _report as report
from tests.browser_check import CHROMIUM, CHROMIUM_ARGS

LEVEL_DBFS: Final = -45.0
WARM_UP: Final = "Warming up the voice before the measured sentences."
HARVARD: Final = (  # Harvard sentences (IEEE 1969), list 1: alike in length, fresh each run
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
)
SERVERS: Final = {  # name: (module, env)
    "ours": ("signaling", {"VMS_DEBUG_TIMINGS": "1"}),
    "naive aiortc": ("bench._naive_aiortc", {}),
}

PAGE: Final = """<!doctype html><audio muted autoplay></audio><script>
const TAP = `registerProcessor('tap', class extends AudioWorkletProcessor {
  constructor() { super(); this.armed = this.recording = false;
    this.port.onmessage = (e) => { [this.armed, this.recording] = e.data; }; }
  process([input]) {
    const ch = input[0];
    if (this.recording) this.port.postMessage(ch ? ch.slice() : new Float32Array(128));
    if (this.armed && ch) for (let i = 0; i < ch.length; i++) if (Math.abs(ch[i]) > __LEVEL__) {
      this.armed = false; this.port.postMessage(currentTime + i / sampleRate); break;
    }
    return true;
  }
});`;
const KEYS = ['jitterBufferDelay', 'jitterBufferEmittedCount', 'concealedSamples',
  'insertedSamplesForDeceleration', 'removedSamplesForAcceleration', 'packetsLost',
  'silentConcealedSamples', 'totalSamplesReceived', 'fecPacketsReceived', 'fecPacketsDiscarded',
  'bytesReceived'];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const until = (ok, target, type) => new Promise((resolve) => {
  const check = () => ok() && resolve(); target.addEventListener(type, check); check(); });
let pc, dc, ctx, tap, onEvent = () => {};

async function connect(token) {  // WHEP: recvonly audio + a data channel, ICE gathered first
  ctx = new AudioContext();
  const worklet = new Blob([TAP], { type: 'text/javascript' });
  await ctx.audioWorklet.addModule(URL.createObjectURL(worklet));
  tap = new AudioWorkletNode(ctx, 'tap');
  tap.connect(ctx.destination);  // pulled by the graph; it outputs silence
  pc = new RTCPeerConnection();
  pc.addTransceiver('audio', { direction: 'recvonly' });
  dc = pc.createDataChannel('control');
  dc.onmessage = (e) => onEvent(JSON.parse(e.data), performance.now());
  pc.ontrack = (e) => {  // Chrome pulls WebRTC audio only for a stream with a sink
    const stream = e.streams[0] ?? new MediaStream([e.track]);
    document.querySelector('audio').srcObject = stream;
    ctx.createMediaStreamSource(stream).connect(tap);
  };
  await pc.setLocalDescription(await pc.createOffer());
  await until(() => pc.iceGatheringState === 'complete', pc, 'icegatheringstatechange');
  const headers = { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` };
  const r = await fetch('/whep', { method: 'POST', headers, body: pc.localDescription.sdp });
  if (r.status !== 201) throw new Error(`POST /whep: HTTP ${r.status} ${await r.text()}`);
  await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
  await until(() => pc.connectionState === 'connected', pc, 'connectionstatechange');
  await until(() => dc.readyState === 'open', dc, 'open');
  await ctx.resume();
  return `${ctx.sampleRate} Hz, base latency ${ctx.baseLatency * 1000} ms`;
}

async function inbound() {
  for (const s of (await pc.getStats()).values())
    if (s.type === 'inbound-rtp' && s.kind === 'audio') return s;
  return {};
}

function pcm16(blocks) {  // the worklet's Float32 blocks as base64 little-endian int16
  const pcm = new Int16Array(blocks.reduce((n, b) => n + b.length, 0));
  let at = 0, text = '';
  for (const b of blocks) for (const x of b) pcm[at++] = Math.max(-1, Math.min(1, x)) * 32767;
  const bytes = new Uint8Array(pcm.buffer);
  for (let i = 0; i < bytes.length; i += 0x8000)
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

async function say([id, text, record]) {  // ms from the say; getStats deltas over the run
  const before = await inbound(), out = {}, blocks = [];
  const heard = new Promise((resolve) => { tap.port.onmessage = (e) => {
    if (typeof e.data !== 'number') return blocks.push(e.data);  // recording what plays
    const ts = ctx.getOutputTimestamp();  // the context time of the sample -> when it is output
    resolve([performance.now(), ts.performanceTime + (e.data - ts.contextTime) * 1000]); }; });
  const done = new Promise((resolve, reject) => { onEvent = (event, at) => {
    if (event.type === 'error') reject(new Error(JSON.stringify(event)));
    if (event.id !== id) return;
    if (event.type === 'speech.started') [out.started, out.event] = [at, event];
    if (event.type === 'speech.done') resolve(); }; });
  tap.port.postMessage([true, !!record]);
  const said = performance.now();
  dc.send(JSON.stringify({ type: 'say', id, text }));
  await done;
  const [tapped, played] = await Promise.race([heard, sleep(2000).then(() => [null, null])]);
  await sleep(600);  // the tail leaves the jitter buffer; the next run starts from silence
  tap.port.postMessage([false, false]);
  const after = await inbound();
  out.seconds = (performance.now() - said) / 1000;
  if (record) [out.pcm, out.rate] = [pcm16(blocks), ctx.sampleRate];
  for (const k of KEYS) out[k] = (after[k] ?? NaN) - (before[k] ?? 0);
  out.jitterBufferMs = 1000 * out.jitterBufferDelay / out.jitterBufferEmittedCount;
  out.started -= said;
  [out.tapped, out.audible] = tapped === null ? [null, null] : [tapped - said, played - said];
  return out;
}
</script>""".replace("__LEVEL__", f"{10 ** (LEVEL_DBFS / 20):.6f}")


def descendants(pid: int) -> set[int]:
    """``pid``'s child processes, theirs and so on: Chromium's tree, under its driver."""
    kids = set()
    for children in glob.glob(f"/proc/{pid}/task/*/children"):
        with contextlib.suppress(OSError), open(children, encoding="ascii") as f:
            kids |= {int(kid) for kid in f.read().split()}
    return kids.union(*map(descendants, kids))


def threads(pids: Collection[int]) -> list[int]:
    """Every thread id of ``pids``: what sched_setaffinity pins, one at a time."""
    return [int(t.rsplit("/", 1)[1]) for pid in pids for t in glob.glob(f"/proc/{pid}/task/*")]


def cores(pids: Collection[int]) -> str:
    """The processes' count and the CPU sets their threads may run on: pinning in force."""
    masks = set()
    for tid in threads(pids):
        with contextlib.suppress(OSError):
            masks.add(",".join(map(str, sorted(os.sched_getaffinity(tid)))))
    return f"{len(pids)} processes, cores {' / '.join(sorted(masks))}"


def pin_threads(server: int, browser: Collection[int]) -> None:
    """Every thread of the server onto core 0, the browser's onto 1: ONNX Runtime's worker
    (Piper) and Chromium's GPU process pin their threads themselves, outside their mask."""
    for tids, core in ((threads([server]), 0), (threads(browser), 1)):
        for tid in tids:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, {core})


def cpu_clocks(server: int, browser: Collection[int]) -> tuple[float, ...]:
    """Wall time, the machine's busy CPU, the server's, the browser's: the machine is shared."""
    cpu = (report.process_cpu_s(server), sum(map(report.process_cpu_s, browser)))
    return (time.monotonic(), report.system_busy_s(), *cpu)


async def measure(
    server: str, pinned: bool, texts: Sequence[str], env: Mapping[str, str] | None = None,
    host: str = report.LOOPBACK, netns: str | None = None, record: bool = False,
) -> tuple[list[dict[str, Any]], str]:  # fmt: skip
    """One say per text (after one warm-up) from a fresh Chromium to a fresh server process
    (``env`` on top of the server's own, on ``host`` in ``netns``); with ``record``, each
    result also carries what Chromium played (``pcm``: base64 int16 at ``rate`` Hz)."""
    from playwright.async_api import async_playwright

    every = set(range(os.cpu_count() or 1))
    module, server_env = SERVERS[server]
    process = report.ServerProcess(
        {**server_env, **(env or {})}, module=module, cores={0} if pinned else None, host=host,
        netns=netns,
    )  # fmt: skip
    pid = process.process.pid
    pinned_at_start = ""
    os.sched_setaffinity(0, {1} if pinned else every)  # Playwright's driver, Chromium inherit it
    try:
        async with aiohttp.ClientSession() as http:
            await process.ready(http)
        async with async_playwright() as p:
            secure = f"--unsafely-treat-insecure-origin-as-secure={process.base}"  # AudioWorklet
            args = [*CHROMIUM_ARGS, *([secure] if host != report.LOOPBACK else [])]
            browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=args)
            try:
                page = await browser.new_page()
                url = f"{process.base}/bench-page"
                await page.route(url, lambda r: r.fulfill(body=PAGE, content_type="text/html"))
                await page.goto(url)
                audio = await page.evaluate("connect", report.OPERATOR_TOKEN)
                said, clocks = [], []
                for i, text in enumerate([WARM_UP, *texts]):
                    run = page.evaluate("say", [f"r{i}", text, record and i > 0])
                    said.append(await asyncio.wait_for(run, 60))
                    if 0 < i < len(texts):
                        continue
                    tree = descendants(os.getpid()) - {pid}  # Playwright's driver, Chromium
                    where = f"server {cores([pid])}, Chromium + driver {cores(tree)}"
                    clocks.append(cpu_clocks(pid, tree | {os.getpid()}))
                    if i == 0 and pinned:  # the voice is loaded, Chromium plays: threads exist
                        pin_threads(pid, tree)
                        pinned_at_start = f"after the warm-up {where}, re-pinned;\n  "
            finally:
                await browser.close()
    finally:
        os.sched_setaffinity(0, every)
        process.stop()
    wall, busy, server_s, browser_s = (e - s for s, e in zip(*clocks, strict=True))
    use = f"server {server_s / wall:.2f}, Chromium + bench {browser_s / wall:.2f}, the rest " \
        f"{max(0.0, busy - server_s - browser_s) / wall:.2f}"  # fmt: skip
    mode = "pinned" if pinned else "shared"
    return said[1:], (f"{server}, {mode} (audio {audio})\n  {pinned_at_start}at the end {where}"
                      f"\n  cores busy over the measured runs: {use}")  # fmt: skip


def server_ms(event: dict[str, Any] | None) -> str:
    """The server's own times from the say's receipt: ``server_ms``, else ``timings``."""
    event = event or {}
    if "server_ms" in event:
        times = dict(event["server_ms"])
    elif timings := event.get("timings"):
        received = timings["received_ms"]
        times = {k.removesuffix("_ms"): v - received for k, v in timings.items() if v is not None}
        times.pop("received", None)
    else:
        return "-"
    return " ".join(f"{k} {v:.0f}" for k, v in times.items())


COLUMNS: Final = (  # header, key in the page's result, digits
    ("audible", "audible", 0), ("tap", "tapped", 0), ("speech.started", "started", 0),
    ("jitter buffer", "jitterBufferMs", 1), ("concealed", "concealedSamples", 0),
    ("+decel", "insertedSamplesForDeceleration", 0), ("-accel", "removedSamplesForAcceleration", 0),
    ("lost", "packetsLost", 0),
)  # fmt: skip


def print_runs(title: str, said: Sequence[dict[str, Any]]) -> None:
    rows = [
        (str(i), *(report.fmt(r.get(key), d) for _, key, d in COLUMNS), server_ms(r.get("event")))
        for i, r in enumerate(said, 1)
    ]  # fmt: skip
    headers = ("run", *(h for h, _, _ in COLUMNS), "server ms from receipt")
    report.print_table(title, headers, rows, left=(0, len(headers) - 1))
    sys.stdout.flush()


def print_summary(results: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    rows = []
    for (server, mode), said in results.items():
        for header, key, digits in COLUMNS[:4]:
            values = np.array([r[key] for r in said if r.get(key) is not None], dtype=np.float64)
            if not values.size:
                continue
            p90 = report.fmt(float(np.percentile(values, 90)), digits) if values.size >= 10 else "-"
            spread = f"{values.min():.{digits}f}-{values.max():.{digits}f}"
            median = report.fmt(float(np.median(values)), digits)
            rows.append((server, mode, header, str(values.size), median, spread, p90))
    report.print_table(
        "Summary (ms)", ("server", "mode", "measure", "runs", "median", "min-max", "p90"), rows,
        left=(0, 1, 2),
    )  # fmt: skip


LEGEND: Final = f"""\
Times in ms from the page sending the say: audible = the first sample above {LEVEL_DBFS:g} dBFS
as Chromium plays it (the AudioWorklet's context time, mapped to performance.now() by
getOutputTimestamp()); tap = the worklet's message about it reaching the page;
speech.started = the event's arrival. jitter buffer = jitterBufferDelay / EmittedCount over the
run (inbound-rtp); concealed, +decel, -accel in samples, lost in packets, also over the run.
server ms: ours from VMS_DEBUG_TIMINGS (or server_ms), the baseline's whole synthesis and its
first frame handed to aiortc. Each run is a fresh Harvard sentence, after one warm-up say.
"""


def chromium_version() -> tuple[tuple[str, str]]:
    """The machine table's Chromium row."""
    run = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, check=False)
    return (("Chromium", run.stdout.strip()),)


def main(argv: Sequence[str] | None = None) -> int:
    parser = report.command_line("bench.browser", __doc__)
    parser.add_argument("--quick", action="store_true", help="2 runs, pinned only (CI)")
    parser.add_argument("--runs", type=report.positive(int), help="measured says (default 5)")
    parser.add_argument("--mode", choices=("pinned", "shared", "both"), default=None)
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 5)
    mode = args.mode or ("pinned" if args.quick else "both")
    modes = ("pinned", "shared") if mode == "both" else (mode,)
    if importlib.util.find_spec("playwright") is None or not CHROMIUM.exists():
        print(f"bench.browser skipped: it needs the playwright package and {CHROMIUM}")
        return 0
    if len(os.sched_getaffinity(0)) < 2 and "pinned" in modes:
        print("bench.browser: pinned needs 2 cores; shared only")
        modes = ("shared",)
    report.print_machine(("playwright", "aiortc", "av", "piper-tts"), chromium_version())
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for mode in modes:
        for server in SERVERS:
            texts = [HARVARD[i % len(HARVARD)] for i in range(runs)]
            said, where = asyncio.run(measure(server, mode == "pinned", texts))
            results[server, mode] = said
            print_runs(where, said)
    print(LEGEND)
    print_summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
