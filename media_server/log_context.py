"""Log context: the ids (session, room, listener) that every log line of their code carries.

A session's or room's code logs from many places (its tasks, aiortc's callbacks, the
speech producer) that do not know which session they serve. The ids are bound once,
where the session or room is created; asyncio copies the context into every task
created inside, so all their log lines carry them without passing ids down every call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Final

LogIds = Mapping[str, str]
"""Field name to id, e.g. ``{"session": "x1Y..."}``; read-only."""

EMPTY: Final[LogIds] = MappingProxyType({})

_log_ids: Final[ContextVar[LogIds]] = ContextVar("vms_log_ids", default=EMPTY)
"""The one variable; each context (task) has its own value, never mutated in place."""


def current_log_ids() -> LogIds:
    """The ids bound where this code runs (kept by objects whose code later runs elsewhere,
    e.g. a session's pacer driven by the shared ticker task)."""
    return _log_ids.get()


@contextmanager
def log_context(**ids: str | None) -> Iterator[LogIds]:
    """Bind ``ids`` (None values are skipped) on top of those already bound, for the
    code inside and every task it creates; the binding ends with the block."""
    merged = {**_log_ids.get(), **{k: v for k, v in ids.items() if v is not None}}
    bound: LogIds = MappingProxyType(merged)
    token = _log_ids.set(bound)
    try:
        yield bound
    finally:
        _log_ids.reset(token)


class LogContextFilter(logging.Filter):
    """Copies the bound ids onto each record (as attributes, like ``extra``) when it is
    logged, so any formatter can show them; a field given in ``extra`` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _log_ids.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True
