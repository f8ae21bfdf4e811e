"""Runner: serve the app until SIGTERM/SIGINT, drain the speech in progress, then close.

``web.run_app`` stops listening on the first signal and cuts every session mid-word.
Here the listening socket stays open through the drain, so ``/readyz`` answers ``503``
and new clients are refused with ``Retry-After`` while the sentences already queued
play to their end (``MediaServer.drain``); only then is HTTP shut down and the media
server closed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Final

from aiohttp import web

from media_server import Settings
from media_server.tasks import cancel_and_wait
from signaling.access_log import RedactingAccessLogger
from signaling.app import KEEPALIVE_TIMEOUT_S
from signaling.keys import MEDIA_KEY

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S: Final = 0.5
"""After the drain, HTTP requests still running (a ``/tts`` client that stopped reading,
an open ``/tts/ws`` socket) get this long to end before aiohttp cancels them. Short: the
drain has already waited for what was worth waiting for. aiohttp waits it twice (once
more after cancelling), so the process ends about 1 s after the drain, plus the media
server's close and what is left of a sentence the engine is synthesising."""
STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """SIGTERM and SIGINT as events on the loop: the first starts the drain, the second
    cuts it short (an operator who means *now*)."""

    def __init__(self) -> None:
        self.received = 0
        self.first = asyncio.Event()
        self.second = asyncio.Event()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._received, sig)

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)

    def _received(self, sig: signal.Signals) -> None:
        self.received += 1
        if self.received == 1:
            logger.info(
                "%s: draining (send it again to stop at once)",
                sig.name,
                extra={"event": "server.draining"},
            )
            self.first.set()
        else:
            logger.info("%s again: stopping without waiting for the drain", sig.name)
            self.second.set()


async def serve(app: web.Application, settings: Settings) -> int:
    """Serve ``app`` on ``settings.host``/``port`` until a stop signal; the exit code."""
    loop = asyncio.get_running_loop()
    signals = StopSignals()
    signals.install(loop)
    runner = web.AppRunner(
        app,
        keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        access_log_class=RedactingAccessLogger,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    try:
        await runner.setup()  # starts the MediaServer (cleanup_ctx)
        try:
            site = web.TCPSite(runner, settings.host, settings.port)
            await site.start()
            logger.info("serving on %s", site.name, extra={"event": "server.listening"})
            await signals.first.wait()
            await _drain(app, settings.drain_timeout_s, signals)
        finally:
            await runner.cleanup()  # stops listening, cuts requests, closes the MediaServer
    finally:
        signals.uninstall(loop)
    logger.info("stopped")
    return 0


async def _drain(app: web.Application, timeout_s: float, signals: StopSignals) -> None:
    """Wait for ``MediaServer.drain``, or for a second signal."""
    drain = asyncio.ensure_future(app[MEDIA_KEY].drain(timeout_s))
    second = asyncio.ensure_future(signals.second.wait())
    try:
        await asyncio.wait((drain, second), return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(second)
        if not drain.done():
            await cancel_and_wait(drain)
    if not drain.cancelled() and (failure := drain.exception()) is not None:
        # the process still stops: closing is all that is left to do
        logger.error("drain failed; closing anyway", exc_info=failure)


def run(app: web.Application, settings: Settings) -> int:
    """``serve`` on a new event loop: the process's exit code."""
    return asyncio.run(serve(app, settings))
