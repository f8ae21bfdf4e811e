"""Split text so the first audio never waits for the whole paragraph."""

from __future__ import annotations

import re

FIRST_CLAUSE_MAX_CHARS = 60
"""The first piece is cut at a clause boundary (comma, semicolon...) near this size."""

PIECE_MAX_CHARS = 300
"""Later pieces are whole sentences, split further only when longer than this."""

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:—–])\s+")


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


def split_text(text: str) -> list[str]:
    """Split ``text`` into pieces to synthesise in order.

    Sentences become pieces. The first piece is additionally cut at its first
    clause boundary when the first sentence is long, so the engine's first chunk
    (and therefore the first audio a listener hears) arrives quickly.
    """
    text = " ".join(text.split())
    if not text:
        return []
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
    pieces: list[str] = []
    for sentence in sentences:
        pieces.extend(_split_long(sentence, PIECE_MAX_CHARS))
    first = pieces[0]
    if len(first) > FIRST_CLAUSE_MAX_CHARS:
        clauses = _CLAUSE_END.split(first, maxsplit=1)
        if len(clauses) == 2 and len(clauses[0]) >= 8:
            pieces[0:1] = clauses
    return pieces


_BOUNDARY_SENTENCE = re.compile(r"[.!?…][\"')\]]*\s")
_BOUNDARY_CLAUSE = re.compile(r"[,;:—–]\s")

FIRST_DELTA_MIN_CHARS = 12
"""The first streamed piece may end at a clause boundary once it has this many characters."""


class TextAccumulator:
    """Collects streamed text (LLM deltas) and releases complete pieces, in order.

    A piece is released at a sentence end followed by whitespace; the first piece
    also at a clause boundary (so speech starts early); any piece at a clause
    boundary or a space once it grows past :data:`PIECE_MAX_CHARS`.
    :meth:`flush` releases the rest when the text is done.
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
        if sentence is not None:
            return sentence.end()
        if self._released == 0:
            clause = _BOUNDARY_CLAUSE.search(self._buffer, FIRST_DELTA_MIN_CHARS)
            if clause is not None:
                return clause.end()
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
