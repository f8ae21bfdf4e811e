"""``GET /openapi.json``: the HTTP API described as OpenAPI 3.1."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from synthesis.request import SPEED_MAX, SPEED_MIN, Mode

ERROR = {"$ref": "#/components/schemas/Error"}
OPERATOR: list[dict[str, list[str]]] = [{"operator": []}, {}]
"""Needs the operator token when the server has one."""
CREATOR: list[dict[str, list[str]]] = [{"operator": []}, {"join": []}, {}]
"""Needs the token the session was created with, if any."""


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Invalid request (the message names the field)",
        401: "Token required, or not the right one (docs/security.md)",
        403: "Valid token, but not for this session, room, role or origin",
        404: "Unknown session",
        405: "Method not allowed",
        409: "Already exists; or an ICE restart before the session connected",
        412: "If-Match is not the session's current ETag (its ICE was restarted since)",
        413: "Body too large",
        415: "Wrong Content-Type",
        422: "The engine cannot do this (e.g. zero_shot on piper); ICE restart unsupported",
        428: "If-Match is missing (WHEP: the ETag to trickle, * to restart ICE)",
        429: "This client is over one of its per-client bounds; see Retry-After",
        503: "Limit reached, or the server is draining (error 'draining'); see Retry-After",
        504: "The engine produced no audio in time",
    }
    return {
        str(c): {"description": text[c], "content": {"application/json": {"schema": ERROR}}}
        for c in codes
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _path_params(*names: str) -> list[dict[str, Any]]:
    return [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
    ]


_SDP = {"content": {"application/sdp": {"schema": {"type": "string"}}}}
_FRAG = {"content": {"application/trickle-ice-sdpfrag": {"schema": {"type": "string"}}}}
_ETAG = {"ETag": {"description": "The session's ICE generation", "schema": {"type": "string"}}}
_IF_MATCH: dict[str, Any] = {
    "name": "If-Match",
    "in": "header",
    "required": True,
    "description": "The ETag of the POST (or of the last restart) to trickle; * to restart ICE",
    "schema": {"type": "string"},
}
_PATCH_RESPONSES: dict[str, Any] = {
    "200": {"description": "ICE restarted: the server's new credentials and candidates"}
    | _FRAG
    | {"headers": _ETAG},
    "204": {"description": "Candidates applied", "headers": _ETAG},
    **_errors(400, 401, 403, 404, 409, 412, 415, 422, 428, 429),
}
ROOM_PATHS: dict[str, Any] = {
    "/rooms/{room}/whep": {
        "parameters": _path_params("room"),
        "post": {
            "summary": "Join a room as a listener (WHEP); a speaker token may also talk, "
            "a caller token also sends its microphone (sendrecv)",
            "requestBody": {"required": True, **_SDP},
            "responses": {
                "201": {"description": "SDP answer; Location names the listener"}
                | _SDP
                | {"headers": _ETAG},
                **_errors(400, 401, 403, 413, 415, 429, 503),
            },
            "security": [{"join": []}],
        },
    },
    "/rooms/{room}/whep/{listener_id}": {
        "parameters": _path_params("room", "listener_id"),
        "patch": {
            "summary": "Trickle ICE candidates, or restart ICE (If-Match: *, new ice-ufrag/pwd)",
            "parameters": [_IF_MATCH],
            "requestBody": {
                "required": True,
                "content": {"application/trickle-ice-sdpfrag": {"schema": {"type": "string"}}},
            },
            "responses": _PATCH_RESPONSES,
            "security": [{"join": []}],
        },
        "delete": {
            "summary": "Leave the room",
            "responses": {"200": {"description": "Left"}, **_errors(401, 403, 404)},
            "security": [{"join": []}],
        },
    },
    "/rooms/{room}/whep/{listener_id}/stats": {
        "parameters": _path_params("room", "listener_id"),
        "get": {
            "summary": "The listener's connection and the room's pacing",
            "responses": {"200": {"description": "Stats"}, **_errors(401, 403, 404)},
            "security": [{"join": []}],
        },
    },
    "/rooms/{room}/bot": {
        "parameters": _path_params("room"),
        "get": {
            "summary": "WebSocket: a bot speaks into the room (docs/protocol.md)",
            "responses": {
                "101": {"description": "Switching protocols"},
                **_errors(400, 401, 403, 429, 503),
            },
            "security": [{"join": []}],
        },
    },
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "voice-media-server",
        "version": "0.1.0",
        "description": "Text in, speech out: live over WebRTC (WHEP) or streamed over HTTP "
        "and WebSocket. The data-channel protocol is in docs/protocol.md.",
    },
    "paths": {
        "/whep": {
            "post": {
                "summary": "Start a WebRTC session (WHEP): offer in, answer out",
                "parameters": [
                    {
                        "name": "voice",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/sdp": {"schema": {"type": "string"}}},
                },
                "responses": {
                    "201": {
                        "description": "SDP answer; Location names the session",
                        "headers": {"Location": {"schema": {"type": "string"}}, **_ETAG},
                        "content": {"application/sdp": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 413, 415, 429, 503),
                },
                "security": OPERATOR,
            }
        },
        "/whep/{session_id}": {
            "parameters": [
                {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "patch": {
                "summary": "Trickle ICE candidates (RFC 8840 sdpfrag), or restart ICE "
                "(If-Match: *, new ice-ufrag/ice-pwd)",
                "parameters": [_IF_MATCH],
                "requestBody": {
                    "required": True,
                    "content": {"application/trickle-ice-sdpfrag": {"schema": {"type": "string"}}},
                },
                "responses": _PATCH_RESPONSES,
                "security": CREATOR,
            },
            "delete": {
                "summary": "End the session",
                "responses": {"200": {"description": "Closed"}, **_errors(401, 403, 404)},
                "security": CREATOR,
            },
        },
        "/whep/{session_id}/stats": {
            "parameters": [
                {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": "Pacing and queue stats of one session",
                "responses": {
                    "200": _json({"type": "object"}) | {"description": "Stats"},
                    **_errors(401, 403, 404),
                },
                "security": CREATOR,
            },
        },
        "/tts": {
            "post": {
                "summary": "Synthesise text; audio streams back as it is produced",
                "requestBody": {
                    "required": True,
                    **_json({"$ref": "#/components/schemas/TtsRequest"}),
                },
                "responses": {
                    "200": {
                        "description": "Audio (pcm: s16le mono; wav: streamable, unknown length; "
                        "ogg: Ogg/Opus 48 kHz)",
                        "headers": {
                            "X-Sample-Rate": {"schema": {"type": "integer"}},
                            "X-Channels": {"schema": {"type": "integer"}},
                        },
                        "content": {
                            "audio/pcm": {},
                            "audio/wav": {},
                            "audio/ogg": {},
                        },
                    },
                    **_errors(400, 401, 413, 415, 422, 429, 503, 504),
                },
                "security": OPERATOR,
            }
        },
        "/tts/ws": {
            "get": {
                "summary": "WebSocket: JSON messages as on the data channel (say, text.delta, "
                "text.done, cancel; reference_audio allowed); binary audio and JSON events back",
                "parameters": [
                    {
                        "name": "format",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["pcm", "ogg"], "default": "pcm"},
                    }
                ],
                "responses": {
                    "101": {"description": "Switching protocols"},
                    **_errors(400, 401, 403, 429, 503),
                },
                "security": OPERATOR,
            }
        },
        "/voices": {
            "get": {
                "summary": "The engine, its capabilities and voices",
                "responses": {"200": {"description": "Voices"} | _json({"type": "object"})},
            },
            "post": {
                "summary": "Register a cloned voice from a reference clip (engines that clone)",
                "requestBody": {
                    "required": True,
                    **_json({"$ref": "#/components/schemas/VoiceRegistration"}),
                },
                "responses": {
                    "201": {"description": "Registered"} | _json({"type": "object"}),
                    **_errors(400, 401, 409, 413, 415, 422, 429),
                },
                "security": OPERATOR,
            },
        },
        **ROOM_PATHS,
        "/stats": {
            "get": {
                "summary": "Server stats: counts for anyone; with the operator token also "
                "per_session (session ids) and rooms (names, identities), each with its "
                "pacing: frames, underruns, lateness p50/p99/max (rooms: send lateness too)",
                "responses": {"200": {"description": "OK"}},
            }
        },
        "/stats/window": {
            "post": {
                "summary": "Start a fresh measuring window in every session's and room's "
                "pacing stats: GET /stats then covers only the time since",
                "responses": {
                    "200": {"description": "How many sessions and rooms"}
                    | _json({"type": "object"}),
                    **_errors(401),
                },
                "security": OPERATOR,
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text format; docs/operations.md lists them)",
                "responses": {
                    "200": {
                        "description": "Counters, histograms and gauges",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(401),
                },
                "security": OPERATOR,
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "OK"}}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: 503 'draining' once SIGTERM has started the drain",
                "responses": {"200": {"description": "Ready"}, **_errors(503)},
            }
        },
    },
    "components": {
        "securitySchemes": {
            "operator": {
                "type": "http",
                "scheme": "bearer",
                "description": "VMS_API_TOKEN, when the server has one; a browser WebSocket "
                "sends it as the subprotocol 'vms.token.<token>' beside 'vms'",
            },
            "join": {
                "type": "http",
                "scheme": "bearer",
                "description": "A room join token (voice-media-token); on a WebSocket also "
                "?token= or the subprotocol 'vms.token.<token>'",
            },
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "message", "solution"],
                "properties": {
                    "error": {"type": "string"},
                    "message": {"type": "string"},
                    "solution": {"type": "string"},
                },
            },
            "TtsRequest": {
                "type": "object",
                "required": ["text"],
                "additionalProperties": False,
                "properties": {
                    "text": {"type": "string", "minLength": 1},
                    "mode": {"type": "string", "enum": [m.value for m in Mode], "default": "sft"},
                    "speaker_id": {"type": "string", "maxLength": 64},
                    "reference_audio": {
                        "type": "string",
                        "contentEncoding": "base64",
                        "description": "WAV/MP3/OGG/FLAC, 1-30 s, at most 5 MiB",
                    },
                    "reference_text": {"type": "string"},
                    "speed": {
                        "type": "number",
                        "minimum": SPEED_MIN,
                        "maximum": SPEED_MAX,
                        "default": 1.0,
                    },
                    "emotion": {"type": "string"},
                    "dialect": {"type": "string"},
                    "instruct_text": {"type": "string"},
                    "stream": {"type": "boolean", "default": True},
                    "format": {"type": "string", "enum": ["pcm", "wav", "ogg"], "default": "pcm"},
                },
            },
            "VoiceRegistration": {
                "type": "object",
                "required": ["voice_id", "reference_audio"],
                "properties": {
                    "voice_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                    "reference_audio": {"type": "string", "contentEncoding": "base64"},
                    "reference_text": {"type": "string"},
                },
            },
        },
    },
}


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(SPEC)
