"""Ending the tasks an object owns: one way, used by every owner."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` (None and finished ones are fine) and wait until each has ended.

    Their own outcome is retrieved and dropped: an owner closing its tasks does not
    care how they ended, and a task that failed was reported where it failed. A
    cancellation of the *caller* while it waits is never swallowed (``try: await
    task / except CancelledError: pass`` would swallow it), so a close that is itself
    cancelled still stops.
    """
    live = [task for task in tasks if task is not None]
    for task in live:
        task.cancel()
    if not live:
        return
    await asyncio.wait(live)
    for task in live:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved
