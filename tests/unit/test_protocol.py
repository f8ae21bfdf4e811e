from __future__ import annotations

import json

import pytest

from media_server.protocol import (
    CancelMessage,
    ProtocolError,
    SayMessage,
    parse_client_message,
)


def parse(raw: str | bytes) -> object:
    return parse_client_message(raw, max_text_chars=100)


def test_valid_messages() -> None:
    assert parse('{"type":"say","text":"hi"}') == SayMessage("hi")
    assert parse(b'{"type":"say","text":"hi","id":"a1"}') == SayMessage("hi", "a1")
    assert parse('{"type":"cancel"}') == CancelMessage()


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        ("[1,2]", "invalid_message"),
        ('{"type":"dance"}', "unknown_type"),
        ('{"text":"no type"}', "unknown_type"),
        ('{"type":"say"}', "invalid_text"),
        ('{"type":"say","text":"   "}', "invalid_text"),
        ('{"type":"say","text":42}', "invalid_text"),
        (json.dumps({"type": "say", "text": "x" * 101}), "text_too_long"),
        ('{"type":"say","text":"hi","id":7}', "invalid_id"),
        (json.dumps({"type": "say", "text": "hi", "id": "x" * 65}), "invalid_id"),
        ("x" * 20000, "message_too_large"),
    ],
)
def test_bad_messages_name_the_problem_and_a_solution(raw: str | bytes, error: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(raw)
    event = info.value.event()
    assert event["type"] == "error" and event["error"] == error
    assert event["message"] and event["solution"]
