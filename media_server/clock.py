"""Monotonic time, injectable so pacing can be tested on a fake clock."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
import time
from typing import Final, Protocol

logger = logging.getLogger(__name__)


class Clock(Protocol):
    """Seconds on a clock that never goes backwards, and a way to wait for a moment on it."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class MonotonicClock:
    """``time.monotonic`` with ``asyncio.sleep`` for waiting (never the wall clock).

    asyncio's selector rounds its wait up to whole milliseconds, so a wake-up lands
    anywhere up to 1 ms after the deadline (:class:`PreciseClock` does better on Linux).
    """

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        # asyncio.sleep(0) still yields, so a late pacer never starves the loop.
        await asyncio.sleep(delay if delay > 0 else 0)


_CLOCK_MONOTONIC: Final = 1
_TFD_NONBLOCK: Final = os.O_NONBLOCK
_TFD_CLOEXEC: Final = os.O_CLOEXEC
_TFD_TIMER_ABSTIME: Final = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _TimerFd:
    """One Linux ``timerfd`` on CLOCK_MONOTONIC (``time.monotonic``'s clock), armed
    for an absolute deadline and watched by the event loop."""

    def __init__(self, libc: ctypes.CDLL, loop: asyncio.AbstractEventLoop) -> None:
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd: int = fd
        self._libc = libc
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        loop.add_reader(fd, self._expired)

    def arm(self, deadline: float) -> asyncio.Future[None]:
        ns = max(1, round(deadline * 1e9))
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(ns // 1_000_000_000, ns % 1_000_000_000))
        if self._libc.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None):
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self._waiter = self._loop.create_future()
        return self._waiter

    def disarm(self) -> None:
        self._waiter = None
        self._libc.timerfd_settime(self.fd, 0, ctypes.byref(_Itimerspec()), None)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _expired(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:  # disarmed or re-armed since the loop saw it
            return
        self._wake()

    def close(self) -> None:
        self._wake()  # its sleeper finishes the wait on asyncio.sleep
        if not self._loop.is_closed():
            self._loop.remove_reader(self.fd)
        os.close(self.fd)


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.restype = ctypes.c_int
        libc.timerfd_settime.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


class PreciseClock(MonotonicClock):
    """:class:`MonotonicClock` whose waits end within tens of microseconds of the deadline.

    ``asyncio.sleep`` wakes up to 1 ms late: the selector rounds its timeout up to
    whole milliseconds. Here a wait arms a Linux ``timerfd`` for the absolute
    deadline on the same monotonic clock instead, and the event loop wakes when the
    kernel fires it. Each concurrent waiter gets a timer from a small pool (the
    ticker is one; a room's pacer is another); :meth:`close` releases them. Where
    there is no ``timerfd`` or the loop cannot watch a file descriptor, waits fall
    back to ``asyncio.sleep``.
    """

    def __init__(self) -> None:
        self._libc = _load_libc()
        self._idle: list[_TimerFd] = []
        self._all: list[_TimerFd] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def precise(self) -> bool:
        """False once waits have fallen back to ``asyncio.sleep``."""
        return self._libc is not None

    def _take(self) -> _TimerFd | None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self.close()  # timers belong to one loop
            self._loop = loop
        if self._idle:
            return self._idle.pop()
        assert self._libc is not None
        try:
            timer = _TimerFd(self._libc, loop)
        except (OSError, NotImplementedError) as exc:
            logger.info("no timerfd (%s): pacing waits use asyncio.sleep", exc)
            self._libc = None
            return None
        self._all.append(timer)
        return timer

    async def sleep_until(self, deadline: float) -> None:
        if self._libc is None or deadline <= time.monotonic():
            await super().sleep_until(deadline)
            return
        timer = self._take()
        if timer is None:
            await super().sleep_until(deadline)
            return
        try:
            await timer.arm(deadline)
        finally:
            if timer in self._all:  # not closed meanwhile
                timer.disarm()
                self._idle.append(timer)
        if time.monotonic() < deadline:  # woken by close()
            await super().sleep_until(deadline)

    @property
    def timers(self) -> int:
        """Timer file descriptors held (one per waiter that ever ran at once)."""
        return len(self._all)

    def close(self) -> None:
        for timer in self._all:
            timer.close()
        self._all.clear()
        self._idle.clear()
        self._loop = None
