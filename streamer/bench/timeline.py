"""Measurements of one failover run, as pure functions over timelines (no I/O).

A run gives the kill time, the failover record and the job's outputs, each
with the wall-clock time it was emitted and the key group band (the task) it
belongs to. From those:

- ``recovery_time``: kill -> first output again for the failed task's band;
- ``max_gap``: the largest gap between consecutive outputs of a band inside a
  window (the window's edges count as outputs, so silence at an edge counts);
- ``oracle_diff``: results lost and duplicated against the expected set;
- ``rate_series`` / ``latency_percentiles``: throughput over time and
  end-to-end latency.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


def recovery_time(times: Iterable[float], kill_at: float) -> float | None:
    """Seconds from ``kill_at`` to the first output at or after it (None: never)."""
    after = [t for t in times if t >= kill_at]
    return min(after) - kill_at if after else None


def max_gap(times: Iterable[float], start: float, end: float) -> float:
    """Largest gap between consecutive outputs in ``[start, end]``, edges included."""
    if end <= start:
        raise ValueError(f"empty window [{start}, {end}]")
    inside = sorted(t for t in times if start <= t <= end)
    points = [start, *inside, end]
    return max(b - a for a, b in itertools.pairwise(points))


@dataclass(frozen=True)
class OracleDiff:
    expected: int
    delivered: int
    lost: int
    duplicated: int  # extra copies beyond the first
    unexpected: int  # results the oracle does not know


def oracle_diff(expected: Iterable[str], delivered: Iterable[str]) -> OracleDiff:
    """Compare delivered result ids (with repeats) with the expected set."""
    want = set(expected)
    got = Counter(delivered)
    return OracleDiff(
        expected=len(want),
        delivered=sum(got.values()),
        lost=len(want - set(got)),
        duplicated=sum(n - 1 for n in got.values() if n > 1),
        unexpected=sum(1 for k in got if k not in want),
    )


def rate_series(
    times: Iterable[float], start: float, end: float, bin_s: float = 0.25
) -> list[float]:
    """Outputs per second in consecutive bins of ``bin_s`` from ``start`` to ``end``."""
    n = max(1, int((end - start) / bin_s + 0.5))
    bins = [0] * n
    for t in times:
        i = int((t - start) / bin_s)
        if 0 <= i < n:
            bins[i] += 1
    return [c / bin_s for c in bins]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def latency_percentiles(latencies: Sequence[float]) -> dict[str, float | None]:
    return {"p50": percentile(latencies, 0.50), "p99": percentile(latencies, 0.99)}


def band_times(
    outputs: Iterable[tuple[str, float]], band_of: Mapping[str, int] | None = None
) -> dict[int, list[float]]:
    """Group ``(result_id, emitted_at)`` by band (``band_of[result_id]``)."""
    out: dict[int, list[float]] = {}
    for rid, t in outputs:
        band = band_of[rid] if band_of is not None else 0
        out.setdefault(band, []).append(t)
    return out
