"""Locust load test of the TTS APIs: ``POST /tts`` (streamed audio) and ``/tts/ws``.

Run from the repository root (docs/operations.md, Load testing, has the whole story)::

    locust -f loadtest/locustfile.py --headless -u 4 -r 2 -t 60s --host http://127.0.0.1:8080
    locust -f loadtest/locustfile.py --headless -u 4 -r 2 -t 60s --host ... WsTtsUser

Time to first audio (TTFA) is its own entry (type ``TTFA``) beside each request's, because
it is what a listener waits for and what an operator scales on: the average above
:data:`TTFA_SCALE_MS` is the signal to add a replica (a warning; a failure with
``VMS_LOADTEST_STRICT=1``), and failures above :data:`FAILURE_RATIO_ALERT` of the requests
make the exit code 1. One address sends everything here, so the server's per-client bounds
must be lifted or the operator token sent (``VMS_API_TOKEN``): see the docs.

Locust runs on gevent: this file uses blocking clients (requests, websocket-client) that
gevent makes cooperative, never asyncio.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from typing import Any, Final

import websocket
from locust import HttpUser, User, between, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

logger = logging.getLogger(__name__)

TTFA_SCALE_MS: Final = 300.0
"""Average time to first audio above which the service needs another replica."""
FAILURE_RATIO_ALERT: Final = 0.01
"""Share of failed requests above which the run fails (exit code 1): alert on it."""
STREAM_TIMEOUT_S: Final = 30.0
"""Longest wait for any piece of a response (connect, first audio, next chunk, next event)."""
CHUNK_BYTES: Final = 8192
TTFA: Final = "TTFA"
"""The ``request_type`` of every time-to-first-audio entry."""
HTTP_STREAM_NAME: Final = "/tts (whole stream)"
HTTP_TTFA_NAME: Final = "/tts first audio"
WS_CONNECT_NAME: Final = "/tts/ws connect"
WS_UTTERANCE_NAME: Final = "/tts/ws utterance"
WS_TTFA_NAME: Final = "/tts/ws first audio"
WS_PROTOCOL: Final = "vms"
WS_TOKEN_PREFIX: Final = "vms.token."
UTTERANCE_ID: Final = "load-1"
"""One ``say`` per connection, so one id serves."""

SENTENCES: Final = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "Your order has shipped and should arrive on Thursday.",
    "Thanks for calling, how can I help you today?",
)


def api_token() -> str | None:
    """The operator token (``VMS_API_TOKEN``), if the server needs one; with it the
    server counts none of the per-client bounds."""
    return os.environ.get("VMS_API_TOKEN") or None


def strict() -> bool:
    return os.environ.get("VMS_LOADTEST_STRICT", "") == "1"


def elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def error_text(body: bytes) -> str:
    """The server's JSON error as ``code: message``, or the start of the body."""
    try:
        data = json.loads(body)
        return f"{data['error']}: {data['message']}"
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")


class HttpTtsUser(HttpUser):
    """``POST /tts`` with a sentence, the audio read as it streams in.

    The request's entry (:data:`HTTP_STREAM_NAME`) times the whole stream, from sending
    the request to the last byte; :data:`HTTP_TTFA_NAME` times the first audio bytes
    (the server answers only once the engine's first chunk exists, so the status line
    and the first audio arrive together).
    """

    weight = 1
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        token = api_token()
        if token is not None:
            self.client.headers["Authorization"] = f"Bearer {token}"

    @task
    def speak(self) -> None:
        text = random.choice(SENTENCES)
        start = time.perf_counter()
        with self.client.post(
            "/tts",
            json={"text": text, "format": "pcm"},
            name=HTTP_STREAM_NAME,
            stream=True,
            catch_response=True,
            timeout=STREAM_TIMEOUT_S,
        ) as resp:
            if resp.status_code == 0:  # no answer at all: refused, reset, timed out
                resp.failure(f"no response: {resp.error!r}")
                return
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code} {error_text(resp.content)}")
                return
            received = 0
            first_ms: float | None = None
            try:
                for chunk in resp.iter_content(CHUNK_BYTES):
                    if chunk and first_ms is None:
                        first_ms = elapsed_ms(start)
                        self.environment.events.request.fire(
                            request_type=TTFA,
                            name=HTTP_TTFA_NAME,
                            response_time=first_ms,
                            response_length=len(chunk),
                            exception=None,
                            context={},
                        )
                    received += len(chunk)
            except Exception as exc:  # a reset or cut stream is this request's failure
                # (no byte count in the message: Locust groups failures by it)
                resp.failure(f"stream broken: {exc!r}")
                return
            finally:
                resp.request_meta["response_time"] = elapsed_ms(start)
                resp.request_meta["response_length"] = received
            if received == 0:
                resp.failure("200 with no audio")
            elif received % 2:
                resp.failure("an odd byte count: not whole 16-bit samples")
            else:
                resp.success()


class SocketFailure(Exception):
    """The upgrade was refused, or the server refused the ``say`` or broke it off."""


class WsTtsUser(User):
    """One ``/tts/ws`` connection per task: ``ready``, one ``say``, its audio until
    ``speech.done``.

    Entries: :data:`WS_CONNECT_NAME` (the upgrade and the ``ready`` event),
    :data:`WS_TTFA_NAME` (``say`` to the first binary audio message) and
    :data:`WS_UTTERANCE_NAME` (``say`` to ``speech.done``). An ``error`` event, a close
    or a timeout fails the utterance.
    """

    weight = 1
    wait_time = between(0.5, 2.0)

    def ws_url(self) -> str:
        base = (self.host or "").rstrip("/")
        if base.startswith("https://"):
            return "wss://" + base.removeprefix("https://") + "/tts/ws?format=pcm"
        return "ws://" + base.removeprefix("http://") + "/tts/ws?format=pcm"

    def report(
        self, name: str, start: float, length: int, exception: Exception | None = None
    ) -> None:
        self.environment.events.request.fire(
            request_type=TTFA if name == WS_TTFA_NAME else "WS",
            name=name,
            response_time=elapsed_ms(start),
            response_length=length,
            exception=exception,
            context={},
        )

    @task
    def speak(self) -> None:
        token = api_token()
        # the browser's way to send the token (a subprotocol), which every client may use
        protocols = [WS_PROTOCOL, WS_TOKEN_PREFIX + token] if token else None
        start = time.perf_counter()
        try:
            ws = websocket.create_connection(
                self.ws_url(), timeout=STREAM_TIMEOUT_S, subprotocols=protocols
            )
        except websocket.WebSocketBadStatusException as exc:  # the server's JSON error
            body = exc.resp_body if isinstance(exc.resp_body, bytes) else b""
            refused = SocketFailure(f"HTTP {exc.status_code} {error_text(body)}")
            self.report(WS_CONNECT_NAME, start, 0, refused)
            return
        except Exception as exc:
            self.report(WS_CONNECT_NAME, start, 0, exc)
            return
        try:
            try:
                ready = json.loads(ws.recv())
                if ready.get("type") != "ready":
                    raise SocketFailure(f"expected 'ready', got {ready}")
            except Exception as exc:
                self.report(WS_CONNECT_NAME, start, 0, exc)
                return
            self.report(WS_CONNECT_NAME, start, 0)
            self.say(ws, UTTERANCE_ID)
        finally:
            ws.close()

    def say(self, ws: websocket.WebSocket, utterance_id: str) -> None:
        start = time.perf_counter()
        received = 0
        try:
            ws.send(
                json.dumps({"type": "say", "id": utterance_id, "text": random.choice(SENTENCES)})
            )
            while True:
                message: Any = ws.recv()
                if isinstance(message, bytes):
                    if received == 0 and message:
                        self.report(WS_TTFA_NAME, start, len(message))
                    received += len(message)
                    continue
                if not message:  # websocket-client's answer to a close frame
                    raise SocketFailure("closed before speech.done")
                event = json.loads(message)
                kind = event.get("type")
                if kind == "speech.done" and event.get("id") == utterance_id:
                    break
                if kind in ("error", "speech.cancelled"):
                    raise SocketFailure(
                        f"{kind} {event.get('error', '')}: {event.get('message', '')}".strip()
                    )
            if received == 0:
                raise SocketFailure("speech.done with no audio")
        except Exception as exc:
            self.report(WS_UTTERANCE_NAME, start, received, exc)
            return
        self.report(WS_UTTERANCE_NAME, start, received)


def write_summary(environment: Environment, path: str) -> None:
    """Every entry's final figures as JSON, for ``loadtest.ci``: Locust's own CSV is
    rewritten once a second, so it may miss the last requests of a run."""
    rows = [
        {
            "type": entry.method,
            "name": entry.name,
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "average_ms": entry.avg_response_time,
            "p50_ms": entry.get_response_time_percentile(0.5),
            "p95_ms": entry.get_response_time_percentile(0.95),
            "max_ms": entry.max_response_time,
        }
        for entry in [*environment.stats.entries.values(), environment.stats.total]
    ]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)


def request_failure_ratio(environment: Environment) -> tuple[int, int]:
    """Failures and requests over the request entries, TTFA left out: a TTFA entry is
    recorded only for a request that got audio, so counting it would halve the ratio."""
    entries = [e for e in environment.stats.entries.values() if e.method != TTFA]
    return sum(e.num_failures for e in entries), sum(e.num_requests for e in entries)


@events.quitting.add_listener
def check_thresholds(environment: Environment, **_kwargs: Any) -> None:
    """Locust's ``--exit-code-on-error``, with the operator's thresholds: failures above
    1 % fail the run; an average TTFA above 300 ms is a scaling signal (a warning, a
    failure with ``VMS_LOADTEST_STRICT=1``)."""
    if isinstance(environment.runner, WorkerRunner):
        return  # the master holds the whole run's figures and decides
    code = 0
    # at quitting the users have stopped (``--stop-timeout`` let them end their tasks):
    # these are the run's final figures
    failures, requests = request_failure_ratio(environment)
    if requests == 0:
        logger.error("FAIL: no requests were made")
        code = 1
    elif failures / requests > FAILURE_RATIO_ALERT:
        logger.error(
            "FAIL: %d of %d requests failed (%.1f %%, over %.0f %%): alert",
            failures,
            requests,
            100 * failures / requests,
            100 * FAILURE_RATIO_ALERT,
        )
        code = 1
    for entry in environment.stats.entries.values():
        if entry.method != TTFA or entry.num_requests == 0:
            continue
        average_ms = entry.avg_response_time
        if average_ms > TTFA_SCALE_MS:
            logger.warning(
                "%s: %s average %.0f ms over %.0f ms: add a replica",
                "FAIL" if strict() else "SCALE",
                entry.name,
                average_ms,
                TTFA_SCALE_MS,
            )
            if strict():
                code = 1
        else:
            logger.info(
                "%s: average %.0f ms (within %.0f ms)", entry.name, average_ms, TTFA_SCALE_MS
            )
    environment.process_exit_code = code
    summary_path = os.environ.get("VMS_LOADTEST_SUMMARY")
    if summary_path:
        write_summary(environment, summary_path)
