from __future__ import annotations

from synthesis.text import (
    FIRST_PIECE_MAX_CHARS,
    PIECE_MAX_CHARS,
    WHOLE_FIRST_SENTENCE_CHARS,
    TextAccumulator,
    first_cut,
    piece_ending,
    split_text,
)


def test_sentences_become_pieces_in_order() -> None:
    assert split_text("Hello there. How are you? Fine!") == [
        "Hello there.",
        "How are you?",
        "Fine!",
    ]


def test_first_sentence_is_cut_after_its_first_few_words() -> None:
    assert split_text("It is easy to tell the depth of a well. Then more.") == [
        "It is easy",
        "to tell the depth of a well.",
        "Then more.",
    ]
    assert split_text("The birch canoe slid on the smooth planks.")[0] == "The birch canoe slid"


def test_first_cut_prefers_an_early_clause_and_never_follows_a_phrase_word() -> None:
    text = (
        "When the first sentence of a reply runs long, like this one does, "
        "the listener should not wait for all of it. Then the rest follows."
    )
    pieces = split_text(text)
    assert pieces[0] == "When the first sentence"
    assert len(pieces[0]) <= FIRST_PIECE_MAX_CHARS
    assert " ".join(pieces) == " ".join(text.split())
    text = "Good morning everyone, we shall see about the weather."
    assert split_text(text)[0] == "Good morning everyone,"
    # "of | the" is no boundary: the cut goes before the phrase, not inside it
    cut = first_cut("Many of the people in the hall were tired of it.")
    assert cut is not None and "Many of the people in the hall"[:cut].split()[-1] != "of"


def test_short_first_sentences_and_short_rests_stay_whole() -> None:
    assert split_text("Hello there, friend.") == ["Hello there, friend."]
    assert len("Hello there, my friend.") > WHOLE_FIRST_SENTENCE_CHARS
    assert split_text("Hello there, my friend.") == ["Hello there,", "my friend."]
    assert split_text("Unbelievably wonderful, yes.") == ["Unbelievably wonderful, yes."]
    assert first_cut("A very good morning to all of you") is not None
    assert first_cut("A very good morning to you", rest_min_chars=8) is None


def test_piece_endings_decide_the_pause_after_them() -> None:
    assert piece_ending("the depth of a well.") == "sentence"
    assert piece_ending('He said "stop!"') == "sentence"
    assert piece_ending("Well then,") == "clause"
    assert piece_ending("It is easy to tell") == "word"


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
    for delta in ["Hel", "lo the", "re, friend. How a", "re you to", "day? I am", " fine"]:
        out += acc.push(delta)
    assert out == ["Hello there, friend.", "How are you today?"]
    assert acc.flush() == ["I am fine"]
    assert acc.flush() == []


def test_accumulator_first_piece_may_end_at_a_clause() -> None:
    acc = TextAccumulator()
    assert acc.push("Well, you know, the weather today ") == ["Well, you know,"]
    assert acc.push("is lovely, really. ") == ["the weather today is lovely, really."]


def test_accumulator_first_piece_ends_before_a_phrase_once_its_word_is_complete() -> None:
    acc = TextAccumulator()
    out: list[str] = []
    for delta in ["It is ", "easy to", " tell th", "e", " depth", " of a well.", " Next."]:
        out += acc.push(delta)
    assert out == ["It is easy", "to tell the depth of a well."]
    assert acc.flush() == ["Next."]


def test_accumulator_bounds_runaway_text() -> None:
    acc = TextAccumulator()
    pieces = acc.push("word " * 200)
    assert pieces and all(len(p) <= PIECE_MAX_CHARS for p in pieces)
