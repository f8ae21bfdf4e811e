"""Split text so the first audio never waits for more than its first few words."""

from __future__ import annotations

import re
from typing import Final

FIRST_PIECE_MIN_CHARS: Final = 8
"""The first piece has at least this much text (two or three words, about 0.5 s)..."""
FIRST_PIECE_MAX_CHARS: Final = 40
"""...and is cut at a natural boundary within this much (about 2 s), when it has one."""
WHOLE_FIRST_SENTENCE_CHARS: Final = 20
"""A first sentence this short (about 1.2 s) is spoken whole: a cut would save little."""
FIRST_CLAUSE_MAX_CHARS: Final = 60
"""Without a boundary in the first few words, a clause boundary up to here will do."""
REST_MIN_CHARS: Final = 8
"""No cut leaves less than this behind: a lone word after a seam sounds odd."""

PIECE_MAX_CHARS: Final = 300
"""Later pieces are whole sentences, split further only when longer than this."""

PHRASE_WORDS: Final = frozenset(
    """a an the this that these those my your his her its our their
    of to in on at for with from by about into onto over under after before through
    between without across against during until toward towards
    and but or nor so yet because while when where which who whom whose if than""".split()
)
"""Words that open a phrase: a cut just before one falls where a speaker may breathe."""

SENTENCE_END: Final = ".!?…"
CLAUSE_END: Final = ",;:—–"

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:—–])\s+")
_WORD = re.compile(r"\S+")


def _split_long(piece: str, limit: int) -> list[str]:
    """Split at clause boundaries, then at spaces, so no piece exceeds ``limit``."""
    if len(piece) <= limit:
        return [piece]
    out: list[str] = []
    current = ""
    for clause in _CLAUSE_END.split(piece):
        candidate = f"{current} {clause}".strip() if current else clause
        if len(candidate) <= limit:
            current = candidate
            continue
        if current:
            out.append(current)
        while len(clause) > limit:
            cut = clause.rfind(" ", 0, limit)
            cut = cut if cut > 0 else limit
            out.append(clause[:cut].strip())
            clause = clause[cut:].strip()
        current = clause
    if current:
        out.append(current)
    return [p for p in out if p]


def _bare(word: str) -> str:
    return word.strip("\"'()[]").lower()


def _ends_clause(word: str) -> bool:
    return bool(word) and word[-1] in CLAUSE_END


def first_cut(text: str, *, rest_min_chars: int = REST_MIN_CHARS) -> int | None:
    """Where to end the first piece of ``text`` (a sentence, or the start of one), or None.

    The earliest natural boundary between :data:`FIRST_PIECE_MIN_CHARS` and
    :data:`FIRST_PIECE_MAX_CHARS`: after clause punctuation, or before a word that opens
    a phrase ("It is easy | to tell the depth of a well."); failing that, the first clause
    boundary up to :data:`FIRST_CLAUSE_MAX_CHARS`. Never a cut that leaves under
    ``rest_min_chars`` behind, nor one right after a phrase word ("of | the").
    """
    previous = ""
    clause_fallback: int | None = None
    for match in _WORD.finditer(text):
        start = match.start()
        word = match.group()
        head_chars = len(text[:start].rstrip())
        rest_chars = len(text) - start
        if (
            FIRST_PIECE_MIN_CHARS <= head_chars <= FIRST_PIECE_MAX_CHARS
            and rest_chars >= rest_min_chars
            and (_ends_clause(previous) or _bare(word) in PHRASE_WORDS)
            and _bare(previous) not in PHRASE_WORDS
        ):
            return start
        if (
            clause_fallback is None
            and _ends_clause(previous)
            and FIRST_PIECE_MIN_CHARS <= head_chars <= FIRST_CLAUSE_MAX_CHARS
            and rest_chars >= rest_min_chars
        ):
            clause_fallback = start
        if head_chars > FIRST_CLAUSE_MAX_CHARS:
            break
        previous = word
    return clause_fallback


def split_text(text: str) -> list[str]:
    """Split ``text`` into pieces to synthesise in order.

    Sentences become pieces. A first sentence longer than
    :data:`WHOLE_FIRST_SENTENCE_CHARS` is cut at its first natural boundary
    (:func:`first_cut`), so the engine's first chunk, and the first audio a listener
    hears, covers only the first few words.
    """
    text = " ".join(text.split())
    if not text:
        return []
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
    pieces: list[str] = []
    for sentence in sentences:
        pieces.extend(_split_long(sentence, PIECE_MAX_CHARS))
    first = pieces[0]
    if len(first) > WHOLE_FIRST_SENTENCE_CHARS:
        cut = first_cut(first)
        if cut is not None:
            pieces[0:1] = [first[:cut].rstrip(), first[cut:]]
    return pieces


def piece_ending(piece: str) -> str:
    """How ``piece`` ends: ``"sentence"``, ``"clause"`` (punctuation) or ``"word"`` (a cut
    inside a clause), which decides how long a pause may follow it."""
    last = piece.rstrip("\"')]")[-1:]
    if last in SENTENCE_END:
        return "sentence"
    if last in CLAUSE_END:
        return "clause"
    return "word"


_BOUNDARY_SENTENCE = re.compile(r"[.!?…][\"')\]]*\s")
_BOUNDARY_CLAUSE = re.compile(r"[,;:—–]\s")


class TextAccumulator:
    """Collects streamed text (LLM deltas) and releases complete pieces, in order.

    A piece is released at a sentence end followed by whitespace; the first piece
    also at its first natural boundary (:func:`first_cut`) once the word after it is
    complete, so speech starts after a few words; any piece at a clause boundary or a
    space once it grows past :data:`PIECE_MAX_CHARS`. :meth:`flush` releases the rest
    when the text is done.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._released = 0

    def push(self, delta: str) -> list[str]:
        self._buffer += delta
        pieces: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            piece = " ".join(self._buffer[:cut].split())
            self._buffer = self._buffer[cut:]
            if piece:
                pieces.append(piece)
                self._released += 1
        return pieces

    def _find_cut(self) -> int | None:
        sentence = _BOUNDARY_SENTENCE.search(self._buffer)
        if self._released == 0:
            # the first piece may end before a phrase word only once that word is complete
            scope = self._buffer[: sentence.end()] if sentence else _complete_words(self._buffer)
            words = scope.split()
            if sentence is None or len(" ".join(words)) > WHOLE_FIRST_SENTENCE_CHARS:
                rest_min = REST_MIN_CHARS if sentence else 1
                cut = first_cut(" ".join(words), rest_min_chars=rest_min)
                if cut is not None:
                    return _word_start(self._buffer, len(" ".join(words)[:cut].split()))
        if sentence is not None:
            return sentence.end()
        if len(self._buffer) > PIECE_MAX_CHARS:
            clause = _BOUNDARY_CLAUSE.search(self._buffer)
            if clause is not None and clause.end() <= PIECE_MAX_CHARS:
                return clause.end()
            space = self._buffer.rfind(" ", 0, PIECE_MAX_CHARS)
            return space + 1 if space > 0 else PIECE_MAX_CHARS
        return None

    def flush(self) -> list[str]:
        piece = " ".join(self._buffer.split())
        self._buffer = ""
        return [piece] if piece else []


def _complete_words(text: str) -> str:
    """``text`` up to its last whitespace: the words no later delta can extend."""
    match = re.match(r".*\s", text, re.DOTALL)
    return match.group() if match else ""


def _word_start(text: str, index: int) -> int:
    """Where word number ``index`` of ``text`` starts (its length if there are fewer)."""
    for number, match in enumerate(_WORD.finditer(text)):
        if number == index:
            return match.start()
    return len(text)
