"""Log output for operators: text for a terminal, or one JSON object per line for a shipper.

Both formats carry the ids bound by :mod:`media_server.log_context` (session, room,
listener) and scrub credentials from every line: tokens travel in headers, query strings
and WebSocket subprotocols, and a library's error message may quote any of them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from media_server.config import LOG_FORMATS
from media_server.log_context import LogContextFilter

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The text format's look (what ``logging.basicConfig`` was given before JSON existed)."""

ID_FIELDS: Final = ("session", "room", "listener", "utterance")
"""Ids shown in both formats, in this order, right after ``event``."""

REDACTED: Final = "REDACTED"

SECRET_PATTERNS: Final = (
    re.compile(r"(?i)(\bbearer\s+)[^\s,;'\"]+"),
    re.compile(r"(?i)(token=|secret=)[^&\s'\"]+"),
    re.compile(r"(vms\.token\.)[^\s,;'\"]+"),
)
"""Where tokens travel: ``Authorization: Bearer``, ``?token=`` (and ``VMS_API_TOKEN=``,
``VMS_TOKEN_SECRET=`` in a quoted command line) and the WebSocket subprotocol
``vms.token.<token>``; the first group is kept, the credential replaced."""

MIN_SECRET_CHARS: Final = 8
"""Literal secrets shorter than this are not searched for (they would redact ordinary words)."""

_RECORD_FIELDS: Final = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}
"""Attributes every record has: anything else on a record came from ``extra`` or the context."""


class Redactor:
    """Replaces credentials in a line: the known secrets (the operator token, the join
    token secret) wherever they appear, and any token where tokens travel."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        literal = sorted(
            {s for s in secrets if s is not None and len(s) >= MIN_SECRET_CHARS},
            key=len,
            reverse=True,
        )
        self._literal = re.compile("|".join(map(re.escape, literal))) if literal else None

    def __call__(self, text: str) -> str:
        if self._literal is not None:
            text = self._literal.sub(REDACTED, text)
        for pattern in SECRET_PATTERNS:
            text = pattern.sub(rf"\g<1>{REDACTED}", text)
        return text


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS}


class TextFormatter(logging.Formatter):
    """The familiar text line, with the bound ids as a short ``[session=...]`` suffix."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__(TEXT_FORMAT)
        self._redact = redact or Redactor()

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        ids = [f"{name}={getattr(record, name)}" for name in ID_FIELDS if hasattr(record, name)]
        return f"{line} [{' '.join(ids)}]" if ids else line

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (RFC 3339, UTC, ms), ``level``, ``logger``,
    ``message``, then ``event`` and the ids, anything else given in ``extra``, and
    ``exc`` (the formatted traceback) for an exception."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": self._redact(record.getMessage()),
        }
        extras = _extras(record)
        for name in ("event", *ID_FIELDS):
            if name in extras:
                entry[name] = extras.pop(name)
        for name, value in extras.items():
            entry[name] = self._redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = self._redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc"] = self._redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = self._redact(self.formatStack(record.stack_info))
        return json.dumps(entry, default=str)


def log_handler(
    fmt: str, stream: TextIO | None = None, *, secrets: Iterable[str | None] = ()
) -> logging.Handler:
    """A handler writing ``fmt`` (``text`` or ``json``) to ``stream`` (stderr), with the
    log context's ids and ``secrets`` redacted."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    redact = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    handler.addFilter(LogContextFilter())
    return handler


def configure_logging(level: str, fmt: str, *, secrets: Iterable[str | None] = ()) -> None:
    """Send every log record at ``level`` or above to stderr in ``fmt``; replaces what
    the root logger had (a library's ``basicConfig`` included)."""
    logging.basicConfig(
        level=level.upper(), handlers=[log_handler(fmt, secrets=secrets)], force=True
    )
