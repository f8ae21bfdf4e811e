"""The instruct2 prompt: ``emotion``, ``dialect`` and ``instruct_text`` in CosyVoice 2's words."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from synthesis.request import SynthesisRequest

END_OF_PROMPT: Final = "<|endofprompt|>"

EMOTION_INSTRUCTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "neutral": "用平静的语气",
        "happy": "用开心的语气",
        "sad": "用伤心的语气",
        "angry": "用生气的语气",
        "surprised": "用惊讶的语气",
        "fearful": "用恐惧的语气",
        "disgusted": "用厌恶的语气",
        "gentle": "用温柔的语气",
        "serious": "用严肃的语气",
    }
)
"""``emotion`` -> instruction phrase; the instruction ends in :data:`INSTRUCTION_SUFFIX`."""

DIALECT_INSTRUCTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "cantonese": "用粤语",
        "sichuanese": "用四川话",
        "shanghainese": "用上海话",
        "tianjinese": "用天津话",
        "northeastern": "用东北话",
        "henanese": "用河南话",
        "shandongese": "用山东话",
        "changsha": "用长沙话",
        "minnan": "用闽南话",
    }
)
"""``dialect`` -> instruction phrase, as in upstream's ``用四川话说这句话`` example."""

INSTRUCTION_SUFFIX: Final = "说这句话"


def instruction_text(request: SynthesisRequest) -> str:
    """The instruct2 prompt: dialect and emotion in the model's style, then ``instruct_text``.

    ``dialect="sichuanese", emotion="happy"`` gives
    ``用四川话，用开心的语气说这句话<|endofprompt|>``. ``instruct_text`` is used as given
    (after that, if both are present), always ending in exactly one ``<|endofprompt|>``.
    """
    phrases = []
    if request.dialect:
        phrases.append(DIALECT_INSTRUCTIONS[request.dialect])
    if request.emotion:
        phrases.append(EMOTION_INSTRUCTIONS[request.emotion])
    parts = ["，".join(phrases) + INSTRUCTION_SUFFIX] if phrases else []
    custom = (request.instruct_text or "").strip()
    while custom.endswith(END_OF_PROMPT):
        custom = custom.removesuffix(END_OF_PROMPT).rstrip()
    if custom:
        parts.append(custom)
    return "。".join(parts) + END_OF_PROMPT


__all__ = [
    "DIALECT_INSTRUCTIONS",
    "EMOTION_INSTRUCTIONS",
    "END_OF_PROMPT",
    "INSTRUCTION_SUFFIX",
    "instruction_text",
]
