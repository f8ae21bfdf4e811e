"""CosyVoiceEngine on a tiny random CosyVoice2: the real upstream code path, on CPU.

Random weights make noise, not words: these tests check structure (rates, dtypes,
chunking, modes, cancellation, bounds, persistence), never content. The tests at the
top need neither torch nor the model and run everywhere.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synthesis import ClientError
from synthesis.base import Engine
from synthesis.capabilities import check_supported
from synthesis.cosyvoice import CosyVoiceEngine
from synthesis.cosyvoice_config import CosyVoiceConfig, cosyvoice_config_from_env
from synthesis.cosyvoice_instruction import (
    DIALECT_INSTRUCTIONS,
    EMOTION_INSTRUCTIONS,
    END_OF_PROMPT,
    instruction_text,
)
from synthesis.factory import available_engines
from synthesis.request import Mode, ReferenceAudio, SynthesisRequest
from synthesis.stream import SynthesisStream
from synthesis.types import AudioChunk
from tests.synthesis.cosyvoice.tiny_model import SPEAKER_ID

pytestmark = [  # deprecations inside the vendored upstream code (filtered by the runtime too)
    pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast:FutureWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`LoRACompatibleLinear` is deprecated:FutureWarning"),
]

RATE = 24_000
FIRST_CHUNK = 25 * 960 - 3840
"""25 tokens of 960 samples, less the 3840 HiFT keeps back to crossfade the next chunk."""
HOP_CHUNK = 25 * 960
TEXT = "Hello there."  # 12 byte tokens -> 60 speech tokens -> 3 chunks


def collect(engine: Engine, request: SynthesisRequest) -> list[AudioChunk]:
    return list(engine.synthesize(request, threading.Event()))


def assert_audio(chunks: list[AudioChunk], min_chunks: int = 1) -> None:
    assert len(chunks) >= min_chunks
    for chunk in chunks:
        assert chunk.sample_rate_hz == RATE
        assert chunk.pcm.dtype == np.int16
        assert chunk.pcm.ndim == 1 and chunk.pcm.size > 0
    assert any(np.abs(c.pcm).max() > 0 for c in chunks)


def llm_of(engine: CosyVoiceEngine) -> Any:
    """The upstream Qwen2LM inside the engine, for fault injection."""
    return engine._runtime._model.llm


def wait_for_lm_threads_to_end(timeout_s: float = 3.0) -> list[threading.Thread]:
    from synthesis.cosyvoice_runtime import lm_threads

    deadline = time.monotonic() + timeout_s
    while lm_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    return lm_threads()


# --------------------------------------------------------------------------- no torch needed


def test_instruction_text_in_the_models_style() -> None:
    assert instruction_text(SynthesisRequest("x", Mode.INSTRUCT, dialect="sichuanese")) == (
        "用四川话说这句话" + END_OF_PROMPT
    )
    both = SynthesisRequest("x", Mode.INSTRUCT, emotion="happy", dialect="cantonese")
    assert instruction_text(both) == "用粤语，用开心的语气说这句话" + END_OF_PROMPT
    given = SynthesisRequest("x", Mode.INSTRUCT, instruct_text="Speak slowly.")
    assert instruction_text(given) == "Speak slowly." + END_OF_PROMPT
    marked = SynthesisRequest("x", Mode.INSTRUCT, instruct_text="慢慢说" + END_OF_PROMPT)
    assert instruction_text(marked) == "慢慢说" + END_OF_PROMPT
    combined = SynthesisRequest("x", Mode.INSTRUCT, emotion="sad", instruct_text="Whisper.")
    assert instruction_text(combined) == "用伤心的语气说这句话。Whisper." + END_OF_PROMPT


def test_instruction_tables_cover_the_required_values() -> None:
    assert {"neutral", "happy", "sad", "angry", "surprised", "fearful"} <= set(EMOTION_INSTRUCTIONS)
    assert {"cantonese", "sichuanese", "shanghainese"} <= set(DIALECT_INSTRUCTIONS)


def test_config_from_env() -> None:
    config = cosyvoice_config_from_env(
        {
            "VMS_COSYVOICE_MODEL_DIR": "/models/CosyVoice2-0.5B",
            "VMS_COSYVOICE_FP16": "1",
            "VMS_COSYVOICE_LOAD_TRT": "true",
            "VMS_COSYVOICE_CHUNK_TIMEOUT_S": "5",
            "VMS_COSYVOICE_FIRST_HOP_TOKENS": "15",
            "VMS_COSYVOICE_VOICES_DIR": "/var/lib/voices",
        }
    )
    assert config.model_dir == Path("/models/CosyVoice2-0.5B")
    assert config.fp16 and config.load_trt and not config.load_jit and not config.load_vllm
    assert config.chunk_timeout_s == 5.0 and config.first_hop_tokens == 15
    assert config.voices_path == Path("/var/lib/voices/vms_cosyvoice_voices.pt")
    with pytest.raises(ValueError, match="MODEL_DIR"):
        cosyvoice_config_from_env({})
    with pytest.raises(ValueError, match="FP16"):
        cosyvoice_config_from_env({"VMS_COSYVOICE_MODEL_DIR": "/m", "VMS_COSYVOICE_FP16": "maybe"})


def test_registered_and_refuses_a_missing_model_dir(tmp_path: Path) -> None:
    assert "cosyvoice" in available_engines()
    with pytest.raises(ClientError) as info:
        CosyVoiceEngine(CosyVoiceConfig(tmp_path / "missing"))
    assert info.value.code == "engine_unavailable"


# --------------------------------------------------------------------------- the tiny model


@pytest.mark.slow
def test_capabilities_and_voices(engine: CosyVoiceEngine) -> None:
    caps = engine.capabilities
    assert caps.modes == frozenset(Mode)
    assert caps.sample_rate_hz == engine.sample_rate_hz == RATE
    assert {"zh", "en", "ja", "ko", "yue"} <= set(caps.languages)
    assert caps.cloning and not caps.native_speed
    assert SPEAKER_ID in {v.voice_id for v in engine.voices}
    assert isinstance(engine, Engine)

    def check(**fields: Any) -> None:
        check_supported(engine.name, caps, engine.voices, SynthesisRequest(TEXT, **fields))

    check(mode=Mode.INSTRUCT, emotion="happy", dialect="sichuanese")
    check(mode=Mode.SFT, speaker_id=SPEAKER_ID)
    with pytest.raises(ClientError) as info:
        check(mode=Mode.INSTRUCT, emotion="ecstatic")
    assert info.value.code == "unsupported"
    with pytest.raises(ClientError) as info:
        check(mode=Mode.SFT, speaker_id="nobody")
    assert info.value.code == "unknown_voice"


@pytest.mark.slow
def test_sft_streams_int16_chunks_as_they_are_made(engine: CosyVoiceEngine) -> None:
    arrivals: list[float] = []
    chunks: list[AudioChunk] = []
    started = time.perf_counter()
    for chunk in engine.synthesize(
        SynthesisRequest(TEXT, speaker_id=SPEAKER_ID), threading.Event()
    ):
        arrivals.append(time.perf_counter() - started)
        chunks.append(chunk)
    assert_audio(chunks, min_chunks=3)
    # v2.0 fixed hop: 25 tokens first (no prompt to align), then 25 a chunk, then the rest.
    assert len(chunks[0].pcm) == FIRST_CHUNK
    assert all(len(c.pcm) == HOP_CHUNK for c in chunks[1:-1])
    assert sum(len(c.pcm) for c in chunks) % 960 == 0
    assert arrivals[0] < arrivals[-1] - 0.05, arrivals  # the first came well before the end


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"mode": Mode.ZERO_SHOT, "reference_text": "A reference."}, id="zero_shot"),
        pytest.param({"mode": Mode.CROSS_LINGUAL}, id="cross_lingual"),
        pytest.param({"mode": Mode.INSTRUCT, "instruct_text": "Speak slowly."}, id="instruct"),
    ],
)
@pytest.mark.slow
def test_modes_with_reference_audio(
    engine: CosyVoiceEngine, reference: ReferenceAudio, fields: dict[str, Any]
) -> None:
    request = SynthesisRequest(TEXT, reference_audio=reference, **fields)
    check_supported(engine.name, engine.capabilities, engine.voices, request)
    assert_audio(collect(engine, request), min_chunks=2)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"mode": Mode.SFT}, id="sft"),
        pytest.param({"mode": Mode.ZERO_SHOT}, id="zero_shot"),
        pytest.param({"mode": Mode.CROSS_LINGUAL}, id="cross_lingual"),
        pytest.param({"mode": Mode.INSTRUCT, "emotion": "happy"}, id="instruct_emotion"),
        pytest.param({"mode": Mode.INSTRUCT, "dialect": "cantonese"}, id="instruct_dialect"),
        pytest.param({"mode": Mode.INSTRUCT, "instruct_text": "慢慢说"}, id="instruct_text"),
    ],
)
@pytest.mark.slow
def test_modes_with_a_registered_voice(
    engine: CosyVoiceEngine, registered_voice: str, fields: dict[str, Any]
) -> None:
    request = SynthesisRequest(TEXT, speaker_id=registered_voice, **fields)
    check_supported(engine.name, engine.capabilities, engine.voices, request)
    assert_audio(collect(engine, request), min_chunks=2)


@pytest.mark.slow
def test_instruct_with_emotion_and_dialect_on_a_builtin_speaker(
    engine: CosyVoiceEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str | None] = []
    build_input = engine._runtime.build_input

    def spy(mode: Mode, text: str, prompt: dict[str, Any], instruction: str | None) -> Any:
        seen.append(instruction)
        return build_input(mode, text, prompt, instruction)

    monkeypatch.setattr(engine._runtime, "build_input", spy)
    request = SynthesisRequest(TEXT, Mode.INSTRUCT, emotion="sad", dialect="sichuanese")
    assert_audio(collect(engine, request))
    assert seen == ["用四川话，用伤心的语气说这句话" + END_OF_PROMPT]


@pytest.mark.slow
def test_text_is_split_and_spoken_in_order(
    engine: CosyVoiceEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pieces: list[str] = []
    build_input = engine._runtime.build_input

    def spy(mode: Mode, text: str, prompt: dict[str, Any], instruction: str | None) -> Any:
        pieces.append(text)
        return build_input(mode, text, prompt, instruction)

    monkeypatch.setattr(engine._runtime, "build_input", spy)
    assert_audio(collect(engine, SynthesisRequest("One. Two!")), min_chunks=2)
    assert pieces == ["One.", "Two!"]


@pytest.mark.slow
def test_refusals(engine: CosyVoiceEngine, reference: ReferenceAudio) -> None:
    cases = {
        "unknown_voice": SynthesisRequest(TEXT, speaker_id="nobody"),
        "unsupported": SynthesisRequest(TEXT, Mode.SFT, emotion="happy"),
    }
    for error, request in cases.items():
        with pytest.raises(ClientError) as info:
            collect(engine, request)
        assert info.value.code == error, request
    with pytest.raises(ClientError) as info:
        collect(engine, SynthesisRequest(TEXT, Mode.SFT, reference_audio=reference))
    assert info.value.code == "unsupported"


@pytest.fixture(scope="module")
def registered_voice(engine: CosyVoiceEngine, reference: ReferenceAudio) -> str:
    engine.register_voice("alice", reference, "A reference sentence.")
    return "alice"


@pytest.mark.slow
def test_register_voice_persists_across_restarts(
    engine: CosyVoiceEngine, registered_voice: str, reference: ReferenceAudio
) -> None:
    assert any(v.voice_id == registered_voice and v.cloned for v in engine.voices)
    assert engine.config.voices_path.is_file()
    with pytest.raises(ClientError) as info:
        engine.register_voice(registered_voice, reference, None)
    assert info.value.code == "voice_exists"

    restarted = CosyVoiceEngine(engine.config)  # loads the model again from disk
    try:
        voices = {v.voice_id: v for v in restarted.voices}
        assert voices[registered_voice].cloned and not voices[SPEAKER_ID].cloned
        request = SynthesisRequest(TEXT, Mode.ZERO_SHOT, speaker_id=registered_voice)
        assert_audio(collect(restarted, request))
    finally:
        restarted.close()


@pytest.mark.slow
def test_zero_shot_refuses_a_voice_registered_without_transcript(
    engine: CosyVoiceEngine, reference: ReferenceAudio
) -> None:
    engine.register_voice("mute", reference, None)
    with pytest.raises(ClientError) as info:
        collect(engine, SynthesisRequest(TEXT, Mode.ZERO_SHOT, speaker_id="mute"))
    assert info.value.code == "unsupported"
    assert_audio(collect(engine, SynthesisRequest(TEXT, Mode.CROSS_LINGUAL, speaker_id="mute")))


@pytest.mark.slow
def test_concurrent_requests(engine: CosyVoiceEngine, reference: ReferenceAudio) -> None:
    requests = [
        SynthesisRequest(TEXT, speaker_id=SPEAKER_ID),
        SynthesisRequest(TEXT, Mode.CROSS_LINGUAL, reference_audio=reference),
        SynthesisRequest(TEXT, Mode.INSTRUCT, emotion="angry"),
    ]
    results: list[list[AudioChunk] | BaseException] = [[] for _ in requests]

    def run(i: int) -> None:
        try:
            results[i] = collect(engine, requests[i])
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for result in results:
        assert isinstance(result, list), result
        assert_audio(result, min_chunks=2)


# --------------------------------------------------------------------------- bounds


def slow_lm(original: Callable[..., Iterator[int]], delay_s: float, produced: list[int]) -> Any:
    def inference(**kwargs: Any) -> Iterator[int]:
        for token in original(**kwargs):
            time.sleep(delay_s)
            produced.append(token)
            yield token

    return inference


@pytest.mark.slow
def test_cancel_stops_within_a_chunk_and_stops_the_lm(
    make_engine: Callable[..., CosyVoiceEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(max_token_text_ratio=20.0)  # up to 240 tokens: ~2.4 s of LM here
    llm = llm_of(engine)
    produced: list[int] = []
    monkeypatch.setattr(llm, "inference", slow_lm(llm.inference, 0.01, produced))
    cancel = threading.Event()
    chunks = engine.synthesize(SynthesisRequest(TEXT, speaker_id=SPEAKER_ID), cancel)
    first = next(chunks)
    assert len(first.pcm) == FIRST_CHUNK
    cancel.set()
    started = time.perf_counter()
    assert list(chunks) == []
    assert time.perf_counter() - started < 1.5
    at_cancel = len(produced)
    assert wait_for_lm_threads_to_end() == []
    assert at_cancel < 240 and len(produced) <= at_cancel + 1, "the LM kept running"


@pytest.mark.slow
def test_closing_the_generator_stops_the_lm(
    make_engine: Callable[..., CosyVoiceEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(max_token_text_ratio=20.0)
    llm = llm_of(engine)
    produced: list[int] = []
    monkeypatch.setattr(llm, "inference", slow_lm(llm.inference, 0.01, produced))
    chunks = engine.synthesize(SynthesisRequest(TEXT), threading.Event())
    next(chunks)
    chunks.close()  # what SynthesisStream's worker does when a reader goes away
    at_close = len(produced)
    assert wait_for_lm_threads_to_end() == []
    assert at_close < 240 and len(produced) <= at_close + 1, "the LM kept running"


@pytest.mark.slow
def test_lm_error_fails_fast_and_the_engine_recovers(
    engine: CosyVoiceEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = llm_of(engine)
    original = llm.inference

    def broken(**kwargs: Any) -> Iterator[int]:
        yield from (1, 2, 3)
        raise RuntimeError("LM exploded")

    monkeypatch.setattr(llm, "inference", broken)
    started = time.perf_counter()
    with pytest.raises(ClientError) as info:
        collect(engine, SynthesisRequest(TEXT))
    assert info.value.code == "synthesis_failed"
    assert "LM exploded" in info.value.message
    assert time.perf_counter() - started < 2.0  # upstream's tts() would spin forever
    monkeypatch.setattr(llm, "inference", original)
    assert_audio(collect(engine, SynthesisRequest(TEXT)))


@pytest.mark.slow
def test_hung_lm_times_out_and_the_engine_recovers(
    make_engine: Callable[..., CosyVoiceEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(chunk_timeout_s=0.5)
    llm = llm_of(engine)
    original = llm.inference
    release = threading.Event()

    def hung(**kwargs: Any) -> Iterator[int]:
        release.wait(10.0)  # a forward pass that never returns (until the test lets go)
        yield from ()

    monkeypatch.setattr(llm, "inference", hung)
    started = time.perf_counter()
    with pytest.raises(ClientError) as info:
        collect(engine, SynthesisRequest(TEXT))
    elapsed = time.perf_counter() - started
    assert info.value.code == "timeout"
    assert 0.5 <= elapsed < 3.0, elapsed
    release.set()
    assert wait_for_lm_threads_to_end() == []
    monkeypatch.setattr(llm, "inference", original)
    assert_audio(collect(engine, SynthesisRequest(TEXT)))


@pytest.mark.slow
def test_request_timeout_bounds_a_slow_request(
    make_engine: Callable[..., CosyVoiceEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(request_timeout_s=0.6, max_token_text_ratio=20.0)
    llm = llm_of(engine)
    monkeypatch.setattr(llm, "inference", slow_lm(llm.inference, 0.02, []))
    started = time.perf_counter()
    with pytest.raises(ClientError) as info:
        collect(engine, SynthesisRequest(TEXT))
    assert info.value.code == "timeout"
    assert "did not finish" in info.value.message
    assert time.perf_counter() - started < 4.0
    assert wait_for_lm_threads_to_end() == []


@pytest.mark.slow
def test_time_waiting_for_the_reader_does_not_count(
    make_engine: Callable[..., CosyVoiceEngine],
) -> None:
    engine = make_engine(request_timeout_s=2.8, chunk_timeout_s=2.5)
    chunks = []
    for chunk in engine.synthesize(SynthesisRequest(TEXT), threading.Event()):
        chunks.append(chunk)
        time.sleep(3.0 if len(chunks) == 1 else 0.0)  # a reader pacing playback
    assert_audio(chunks, min_chunks=3)


@pytest.mark.slow
async def test_through_synthesis_stream(engine: CosyVoiceEngine) -> None:
    stream = SynthesisStream(engine, SynthesisRequest(TEXT), chunk_timeout_s=20.0)
    first = await stream.__anext__()
    assert first.sample_rate_hz == RATE and len(first.pcm) == FIRST_CHUNK
    await stream.aclose()
    remaining = await asyncio.to_thread(wait_for_lm_threads_to_end)
    assert remaining == []
