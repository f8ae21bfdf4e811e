from __future__ import annotations

from synthesis.text import FIRST_CLAUSE_MAX_CHARS, PIECE_MAX_CHARS, TextAccumulator, split_text


def test_sentences_become_pieces_in_order() -> None:
    assert split_text("Hello there. How are you? Fine!") == [
        "Hello there.",
        "How are you?",
        "Fine!",
    ]


def test_long_first_sentence_is_cut_at_its_first_clause() -> None:
    text = (
        "When the first sentence of a reply runs long, like this one does, "
        "the listener should not wait for all of it. Then the rest follows."
    )
    pieces = split_text(text)
    assert pieces[0] == "When the first sentence of a reply runs long,"
    assert len(pieces[0]) <= FIRST_CLAUSE_MAX_CHARS
    assert " ".join(pieces) == " ".join(text.split())


def test_very_long_sentences_are_bounded() -> None:
    text = "word " * 400
    pieces = split_text(text)
    assert all(len(p) <= PIECE_MAX_CHARS for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_blank_text_gives_nothing() -> None:
    assert split_text("  \n\t ") == []


def test_accumulator_releases_complete_pieces_in_order() -> None:
    acc = TextAccumulator()
    out: list[str] = []
    for delta in ["Hel", "lo the", "re, my friend. How a", "re you to", "day? I am", " fine"]:
        out += acc.push(delta)
    assert out == ["Hello there, my friend.", "How are you today?"]
    assert acc.flush() == ["I am fine"]
    assert acc.flush() == []


def test_accumulator_first_piece_may_end_at_a_clause() -> None:
    acc = TextAccumulator()
    assert acc.push("Well, you know, the weather today ") == ["Well, you know,"]
    assert acc.push("is lovely, really. ") == ["the weather today is lovely, really."]


def test_accumulator_bounds_runaway_text() -> None:
    acc = TextAccumulator()
    pieces = acc.push("word " * 200)
    assert pieces and all(len(p) <= PIECE_MAX_CHARS for p in pieces)
