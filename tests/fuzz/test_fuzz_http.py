"""Bounded fuzzing of the HTTP API: no 5xx for client input, every error the JSON triple,
and a healthy client is still served afterwards.

A few seconds per run by default; ``VMS_FUZZ_EXAMPLES=2000 pytest tests/fuzz`` runs longer.
"""

from __future__ import annotations

import json
import os
import random
import re
import string
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.openapi import SPEC
from synthesis import Engine
from tests.conftest import loopback_settings
from tests.fuzz.server import ThreadedServer, check_reply
from tests.whep_client import make_offer

EXAMPLES = int(os.environ.get("VMS_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SECRET = "fuzz-room-secret-0123456789"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(piper_engine: Engine) -> Iterator[ThreadedServer]:
    # Rooms on; per-client bounds stay at their defaults (the fuzzer is one anonymous client).
    running = ThreadedServer(loopback_settings(token_secret=SECRET), piper_engine)
    running.start()
    yield running
    assert_still_healthy(running)
    running.stop()


@pytest.fixture(scope="module")
def offer(server: ThreadedServer) -> str:
    return str(server.run(make_offer()))


def assert_still_healthy(server: ThreadedServer) -> None:
    reply = server.request("GET", "/healthz")
    assert reply.status == 200 and reply.json()["status"] == "ok"
    reply = server.request(
        "POST", "/tts", json.dumps({"text": "Still here.", "stream": False}),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert reply.status == 200 and len(reply.body) > 1000


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
REQUEST_FIELDS = [
    "text", "mode", "speaker_id", "voice", "reference_audio", "reference_text", "speed",
    "emotion", "dialect", "instruct_text", "stream", "format", "type", "id", "voice_id",
]  # fmt: skip
texts = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from(["\x00", "\ufeff", "\u202e", "\n"]),
    max_size=30,
)
field_values = st.one_of(
    json_values,
    texts,
    st.sampled_from(["sft", "zero_shot", "cross_lingual", "instruct", "pcm", "wav", "ogg", "mp3"]),
    st.sampled_from(["AAAA", "fLaC", "UklGRg==", "=", "ZkxhQwAAACIQABAA"]),
)
request_objects = st.dictionaries(st.sampled_from(REQUEST_FIELDS), field_values, max_size=6)


def _short_text(obj: dict[str, Any]) -> dict[str, Any]:
    """Keep any valid request cheap to synthesise: the fuzzer is after errors, not audio."""
    if isinstance(obj.get("text"), str):
        obj["text"] = obj["text"][:12]
    return obj


@FUZZ
@given(body=st.one_of(request_objects.map(_short_text), json_values, st.binary(max_size=64)))
@pytest.mark.slow
def test_tts_refuses_bad_json_cleanly(server: ThreadedServer, body: Any) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body)
    reply = server.request("POST", "/tts", raw, {"Content-Type": "application/json"})
    check_reply(reply)


@FUZZ
@given(depth=st.integers(min_value=1, max_value=5000), opener=st.sampled_from(["[", '{"a":']))
def test_deep_json_is_refused_cleanly(server: ThreadedServer, depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    reply = server.request(
        "POST", "/tts", opener * depth + "1" + closer * depth, {"Content-Type": "application/json"}
    )
    check_reply(reply)
    assert reply.status == 400


@FUZZ
@given(body=request_objects)
def test_voices_refuses_bad_registrations_cleanly(server: ThreadedServer, body: Any) -> None:
    reply = server.request(
        "POST", "/voices", json.dumps(body), {"Content-Type": "application/json"}
    )
    check_reply(reply)


def _mutate_sdp(sdp: str, rng: random.Random, edits: int) -> str:
    lines = sdp.strip().split("\r\n")
    for _ in range(edits):
        op = rng.randrange(5)
        i = rng.randrange(len(lines))
        if op == 0 and len(lines) > 1:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op == 2:
            head, _, tail = lines[i].partition("=")
            words = tail.split(" ")
            words[rng.randrange(len(words))] = rng.choice(
                ["", "0", "-1", "70000", "4294967296", "x" * 300, "\u00e9", "IN", "audio", "*"]
            )
            lines[i] = f"{head}={' '.join(words)}"
        elif op == 3:
            m = re.search(r"m=\w+ .*?(?=\r\nm=|\Z)", "\r\n".join(lines), re.S)
            if m:  # a whole section again (two m=application, two m=audio...)
                lines.extend(m.group(0).split("\r\n"))
        else:
            lines.insert(i, "".join(rng.choice(string.printable) for _ in range(rng.randrange(40))))
    return "\r\n".join(lines) + "\r\n"


@FUZZ
@given(seed=st.integers(0, 2**32), edits=st.integers(1, 6), room=st.booleans())
@pytest.mark.slow
def test_mangled_offers_are_refused_cleanly(
    server: ThreadedServer, offer: str, seed: int, edits: int, room: bool
) -> None:
    from media_server.rooms.tokens import Role, TokenSigner

    headers = {"Content-Type": "application/sdp"}
    path = "/whep"
    if room:
        token = TokenSigner(SECRET.encode()).issue("fuzz", Role.LISTENER, "fuzzer")
        headers["Authorization"] = f"Bearer {token}"
        path = "/rooms/fuzz/whep"
    reply = server.request("POST", path, _mutate_sdp(offer, random.Random(seed), edits), headers)
    check_reply(reply)
    if reply.status == 201:  # aiortc took it: end it again, with the token that made it
        auth = {k: v for k, v in headers.items() if k == "Authorization"}
        check_reply(server.request("DELETE", reply.headers["Location"], headers=auth))


candidate_lines = st.builds(
    lambda f, c, t, p, a, port, typ, extra: (
        f"a=candidate:{f} {c} {t} {p} {a} {port} typ {typ}{extra}"
    ),
    st.text(string.ascii_letters + string.digits, max_size=10),
    st.integers(-1, 300),
    st.sampled_from(["udp", "UDP", "tcp", "sctp", ""]),
    st.integers(-(2**33), 2**33),
    st.sampled_from(["127.0.0.1", "::1", "10.0.0.1", "x.local", "999.1.1.1", "", "a b"]),
    st.integers(-5, 70000),
    st.sampled_from(["host", "srflx", "prflx", "relay", "bogus", ""]),
    st.sampled_from(["", " raddr 0.0.0.0 rport 0", " generation 0", " tcptype active"]),
)
fragments = st.lists(
    st.one_of(
        candidate_lines,
        st.sampled_from(["a=end-of-candidates", "a=mid:0", "a=mid:zz", "a=ice-ufrag:other"]),
        st.text(max_size=40),
    ),
    max_size=8,
).map(lambda lines: "\r\n".join(lines) + "\r\n")


@FUZZ
@given(fragment=fragments)
@pytest.mark.slow
def test_mangled_trickle_is_refused_cleanly(
    server: ThreadedServer, offer: str, fragment: str
) -> None:
    created = server.request("POST", "/whep", offer, {"Content-Type": "application/sdp"})
    assert created.status == 201, created
    location = created.headers["Location"]
    try:
        reply = server.request(
            "PATCH", location, fragment, {"Content-Type": "application/trickle-ice-sdpfrag"}
        )
        check_reply(reply)
        assert server.request("GET", f"{location}/stats").status == 200  # still there
    finally:
        check_reply(server.request("DELETE", location))


def _spec_operations() -> list[tuple[str, str]]:
    return [
        (path, method.upper())
        for path, item in SPEC["paths"].items()
        for method in item
        if method in ("get", "post", "patch", "delete", "put")
    ]


@FUZZ
@given(
    operation=st.sampled_from(_spec_operations()),
    param=st.text(alphabet=string.printable, max_size=20),
    query=st.dictionaries(
        st.sampled_from(["voice", "format", "token", "x"]), st.text(max_size=10), max_size=2
    ),
    content_type=st.sampled_from(
        ["application/json", "application/sdp", "application/trickle-ice-sdpfrag", "text/plain", ""]
    ),
    body=st.binary(max_size=200),
)
def test_every_documented_operation_refuses_garbage_cleanly(
    server: ThreadedServer,
    operation: tuple[str, str],
    param: str,
    query: dict[str, str],
    content_type: str,
    body: bytes,
) -> None:
    from urllib.parse import quote, urlencode

    path, method = operation
    path = re.sub(r"\{[^}]+\}", quote(param, safe="") or "x", path)
    if query:
        path = f"{path}?{urlencode(query)}"
    headers = {"Content-Type": content_type} if content_type else {}
    reply = server.request(method, path, body if method in ("POST", "PATCH") else None, headers)
    check_reply(reply)
    if reply.status == 201 and "Location" in reply.headers:
        server.request("DELETE", reply.headers["Location"])
