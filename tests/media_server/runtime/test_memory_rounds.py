"""The capacity bench's memory run tells a high-water mark from a leak."""

from __future__ import annotations

from bench.capacity import Memory, rounds_line


def _memory(rounds_mb: tuple[float, ...]) -> Memory:
    return Memory(
        start_mb=90.0,
        idle_mb=110.0,
        per_session_mb=0.2,
        after_close_mb=97.0,
        cycled=1000 * len(rounds_mb),
        failed=0,
        rounds_mb=rounds_mb,
    )


def test_growth_is_counted_per_round_after_the_first() -> None:
    # the first round still carries what the peak left; only later rounds tell a leak
    line = rounds_line(_memory((98.0, 101.0, 104.0)), 1000)
    assert "98.0 (1000), 101.0 (2000), 104.0 (3000)" in line
    assert "+3.00 MB per round after the first" in line


def test_a_flat_series_shows_no_growth() -> None:
    line = rounds_line(_memory((101.6, 101.6)), 1000)
    assert "+0.00 MB per round" in line


def test_one_round_has_no_later_growth_to_show() -> None:
    assert "+0.00 MB per round" in rounds_line(_memory((101.6,)), 1000)
