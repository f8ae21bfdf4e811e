from __future__ import annotations

from synthesis.text import FIRST_CLAUSE_MAX_CHARS, PIECE_MAX_CHARS, split_text


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
