"""Transcript: which words an utterance's first milliseconds said."""

from __future__ import annotations

from media_server.speech.transcript import Transcript

RATE_HZ = 1000
"""One sample a millisecond keeps the arithmetic readable."""


def transcript() -> Transcript:
    t = Transcript()
    t.rate_hz = RATE_HZ
    return t


def test_engine_named_chunks_give_a_span_each() -> None:
    t = transcript()
    t.begin_piece("Hello there. How are you today?")
    t.begin_chunk("Hello there.")
    t.add_audio(1000)
    t.begin_chunk("How are you today?")
    t.add_audio(2000)
    t.end_piece()
    assert t.heard(0) == ""
    assert t.heard(300) == ""  # "Hello" ends 5/12 of the way in
    assert t.heard(500) == "Hello"
    assert t.heard(1000) == "Hello there."
    assert t.heard(1500) == "Hello there. How"
    assert t.heard(3000) == t.heard(9000) == "Hello there. How are you today?"


def test_an_unnamed_piece_is_heard_in_proportion_to_its_characters() -> None:
    t = transcript()
    t.begin_piece("one two three four")  # 18 characters
    t.begin_chunk(None)
    t.add_audio(900)
    t.begin_chunk(None)
    t.add_audio(900)
    t.end_piece()
    assert t.heard(400) == "one"  # 4 of 18 characters
    assert t.heard(1350) == "one two three"  # 13.5 characters


def test_a_span_still_synthesising_is_not_taken_as_finished() -> None:
    t = transcript()
    t.begin_piece("one two three four five six seven eight nine ten")  # 48 characters
    t.begin_chunk(None)
    t.add_audio(500)  # half a second of it so far: far less than 48 characters need
    heard = t.heard(500)
    assert heard.startswith("one") and len(heard) < 15
    # finished spans teach the utterance's own speaking rate
    t.end_piece()
    assert t.heard(500) == t.text


def test_streamed_pieces_join_into_one_text_and_heard_is_always_a_prefix() -> None:
    t = transcript()
    previous = ""
    for piece, ms in [("Sure,", 400), ("let me check that", 1100), ("for you.", 600)]:
        t.begin_piece(piece)
        t.begin_chunk(piece)
        t.add_audio(ms)
        t.end_piece()
    assert t.text == "Sure, let me check that for you."
    for played_ms in range(0, 2300, 20):
        heard = t.heard(played_ms)
        assert t.text.startswith(heard) and len(heard) >= len(previous)
        previous = heard
    assert previous == t.text


def test_a_chunk_text_the_engine_changed_falls_back_to_the_rest_of_the_piece() -> None:
    t = transcript()
    t.begin_piece("It costs  42 dollars.")
    t.begin_chunk("It costs 42 dollars.")  # whitespace normalised: not found as it is
    t.add_audio(1000)
    t.end_piece()
    assert t.heard(1000) == "It costs  42 dollars."
    assert t.heard(450) == "It costs"
