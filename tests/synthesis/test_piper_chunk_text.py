"""Piper names the text of what it renders, so a paused or cancelled utterance can say
which words were heard (``media_server.speech.transcript``)."""

from __future__ import annotations

import threading

from synthesis import Engine, SynthesisRequest
from synthesis.text import split_text

TEXT = (
    "Good evening everyone, this is the room bot speaking. The trains are late today."
    " Please wait on the platform."
)


def test_each_piece_is_named_on_its_first_chunk(piper_engine: Engine) -> None:
    chunks = list(piper_engine.synthesize(SynthesisRequest(text=TEXT), threading.Event()))
    named = [chunk.text for chunk in chunks if chunk.text is not None]
    assert named == split_text(TEXT)
    assert len(named) >= 3 and chunks[0].text == named[0]
    position = 0
    for piece in named:  # in order, each found in the text where the last one ended
        position = TEXT.index(piece, position) + len(piece)
