"""LoopLagProbe: observes how late each wake-up came, on the injected clock."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from media_server.runtime.loop_lag import LoopLagProbe
from media_server.tasks import cancel_and_wait
from media_server.telemetry.metrics import ServerMetrics
from synthesis.testing import FakeClock


def lag_samples(metrics: ServerMetrics) -> tuple[float, float]:
    registry: CollectorRegistry = metrics.registry
    count = registry.get_sample_value("vms_event_loop_lag_seconds_count")
    total = registry.get_sample_value("vms_event_loop_lag_seconds_sum")
    assert count is not None and total is not None
    return count, total


async def test_a_late_wake_up_is_observed_as_lag() -> None:
    metrics, clock = ServerMetrics(), FakeClock(oversleep_s=0.03)
    probe = LoopLagProbe(clock, metrics.loop_lag, interval_s=0.5)
    assert await probe.sample() == pytest.approx(0.03)
    assert clock.sleeps == [pytest.approx(1000.5)]
    count, total = lag_samples(metrics)
    assert count == 1 and total == pytest.approx(0.03)
    bucket = metrics.registry.get_sample_value("vms_event_loop_lag_seconds_bucket", {"le": "0.02"})
    assert bucket == 0  # 30 ms is above the 20 ms bucket


async def test_an_on_time_wake_up_is_zero_lag() -> None:
    metrics, clock = ServerMetrics(), FakeClock()
    probe = LoopLagProbe(clock, metrics.loop_lag, interval_s=0.5)
    assert await probe.sample() == 0.0
    assert lag_samples(metrics) == (1, 0.0)


async def test_run_samples_until_cancelled() -> None:
    metrics, clock = ServerMetrics(), FakeClock(oversleep_s=0.001)
    probe = LoopLagProbe(clock, metrics.loop_lag, interval_s=0.5)
    task = asyncio.get_running_loop().create_task(probe.run())
    while probe.samples < 5:
        await asyncio.sleep(0)
    await cancel_and_wait(task)
    count, total = lag_samples(metrics)
    assert count == probe.samples >= 5
    assert total == pytest.approx(0.001 * probe.samples)
    # each deadline is an interval after the previous (late) wake-up
    assert clock.sleeps[1] - clock.sleeps[0] == pytest.approx(0.501)


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LoopLagProbe(FakeClock(), ServerMetrics().loop_lag, interval_s=0)
