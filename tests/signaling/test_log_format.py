"""The log formats: JSON fields, the ids bound by the log context, and redaction."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from media_server.config import ConfigError, Settings, settings_from_env
from media_server.log_context import LogContextFilter, current_log_ids, log_context
from signaling.__main__ import main
from signaling.log_format import (
    REDACTED,
    JsonFormatter,
    Redactor,
    configure_logging,
    log_handler,
)

RFC3339_MS_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
TOKEN = "op-token-0123456789abcdef"


class Captured:
    """A logger whose lines go through :func:`log_handler` into a string."""

    def __init__(self, fmt: str, secrets: tuple[str, ...] = ()) -> None:
        self.stream = io.StringIO()
        self.logger = logging.getLogger(f"tests.log_format.{fmt}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.handler = log_handler(fmt, self.stream, secrets=secrets)
        self.logger.addHandler(self.handler)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]

    def close(self) -> None:
        self.logger.removeHandler(self.handler)


@pytest.fixture
def as_json() -> Iterator[Captured]:
    captured = Captured("json", secrets=(TOKEN,))
    yield captured
    captured.close()


@pytest.fixture
def as_text() -> Iterator[Captured]:
    captured = Captured("text", secrets=(TOKEN,))
    yield captured
    captured.close()


def test_json_line_has_the_fields_in_order(as_json: Captured) -> None:
    as_json.logger.info(
        "session %s created", "s1", extra={"event": "session.created", "session": "s1", "n": 3}
    )
    (line,) = as_json.lines()
    record = json.loads(line)
    assert list(record)[:6] == ["ts", "level", "logger", "message", "event", "session"]
    assert RFC3339_MS_UTC.fullmatch(record["ts"])
    assert record["level"] == "INFO" and record["logger"] == "tests.log_format.json"
    assert record["message"] == "session s1 created"
    assert record["n"] == 3
    assert "exc" not in record


def test_json_exception_has_its_traceback(as_json: Captured) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        as_json.logger.exception("it failed")
    (record,) = as_json.records()
    assert record["level"] == "ERROR"
    assert "Traceback" in record["exc"] and "RuntimeError: boom" in record["exc"]


def test_json_fields_that_are_not_json_become_strings(as_json: Captured) -> None:
    as_json.logger.info("odd", extra={"thing": object(), "nested": {"a": [1, 2]}})
    (record,) = as_json.records()
    assert record["thing"].startswith("<object") and record["nested"] == {"a": [1, 2]}


def test_bound_ids_reach_lines_of_tasks_created_inside(as_json: Captured) -> None:
    async def work() -> None:
        await asyncio.sleep(0)
        as_json.logger.info("from a task")

    async def scenario() -> None:
        with log_context(room="lobby"), log_context(listener="l1"):
            task = asyncio.get_running_loop().create_task(work())
            as_json.logger.info("inside", extra={"listener": "given"})
        as_json.logger.info("outside")  # the binding has ended; the task keeps its copy
        await task

    asyncio.run(scenario())
    inside, outside, from_task = as_json.records()
    assert inside["room"] == "lobby" and inside["listener"] == "given"  # extra wins
    assert "room" not in outside and "listener" not in outside
    assert from_task["room"] == "lobby" and from_task["listener"] == "l1"
    assert current_log_ids() == {}


def test_text_keeps_its_look_and_adds_the_ids_briefly(as_text: Captured) -> None:
    as_text.logger.info("no ids here")
    with log_context(session="abc", room=None):
        as_text.logger.warning("with one", extra={"event": "x.y"})
    plain, with_ids = as_text.lines()
    assert re.fullmatch(r"\S+ \S+ INFO tests\.log_format\.text: no ids here", plain)
    assert with_ids.endswith("WARNING tests.log_format.text: with one [session=abc]")


@pytest.mark.parametrize(
    "line",
    [
        f"Authorization: Bearer {TOKEN}",
        f"authorization: bearer {TOKEN}, next",
        f"GET /rooms/a/bot?voice=x&token={TOKEN}&b=1 HTTP/1.1",
        f"Sec-WebSocket-Protocol: vms, vms.token.{TOKEN}",
        f"VMS_API_TOKEN={TOKEN} voice-media-server",
        f"VMS_TOKEN_SECRET={TOKEN}",
        f"the token {TOKEN} is wrong",
    ],
)
def test_tokens_are_redacted_in_both_formats(
    line: str, as_json: Captured, as_text: Captured
) -> None:
    for captured in (as_json, as_text):
        captured.logger.info("%s", line, extra={"path": line})
        try:
            raise ValueError(line)
        except ValueError:
            captured.logger.exception("failed")
        text = captured.stream.getvalue()
        assert TOKEN not in text and REDACTED in text


def test_redactor_leaves_ordinary_lines_alone() -> None:
    line = 'GET /whep/abc?voice=en "HTTP/1.1" 201 512 0.004s "aiohttp"'
    assert Redactor(("short", None))(line) == line  # secrets under 8 characters are skipped


def test_log_format_setting_is_checked() -> None:
    assert settings_from_env({}).log_format == "text"
    assert settings_from_env({"VMS_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="log_format"):
        settings_from_env({"VMS_LOG_FORMAT": "yaml"})


def test_secrets_are_not_in_the_settings_repr() -> None:
    text = repr(Settings(api_token=TOKEN, token_secret="a-secret-of-16-bytes"))
    assert TOKEN not in text and "a-secret-of-16-bytes" not in text


def test_cli_refuses_an_unknown_log_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--log-format", "xml"])
    assert exited.value.code == 2
    assert "--log-format" in capsys.readouterr().err


def test_unknown_format_is_refused_by_the_handler() -> None:
    with pytest.raises(ValueError, match="json"):
        log_handler("yaml")


def test_json_lines_are_ascii_whatever_they_hold(as_json: Captured) -> None:
    as_json.logger.info("café 🎙", extra={"identity": "Zoë"})
    (line,) = as_json.lines()
    assert line.isascii()
    record = json.loads(line)
    assert (record["message"], record["identity"]) == ("café 🎙", "Zoë")


def test_configure_logging_replaces_the_root_handlers() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("warning", "json")
        (handler,) = root.handlers
        assert root.level == logging.WARNING
        assert isinstance(handler.formatter, JsonFormatter)
        assert any(isinstance(f, LogContextFilter) for f in handler.filters)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
