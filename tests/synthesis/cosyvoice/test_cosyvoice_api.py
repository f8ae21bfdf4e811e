"""The HTTP API on the CosyVoice 2 engine (tiny random model): clone a voice, then use it."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Callable

import av
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from media_server.config import Settings
from signaling.app import create_app
from synthesis.cosyvoice import CosyVoiceEngine
from synthesis.request import ReferenceAudio


def wav_base64(reference: ReferenceAudio) -> str:
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            (reference.pcm * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
async def cosy_client(
    make_engine: Callable[..., CosyVoiceEngine], tmp_path: object
) -> AsyncIterator[TestClient]:
    engine = make_engine(voices_dir=tmp_path)
    app = create_app(Settings(ice_host_addresses=("127.0.0.1",)), engine=engine)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@pytest.mark.timeout(180)
@pytest.mark.slow
async def test_clone_a_voice_over_http_and_speak_with_it(
    cosy_client: TestClient, reference: ReferenceAudio
) -> None:
    voices = await (await cosy_client.get("/voices")).json()
    assert voices["engine"] == "cosyvoice"
    assert set(voices["capabilities"]["modes"]) == {"sft", "zero_shot", "cross_lingual", "instruct"}
    assert voices["capabilities"]["cloning"] is True
    clip = wav_base64(reference)
    # the runtime is shared by the whole session: a voice id no other test registers
    resp = await cosy_client.post(
        "/voices", json={"voice_id": "api-clone", "reference_audio": clip, "reference_text": "Hi."}
    )
    assert resp.status == 201, await resp.text()
    resp = await cosy_client.post(
        "/voices", json={"voice_id": "api-clone", "reference_audio": clip, "reference_text": "Hi."}
    )
    assert resp.status == 409
    resp = await cosy_client.post(
        "/tts", json={"text": "Hello.", "mode": "zero_shot", "speaker_id": "api-clone"}
    )
    assert resp.status == 200, await resp.text()
    assert resp.headers["X-Sample-Rate"] == "24000"
    pcm = np.frombuffer(await resp.read(), dtype=np.int16)
    assert pcm.size > 0.2 * 24000  # random weights: noise, not words; but audio
    resp = await cosy_client.post(
        "/tts",
        json={"text": "Hi.", "mode": "instruct", "speaker_id": "api-clone", "emotion": "happy",
              "speed": 1.5, "format": "ogg"},
    )  # fmt: skip
    assert resp.status == 200, await resp.text()
    with av.open(io.BytesIO(await resp.read())) as container:
        assert container.streams.audio[0].rate == 48000
    resp = await cosy_client.post("/tts", json={"text": "Hi.", "emotion": "bored"})
    body = await resp.json()
    assert resp.status == 422 and body["error"] == "unsupported" and "happy" in body["solution"]
