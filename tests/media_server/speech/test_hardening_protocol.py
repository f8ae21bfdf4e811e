"""Hostile client messages: deep JSON, control characters, endless streamed text."""

from __future__ import annotations

import json

import pytest

from media_server.audio.encoder import StreamEncoder
from media_server.audio.opus import OpusSettings
from media_server.speech.paced import PacedSpeech
from media_server.speech.protocol import (
    MAX_JSON_DEPTH,
    JsonTooDeep,
    ProtocolError,
    SayMessage,
    TextDeltaMessage,
    TextDoneMessage,
    json_depth,
    loads_json,
    parse_client_message,
)
from media_server.speech.talker import Talker
from synthesis import ClientError, RequestLimits, SynthesisService, parse_request
from synthesis.testing import FakeClock, ScriptedEngine
from tests.conftest import loopback_settings

LIMITS = RequestLimits(max_text_chars=100)
NESTED = "[" * 2000  # the review's 4 KB message; json.loads raises RecursionError on it


def refused(raw: str | bytes, limits: RequestLimits = LIMITS) -> ProtocolError:
    with pytest.raises(ClientError) as caught:
        parse_client_message(raw, limits=limits)
    assert caught.value.message and caught.value.solution
    return caught.value


@pytest.mark.parametrize(
    "raw",
    [
        NESTED,
        NESTED.encode(),
        "[" * 2000 + "]" * 2000,
        '{"type":"say","text":"hi","speaker_id":' + '{"a":' * 1000 + "1" + "}" * 1000 + "}",
        "[" * 10_000,  # a data-channel-sized one
    ],
)
def test_deeply_nested_json_is_an_invalid_json_error(raw: str | bytes) -> None:
    error = refused(raw)
    assert error.code == "invalid_json"
    assert str(MAX_JSON_DEPTH) in error.message


def test_brackets_inside_strings_do_not_count() -> None:
    text = '[{"\\"[' * 50
    raw = json.dumps({"type": "say", "text": text, "id": "a"})
    message = parse_client_message(raw, limits=RequestLimits())
    assert isinstance(message, SayMessage) and message.request.text == text


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        ("{}", 1),
        ('{"a":[1,{"b":[]}]}', 4),
        ('["]]]]", "\\\\", ["\\"[[[["]]', 2),
        ("[" * 40 + "]" * 40, 40),
        ('"unterminated [[[[', 0),
    ],
)
def test_json_depth(raw: str, depth: int) -> None:
    assert json_depth(raw) == depth
    assert json_depth(raw.encode()) == depth


def test_loads_json_refuses_deep_input_and_parses_the_rest() -> None:
    with pytest.raises(JsonTooDeep):
        loads_json("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    deepest = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert loads_json(deepest) == json.loads(deepest)


# -- control characters and lone surrogates ---------------------------------------------


@pytest.mark.parametrize("bad", ["\x00", "\ud800", "\udfff", "\x1b", "\x07", "\x0b"])
@pytest.mark.parametrize("field", ["text", "reference_text", "instruct_text"])
def test_control_characters_and_lone_surrogates_are_refused(bad: str, field: str) -> None:
    data = {"text": "hello", field: f"say {bad} this"}
    with pytest.raises(ClientError) as caught:
        parse_request(data, LIMITS)
    assert caught.value.code == "invalid_request"
    assert caught.value.field == field
    assert f"U+{ord(bad):04X}" in caught.value.message


def test_a_json_escaped_lone_surrogate_is_refused_on_every_message() -> None:
    say = refused('{"type":"say","text":"a\\ud800b"}')
    assert say.code == "invalid_request" and "'text'" in say.message
    delta = refused('{"type":"text.delta","text":"nul \\u0000 here"}')
    assert delta.code == "invalid_request" and "U+0000" in delta.message


def test_tabs_newlines_and_real_astral_characters_are_fine() -> None:
    text = "line one\n\tline two\r\n🙂 done"
    request = parse_request({"text": text, "instruct_text": "calm\nand slow"}, LIMITS)
    assert request.text == text
    message = parse_client_message(
        json.dumps({"type": "text.delta", "text": "🙂\n"}), limits=LIMITS
    )
    assert message == TextDeltaMessage("🙂\n")


# -- the streamed-text cap ----------------------------------------------------------------


async def test_one_streamed_utterance_is_capped_and_keeps_what_it_has() -> None:
    settings = loopback_settings(max_text_chars=50)
    talker = Talker(None, None, settings, FakeClock())
    cap = talker.limits.max_streamed_text_chars
    assert cap == 10 * 50
    speaker = PacedSpeech(
        SynthesisService(ScriptedEngine(), 4), StreamEncoder(OpusSettings()), [].append
    )
    delta = "word " * 10
    try:
        for _ in range(cap // len(delta)):
            talker.apply(
                TextDeltaMessage(delta, "s"), speaker.queue, speaker.engine, cancel_everyone=True
            )
        with pytest.raises(ClientError) as caught:
            talker.apply(
                TextDeltaMessage("x", "s"), speaker.queue, speaker.engine, cancel_everyone=True
            )
        assert caught.value.code == "text_too_long"
        assert str(cap) in caught.value.message
        # The utterance is still open with everything taken so far, and can be finished.
        utterance = speaker.queue.text_done("s")
        assert utterance is not None and not utterance.cancelled
        assert " ".join(utterance.pieces) == " ".join(["word"] * (cap // 5))
        assert speaker.pending == 1
        # A new streamed utterance starts its own count.
        talker.apply(
            TextDeltaMessage(delta, "t"), speaker.queue, speaker.engine, cancel_everyone=True
        )
        talker.apply(TextDoneMessage("t"), speaker.queue, speaker.engine, cancel_everyone=True)
        assert speaker.pending == 2
    finally:
        await speaker.aclose()
