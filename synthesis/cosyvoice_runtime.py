"""The CosyVoice 2 runtime: one loaded upstream model, and streaming from it.

Importing this module imports torch; :mod:`synthesis.cosyvoice` imports it only when
an engine is built. Everything upstream-specific lives here and in
:mod:`synthesis.cosyvoice_import` (where the vendored code comes from, and its shims).

**Streaming.** Upstream's ``inference_*`` wrappers and ``CosyVoice2Model.tts`` are not
used, only the pieces under them (frontend feature extraction and tokenizer, the Qwen2
LM's ``inference``, ``token2wav``: flow + HiFT with its per-request cache). Reasons:

- ``tts()`` loops forever when the LM thread raises (``llm_end_dict`` is never set), has
  no way to stop its LM thread, and starts a non-daemon thread per call;
- with a registered speaker (``zero_shot_spk_id``) the frontend returns the shared
  ``spk2info`` entry and mutates it (``text`` is written into it, and cross-lingual and
  instruct2 ``del`` keys from it), so concurrent requests race and later ones fail;
  instruct2 with a registered speaker silently drops the instruction.

:meth:`CosyVoiceRuntime.stream` mirrors the v2.0 streaming loop (same hop arithmetic,
same ``token2wav`` calls) with a per-request first hop, a condition variable instead of
0.1 s polling, LM errors re-raised in the caller, and an LM thread that stops when the
stream is closed.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import math
import os
import sys
import threading
import uuid
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from synthesis.cosyvoice_import import (
    RuntimeUnavailable,
    import_cosyvoice2,
    install_shims,
    quiet_import,
)
from synthesis.request import Mode

logger = logging.getLogger(__name__)

torch: Any = importlib.import_module("torch")

POLL_S: Final = 0.05
"""While waiting for LM tokens, :meth:`CosyVoiceRuntime.stream` yields ``None`` this often."""
LM_JOIN_S: Final = 0.5
"""Closing a stream waits this long for its LM thread (it stops at the next token)."""
LM_THREAD_PREFIX: Final = "cosyvoice-lm"

_FLOW_PROMPT_KEYS: Final = (
    "flow_prompt_speech_token",
    "flow_prompt_speech_token_len",
    "prompt_speech_feat",
    "prompt_speech_feat_len",
)
_LLM_PROMPT_KEYS: Final = (
    "prompt_text",
    "prompt_text_len",
    "llm_prompt_speech_token",
    "llm_prompt_speech_token_len",
)

SpeakerEntry = dict[str, Any]
"""Upstream's ``spk2info`` value: prompt tokens, features and embeddings (tensors)."""
Pcm = npt.NDArray[np.float32]


# --------------------------------------------------------------------------- streaming


@dataclass
class _LmRun:
    """One request's LM thread and the tokens it has produced so far."""

    tokens: list[int] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    stop: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    error: BaseException | None = None


def is_out_of_memory(exc: BaseException) -> bool:
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _ints(values: Sequence[int]) -> Any:
    return torch.tensor([list(values)], dtype=torch.int32)


def _length(tensor: Any) -> Any:
    return torch.tensor([tensor.shape[1]], dtype=torch.int32)


class CosyVoiceRuntime:
    """One loaded CosyVoice2 model, shared by concurrent requests.

    The frontend (tokenizer, ONNX feature extractors) and ``spk2info`` are used
    under one lock; fast tokenizers are not safe to call from several threads.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        load_jit: bool = False,
        load_trt: bool = False,
        load_vllm: bool = False,
        fp16: bool = False,
    ) -> None:
        cosyvoice2 = import_cosyvoice2()
        with quiet_import():
            self._cv: Any = cosyvoice2(
                str(model_dir), load_jit=load_jit, load_trt=load_trt, load_vllm=load_vllm, fp16=fp16
            )
        self._model: Any = self._cv.model
        self._frontend: Any = self._cv.frontend
        self._lock = threading.Lock()
        if "token_offset" not in inspect.signature(self._model.token2wav).parameters:
            raise RuntimeUnavailable(
                "this CosyVoice runtime is not the v2.0-era API (token2wav without token_offset)"
            )
        self.sample_rate_hz = int(self._cv.sample_rate)
        self.token_hop_len = int(self._model.token_hop_len)
        self.pre_lookahead_len = int(self._model.flow.pre_lookahead_len)
        self.device = str(self._model.device)

    # ----------------------------------------------------------------- speakers

    def speaker_ids(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._frontend.spk2info)

    def speaker(self, speaker_id: str) -> SpeakerEntry | None:
        """A shallow copy of the speaker's entry (never the shared dict itself)."""
        with self._lock:
            entry = self._frontend.spk2info.get(speaker_id)
        return None if entry is None else dict(entry)

    def add_speaker(self, speaker_id: str, entry: SpeakerEntry) -> None:
        with self._lock:
            self._frontend.spk2info[speaker_id] = dict(entry)

    def remove_speaker(self, speaker_id: str) -> None:
        with self._lock:
            self._frontend.spk2info.pop(speaker_id, None)

    def prompt_from_audio(self, pcm_16k: Pcm, prompt_text: str) -> SpeakerEntry:
        """Prompt tokens, features and embedding of a 16 kHz clip (as ``add_zero_shot_spk``)."""
        speech = torch.from_numpy(np.ascontiguousarray(pcm_16k, dtype=np.float32)).unsqueeze(0)
        with self._lock:
            entry: SpeakerEntry = self._frontend.frontend_zero_shot(
                "", prompt_text, speech, self.sample_rate_hz, ""
            )
        entry.pop("text", None)
        entry.pop("text_len", None)
        return {key: _to_cpu(value) for key, value in entry.items()}

    def save_speakers(self, path: Path, speakers: Mapping[str, SpeakerEntry]) -> None:
        """Write ``speakers`` to ``path`` atomically (torch tensors, no pickled code)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        payload = {"version": 1, "speakers": {k: dict(v) for k, v in speakers.items()}}
        torch.save(payload, str(tmp))
        os.replace(tmp, path)

    def load_speakers(self, path: Path) -> dict[str, SpeakerEntry]:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
        speakers = payload.get("speakers", {}) if isinstance(payload, dict) else {}
        return {str(k): dict(v) for k, v in speakers.items()}

    # ----------------------------------------------------------------- inputs

    def _text_tokens(self, text: str) -> Any:
        with self._lock:
            tokens = self._frontend.tokenizer.encode(
                text, allowed_special=self._frontend.allowed_special
            )
        return _ints(tokens)

    def build_input(
        self, mode: Mode, text: str, prompt: SpeakerEntry, instruction: str | None = None
    ) -> dict[str, Any]:
        """The ``model_input`` of upstream's ``frontend_*`` for ``mode``, built on copies.

        ``prompt`` is a speaker entry (registered voice, ``spk2info`` speaker with only an
        ``embedding``, or :meth:`prompt_from_audio`). For ``instruct`` the instruction
        (ending in ``<|endofprompt|>``) takes the place of the prompt text, and the LM
        gets no prompt speech tokens, as in ``frontend_instruct2``.
        """
        text_tokens = self._text_tokens(text)
        embedding = prompt.get("flow_embedding", prompt.get("embedding"))
        if embedding is None:
            raise ValueError("the speaker entry has no embedding")
        model_input: dict[str, Any] = {
            "text": text_tokens,
            "text_len": _length(text_tokens),
            "llm_embedding": prompt.get("llm_embedding", embedding),
            "flow_embedding": embedding,
        }
        if mode is Mode.SFT:
            return model_input
        model_input.update({k: prompt[k] for k in _FLOW_PROMPT_KEYS if k in prompt})
        if mode is Mode.ZERO_SHOT:
            model_input.update({k: prompt[k] for k in _LLM_PROMPT_KEYS if k in prompt})
        elif mode is Mode.INSTRUCT:
            instruction_tokens = self._text_tokens(instruction or "")
            model_input["prompt_text"] = instruction_tokens
            model_input["prompt_text_len"] = _length(instruction_tokens)
        return model_input

    # ----------------------------------------------------------------- streaming

    def stream(
        self,
        model_input: Mapping[str, Any],
        *,
        first_hop_tokens: int,
        max_token_text_ratio: float,
    ) -> Generator[Pcm | None, None, None]:
        """Float PCM chunks at :attr:`sample_rate_hz` as the LM produces speech tokens.

        Yields ``None`` every :data:`POLL_S` while waiting, so the caller can check its
        cancel flag and deadlines. Closing the generator stops the LM thread at its next
        token. An exception in the LM thread is raised here.
        """
        run = _LmRun()
        request_id = str(uuid.uuid4())
        with self._model.lock:
            self._model.hift_cache_dict[request_id] = None
        thread = threading.Thread(
            target=self._lm_job,
            args=(model_input, run, request_id, max_token_text_ratio),
            name=f"{LM_THREAD_PREFIX}-{request_id[:8]}",
            daemon=True,
        )
        thread.start()
        try:
            yield from self._vocode(model_input, run, request_id, first_hop_tokens)
        finally:
            run.stop.set()
            thread.join(LM_JOIN_S)
            if thread.is_alive():
                logger.warning(
                    "CosyVoice LM thread %s did not stop in %.1f s", thread.name, LM_JOIN_S
                )
            with self._model.lock:
                self._model.hift_cache_dict.pop(request_id, None)

    def _vocode(
        self, model_input: Mapping[str, Any], run: _LmRun, request_id: str, first_hop: int
    ) -> Iterator[Pcm | None]:
        hop, lookahead = self.token_hop_len, self.pre_lookahead_len
        prompt_tokens = model_input.get("flow_prompt_speech_token")
        n_prompt = 0 if prompt_tokens is None else int(prompt_tokens.shape[1])
        # v2.0: the first hop is padded so that prompt + tokens is a multiple of the hop.
        first_hop += math.ceil(n_prompt / hop) * hop - n_prompt
        offset = 0
        while True:
            this_hop = first_hop if offset == 0 else hop
            need = offset + this_hop + lookahead

            def ready_or_done(n: int = need) -> bool:
                return len(run.tokens) >= n or run.finished

            with run.cond:
                run.cond.wait_for(ready_or_done, POLL_S)
                ready = list(run.tokens[:need]) if len(run.tokens) >= need else None
                finished, error = run.finished, run.error
            if error is not None:
                raise error
            if ready is not None:
                yield self._token2wav(ready, model_input, offset, request_id, finalize=False)
                offset += this_hop
            elif finished:
                break
            else:
                yield None
        with run.cond:
            tokens = list(run.tokens)
        if tokens:
            yield self._token2wav(tokens, model_input, offset, request_id, finalize=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.current_stream().synchronize()

    def _token2wav(
        self,
        tokens: list[int],
        model_input: Mapping[str, Any],
        offset: int,
        request_id: str,
        *,
        finalize: bool,
    ) -> Pcm:
        speech = self._model.token2wav(
            token=torch.tensor(tokens).unsqueeze(dim=0),
            prompt_token=model_input.get(
                "flow_prompt_speech_token", torch.zeros(1, 0, dtype=torch.int32)
            ),
            prompt_feat=model_input.get("prompt_speech_feat", torch.zeros(1, 0, 80)),
            embedding=model_input["flow_embedding"],
            token_offset=offset,
            uuid=request_id,
            stream=not finalize,  # as upstream: the last chunk runs the flow non-streaming
            finalize=finalize,
        )
        pcm: Pcm = speech.detach().float().cpu().numpy().reshape(-1)
        return pcm

    def _lm_job(
        self, model_input: Mapping[str, Any], run: _LmRun, request_id: str, ratio: float
    ) -> None:
        """Upstream's ``llm_job`` with a stop flag, a token cap, and errors kept."""
        model, llm = self._model, self._model.llm
        vllm = hasattr(llm, "vllm")
        device = model.device
        empty = torch.zeros(1, 0, dtype=torch.int32)
        prompt_text = model_input.get("prompt_text", empty)
        prompt_speech = model_input.get("llm_prompt_speech_token", empty)
        text = model_input["text"]
        autocast: Any = (
            torch.autocast("cuda", dtype=torch.float16)
            if model.fp16 and not vllm
            else contextlib.nullcontext()
        )
        stopped_early = False
        try:
            with model.llm_context, autocast:
                tokens = llm.inference(
                    text=text.to(device),
                    text_len=_length(text).to(device),
                    prompt_text=prompt_text.to(device),
                    prompt_text_len=_length(prompt_text).to(device),
                    prompt_speech_token=prompt_speech.to(device),
                    prompt_speech_token_len=_length(prompt_speech).to(device),
                    embedding=model_input["llm_embedding"].to(device),
                    max_token_text_ratio=ratio,
                    uuid=request_id,
                )
                try:
                    for token in tokens:
                        if run.stop.is_set():
                            stopped_early = True
                            break
                        with run.cond:
                            run.tokens.append(int(token))
                            run.cond.notify_all()
                finally:
                    tokens.close()
        except BaseException as exc:  # handed to the consumer, never lost in this thread
            with run.cond:
                run.error = exc
        finally:
            if stopped_early and vllm:
                _abort_vllm(llm, request_id)
            with run.cond:
                run.finished = True
                run.cond.notify_all()

    def close(self) -> None:
        self._cv = self._model = self._frontend = None
        release_memory()


def _abort_vllm(llm: Any, request_id: str) -> None:
    """Drop a stopped request from vLLM (upstream never aborts one)."""
    try:
        with llm.lock:
            llm.vllm.abort_request(request_id)
            llm.vllm_output_queue.pop(request_id, None)
    except Exception:  # best effort: the request only wastes LM steps
        logger.debug("could not abort vLLM request %s", request_id, exc_info=True)


def _to_cpu(value: Any) -> Any:
    return value.detach().cpu() if hasattr(value, "detach") else value


def lm_threads() -> list[threading.Thread]:
    """The LM threads still alive (for tests and diagnostics)."""
    return [t for t in threading.enumerate() if t.name.startswith(LM_THREAD_PREFIX)]


def _version(name: str) -> str:
    return str(getattr(importlib.import_module(name), "__version__", "?"))


def _main(argv: Sequence[str]) -> int:
    """``python -m synthesis.cosyvoice_runtime``: check that the runtime imports."""
    root = install_shims()
    import_cosyvoice2()
    print(  # noqa: T201 - a command-line check
        f"CosyVoice runtime OK: {root}\n"
        f"  torch {_version('torch')}, torchaudio {_version('torchaudio')}, "
        f"transformers {_version('transformers')}, onnxruntime {_version('onnxruntime')}, "
        f"cuda available: {torch.cuda.is_available()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
