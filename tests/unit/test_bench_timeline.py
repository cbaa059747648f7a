"""The failover benchmark's measurements on synthetic timelines."""

from __future__ import annotations

import pytest

from streamer.bench.timeline import (
    band_times,
    latency_percentiles,
    max_gap,
    oracle_diff,
    percentile,
    rate_series,
    recovery_time,
)


def test_recovery_time_is_kill_to_first_output_at_or_after_it() -> None:
    times = [1.0, 2.0, 3.0, 7.5, 8.0]
    assert recovery_time(times, kill_at=3.5) == pytest.approx(4.0)
    assert recovery_time(times, kill_at=3.0) == pytest.approx(0.0)
    assert recovery_time(times, kill_at=9.0) is None


def test_max_gap_counts_silence_at_the_window_edges() -> None:
    times = [10.0, 10.5, 11.0, 14.0, 14.2]
    assert max_gap(times, 10.0, 15.0) == pytest.approx(3.0)  # 11.0 -> 14.0
    assert max_gap(times, 8.0, 15.0) == pytest.approx(3.0)
    assert max_gap(times, 5.0, 15.0) == pytest.approx(5.0)  # silent from 5.0 to 10.0
    assert max_gap([], 0.0, 2.0) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        max_gap(times, 3.0, 3.0)


def test_oracle_diff_counts_lost_duplicated_and_unexpected() -> None:
    diff = oracle_diff({"a", "b", "c", "d"}, ["a", "b", "b", "b", "c", "x"])
    assert (diff.expected, diff.delivered) == (4, 6)
    assert (diff.lost, diff.duplicated, diff.unexpected) == (1, 2, 1)
    exact = oracle_diff({"a", "b"}, ["b", "a"])
    assert (exact.lost, exact.duplicated, exact.unexpected) == (0, 0, 0)


def test_rate_series_bins_per_second() -> None:
    times = [0.1, 0.2, 0.3, 0.6, 1.9, 5.0]
    assert rate_series(times, 0.0, 2.0, bin_s=0.5) == [6.0, 2.0, 0.0, 2.0]


def test_percentiles_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) is None
    assert latency_percentiles([0.2, 0.1, 0.3]) == {"p50": 0.2, "p99": 0.3}


def test_band_times_groups_by_key_group_band() -> None:
    outputs = [("a", 1.0), ("b", 2.0), ("a", 3.0)]
    assert band_times(outputs, {"a": 0, "b": 1}) == {0: [1.0, 3.0], 1: [2.0]}
