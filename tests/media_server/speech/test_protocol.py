from __future__ import annotations

import json

import pytest

from media_server.speech.events import ErrorEvent
from media_server.speech.protocol import (
    CancelMessage,
    SayMessage,
    TextDeltaMessage,
    TextDoneMessage,
    parse_client_message,
)
from synthesis import ClientError, Mode, RequestLimits, SynthesisRequest


def parse(raw: str | bytes) -> object:
    return parse_client_message(raw, limits=RequestLimits(max_text_chars=100))


def test_valid_messages() -> None:
    assert parse('{"type":"say","text":"hi"}') == SayMessage(SynthesisRequest("hi"))
    assert parse(b'{"type":"say","text":"hi","id":"a1"}') == SayMessage(
        SynthesisRequest("hi"), "a1"
    )
    assert parse('{"type":"cancel"}') == CancelMessage()
    assert parse('{"type":"text.delta","text":"Hel","id":"s"}') == TextDeltaMessage("Hel", "s")
    assert parse('{"type":"text.done"}') == TextDoneMessage()


def test_say_takes_the_request_model() -> None:
    message = parse(
        '{"type":"say","text":"hi","mode":"instruct","speaker_id":"v","speed":1.5,'
        '"emotion":"happy","instruct_text":"cheerfully"}'
    )
    assert isinstance(message, SayMessage)
    assert message.request == SynthesisRequest(
        "hi", Mode.INSTRUCT, speaker_id="v", speed=1.5, emotion="happy", instruct_text="cheerfully"
    )


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        ("[1,2]", "invalid_message"),
        ('{"type":"dance"}', "unknown_type"),
        ('{"text":"no type"}', "unknown_type"),
        ('{"type":"say"}', "invalid_request"),
        ('{"type":"say","text":"   "}', "invalid_request"),
        ('{"type":"say","text":42}', "invalid_request"),
        ('{"type":"say","text":"hi","speed":3}', "invalid_request"),
        ('{"type":"say","text":"hi","speed":"fast"}', "invalid_request"),
        ('{"type":"say","text":"hi","mode":"sing"}', "invalid_request"),
        ('{"type":"say","text":"hi","colour":"blue"}', "invalid_request"),
        ('{"type":"say","text":"hi","reference_audio":"AAAA"}', "invalid_request"),
        ('{"type":"text.delta"}', "invalid_request"),
        (json.dumps({"type": "say", "text": "x" * 101}), "text_too_long"),
        ('{"type":"say","text":"hi","id":7}', "invalid_id"),
        (json.dumps({"type": "say", "text": "hi", "id": "x" * 65}), "invalid_id"),
        ("x" * 20000, "message_too_large"),
    ],
)
def test_bad_messages_name_the_problem_and_a_solution(raw: str | bytes, error: str) -> None:
    with pytest.raises(ClientError) as info:
        parse(raw)
    event = ErrorEvent.of(info.value).as_dict()
    assert event["type"] == "error" and event["error"] == error
    assert event["message"] and event["solution"]
