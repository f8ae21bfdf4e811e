"""PeerSession keeps events sent before the client's data channel is open."""

from __future__ import annotations

from typing import Any

from media_server.rtc.peer import MAX_UNSENT_MESSAGES, PeerSession


class FakeChannel:
    def __init__(self, state: str) -> None:
        self.readyState = state
        self.sent: list[str] = []
        self.handlers: dict[str, Any] = {}
        self.label = "control"

    def on(self, event: str, handler: Any) -> None:
        self.handlers[event] = handler

    def send(self, text: str) -> None:
        self.sent.append(text)


async def test_events_before_the_channel_opens_are_delivered_in_order() -> None:
    peer = PeerSession("t", (), lambda raw: None, lambda state: None)
    assert peer.send("first") and peer.send("second")  # RTP started; no channel yet
    channel = FakeChannel("connecting")
    peer._channel_opened(channel)  # type: ignore[arg-type]
    assert peer.send("third")
    assert channel.sent == []
    channel.readyState = "open"
    channel.handlers["open"]()
    assert peer.send("fourth")
    assert channel.sent == ["first", "second", "third", "fourth"]
    channel.readyState = "closed"
    assert not peer.send("lost")
    await peer.close()


async def test_the_unsent_buffer_is_bounded() -> None:
    peer = PeerSession("t", (), lambda raw: None, lambda state: None)
    for i in range(MAX_UNSENT_MESSAGES + 10):
        peer.send(str(i))
    channel = FakeChannel("open")
    peer._channel_opened(channel)  # type: ignore[arg-type]
    assert len(channel.sent) == MAX_UNSENT_MESSAGES and channel.sent[-1] == str(
        MAX_UNSENT_MESSAGES + 9
    )
    await peer.close()
