"""cancel_and_wait: every owner ends its tasks the same way."""

from __future__ import annotations

import asyncio
import gc

import pytest

from media_server.tasks import cancel_and_wait


async def test_tasks_are_cancelled_and_awaited() -> None:
    ended: list[str] = []

    async def worker(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits
            ended.append(name)

    tasks = [asyncio.create_task(worker(n)) for n in "ab"]
    await asyncio.sleep(0)
    await cancel_and_wait(*tasks, None)
    assert sorted(ended) == ["a", "b"] and all(t.cancelled() for t in tasks)
    await cancel_and_wait()  # nothing to do
    await cancel_and_wait(*tasks)  # already ended: nothing happens


async def test_a_failed_task_is_not_reported_as_never_retrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    del task
    gc.collect()
    assert "never retrieved" not in caplog.text


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    # "task.cancel(); try: await task / except CancelledError: pass" swallowed it: a
    # close that was itself cancelled went on as if nothing had happened
    slow_to_end = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await slow_to_end.wait()

    owned = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    closing = asyncio.create_task(cancel_and_wait(owned))
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    slow_to_end.set()
    await asyncio.wait([owned])
