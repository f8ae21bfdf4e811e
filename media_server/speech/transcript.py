"""An utterance's text lined up with its audio, so an interruption can say what was heard.

The paced sink records, as it encodes, which span of the utterance's text each stretch
of audio speaks: one span per synthesis piece, or one per engine chunk where the engine
names the text of its chunks (Piper: each sentence or first-words piece it renders).
Within a span the position is found by proportion of characters, and only words whose
estimated end was played count as heard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

DEFAULT_CHARS_PER_S: Final = 15.0
"""Speaking rate assumed for a span whose audio is still being synthesised, until the
utterance's finished spans give its own (English TTS speaks about 13-17 characters a second)."""
_WORD_END: Final = re.compile(r"\S(?=\s|$)")


@dataclass(slots=True)
class _Span:
    text_start: int
    text_end: int
    """Characters of :attr:`Transcript.text` this audio speaks."""
    audio_start: int
    audio_end: int
    """Samples (engine rate, after trimming and time-stretching) of the utterance's audio."""
    closed: bool = False
    """All of its audio is known; an open span is still being synthesised."""


class Transcript:
    """What one utterance says and which of its samples say which part of it.

    Fed by the producer in order: :meth:`begin_piece` for each synthesis piece,
    :meth:`begin_chunk` for each engine chunk, :meth:`add_audio` for the samples that
    go to the encoder, :meth:`end_piece` when the piece's audio is complete. Read with
    :meth:`heard` from the event loop at any time (a pause, a cancel).
    """

    def __init__(self) -> None:
        self.text = ""
        """Every piece so far, joined by a space (a ``say``'s text, or streamed pieces)."""
        self.rate_hz = 0
        self._spans: list[_Span] = []
        self._piece_start = 0
        self._cursor = 0
        """Where in :attr:`text` the next chunk's text is looked for."""
        self._samples = 0

    def begin_piece(self, piece: str) -> None:
        if self.text and not self.text[-1].isspace() and piece and not piece[0].isspace():
            self.text += " "
        self._close_open()
        self._piece_start = self._cursor = len(self.text)
        self.text += piece

    def begin_chunk(self, chunk_text: str | None) -> None:
        """The next audio is an engine chunk that speaks ``chunk_text`` (None: the engine
        does not say, and the chunk goes on with the piece's current span)."""
        piece_end = len(self.text)
        found = self.text.find(chunk_text, self._cursor, piece_end) if chunk_text else -1
        if found >= 0:
            # the engine named it: a span of its own, whose audio is this chunk
            self._close_open()
            end = found + len(chunk_text or "")
            self._spans.append(_Span(self._cursor, end, self._samples, self._samples, True))
            self._cursor = end
        elif self._cursor < piece_end or not self._spans:
            # nothing named (or not found as it is): the rest of the piece, by proportion
            self._close_open()
            self._spans.append(_Span(self._cursor, piece_end, self._samples, self._samples))
            self._cursor = piece_end

    def add_audio(self, samples: int) -> None:
        if samples <= 0:
            return
        self._samples += samples
        if self._spans:
            self._spans[-1].audio_end = self._samples

    def end_piece(self) -> None:
        """The piece's audio is complete: the rest of its text belongs to its last span."""
        if self._spans and self._spans[-1].text_start >= self._piece_start:
            self._spans[-1].text_end = len(self.text)
        self._cursor = len(self.text)
        self._close_open()

    def _close_open(self) -> None:
        if self._spans:
            self._spans[-1].closed = True

    def _chars_per_sample(self) -> float:
        closed = [s for s in self._spans if s.closed and s.audio_end > s.audio_start]
        chars = sum(s.text_end - s.text_start for s in closed)
        samples = sum(s.audio_end - s.audio_start for s in closed)
        if chars and samples:
            return chars / samples
        return DEFAULT_CHARS_PER_S / self.rate_hz if self.rate_hz else 0.0

    def heard(self, played_ms: float) -> str:
        """The text spoken by the first ``played_ms`` of the audio: whole words, a prefix
        of :attr:`text` (empty when nothing was played)."""
        if not self.rate_hz or played_ms <= 0 or not self._spans:
            return ""
        position = played_ms * self.rate_hz / 1000
        cut = 0
        for span in self._spans:
            if position >= span.audio_end and span.closed:
                cut = span.text_end
                continue
            length = span.audio_end - span.audio_start
            if not span.closed:
                # still being synthesised: its whole length is at least what the text needs
                rate = self._chars_per_sample()
                needed = (span.text_end - span.text_start) / rate if rate else 0.0
                length = max(length, round(needed))
            if length > 0 and position > span.audio_start:
                fraction = min(1.0, (position - span.audio_start) / length)
                cut = span.text_start + int(fraction * (span.text_end - span.text_start))
            break
        return _whole_words(self.text, cut)


def _whole_words(text: str, cut: int) -> str:
    """``text`` up to the end of the last word that ends at or before ``cut``."""
    if cut >= len(text):
        return text.rstrip()
    end = 0
    for match in _WORD_END.finditer(text):
        if match.end() > cut:
            break
        end = match.end()
    return text[:end].rstrip()
