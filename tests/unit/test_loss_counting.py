"""How a failover's dropped/cleared records are counted from per-attempt counters."""

from __future__ import annotations

from streamer.coordinator.failover.losses import growth as _growth
from streamer.graph import TaskId

A, B = TaskId("events", 0), TaskId("events", 1)


def test_growth_within_one_attempt_is_the_difference() -> None:
    assert _growth({A: (0, 100), B: (2, 7)}, {A: (0, 130), B: (2, 7)}) == 30


def test_a_peer_that_restarted_counts_its_new_attempt_from_zero() -> None:
    # A restarted (attempt 0 -> 1) and dropped 5 since: never 5 - 100.
    assert _growth({A: (0, 100), B: (0, 10)}, {A: (1, 5), B: (0, 12)}) == 7


def test_a_peer_without_a_baseline_counts_from_zero() -> None:
    assert _growth({}, {A: (3, 4)}) == 4
