"""The lossy-link bench's link model: the loss and delay it is set to are what it makes."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest

from bench._netem import Condition, Delay, GilbertElliott, relay
from bench.lossy import CONDITIONS

DRAWS = 200_000


@pytest.mark.parametrize(
    ("name", "loss", "burst"),
    [("5%", 0.05, 1 / 0.95), ("15%", 0.15, 1 / 0.85), ("burst", 0.075, 2.5)],
)
def test_gilbert_elliott_realises_its_loss_and_mean_burst(
    name: str, loss: float, burst: float
) -> None:
    condition = CONDITIONS[name]
    model = GilbertElliott(condition.enter, condition.leave, random.Random(1))
    for _ in range(DRAWS):
        model.drop()
    assert model.seen == DRAWS
    assert model.lost / DRAWS == pytest.approx(loss, rel=0.05)
    assert model.lost / model.bursts == pytest.approx(burst, rel=0.05)


def test_a_clean_condition_loses_nothing() -> None:
    model = GilbertElliott(CONDITIONS["clean"].enter, CONDITIONS["clean"].leave, random.Random(1))
    assert not any(model.drop() for _ in range(10_000))


def test_delay_stays_within_its_jitter_and_never_reorders() -> None:
    delay = Delay(40, 20, random.Random(1))
    spaced = [delay.due(t) - t for t in range(1000)]  # 1 s apart: nothing to wait for
    assert 0.020 <= min(spaced) and max(spaced) <= 0.060
    assert sum(spaced) / len(spaced) == pytest.approx(0.040, abs=0.002)
    close = [delay.due(1000 + i * 0.001) for i in range(1000)]  # 1 ms apart: many would overtake
    assert close == sorted(close) and len(set(close)) == len(close)


async def test_the_relay_delays_packets_in_order_and_counts_them() -> None:
    client, client_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    server, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    stop = asyncio.Event()
    running = asyncio.create_task(
        relay((client_end.fileno(), server_end.fileno()), Condition(), stop)
    )
    await asyncio.sleep(0)
    sent = time.monotonic()
    for i in range(20):
        client.send(b"%d" % i)
    server.settimeout(1)
    got = [await asyncio.to_thread(server.recv, 100) for _ in range(20)]
    waited_ms = (time.monotonic() - sent) * 1000
    stop.set()
    realised = await running
    for s in (client, client_end, server, server_end):
        s.close()
    assert got == [b"%d" % i for i in range(20)]
    assert waited_ms >= 20
    assert realised["up"]["packets"] == 20 and realised["up"]["loss_pct"] == 0
    assert 20 <= realised["up"]["delay_ms"][0] <= 70  # p50, the relay's timer included
