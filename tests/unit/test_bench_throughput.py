"""The throughput benchmark's pure parts: a join point's verdict, the latency breakdown,
the summary against issue 14's targets, the records' size and /proc reading."""

from __future__ import annotations

import os
from typing import Any

import pytest

from streamer.bench.breakdown import STAGES, breakdown
from streamer.bench.join_search import evaluate, slope
from streamer.bench.loadgen import RECORD_BYTES, event_bytes
from streamer.bench.procstat import cpu_seconds, descendants
from streamer.bench.throughput_report import (
    summarize_ceiling,
    summarize_count,
    summarize_join,
    targets,
)


def test_events_are_about_93_bytes_of_json_with_a_unique_seq() -> None:
    import orjson

    for i in (0, 7, 123_456, 999_999):
        raw = event_bytes(i)
        assert len(raw) == RECORD_BYTES
        assert orjson.loads(raw)["seq"] == i
        assert orjson.loads(raw)["key"] == f"k{i % 64}"


def test_cpu_of_this_process_and_its_children() -> None:
    cpu = cpu_seconds(os.getpid())
    assert cpu is not None and cpu >= 0
    assert cpu_seconds(2**22 + 12345) is None  # no such pid
    assert os.getpid() in descendants([os.getppid()])


def _point(
    rate: float, latency: float, delivered: float = 1.0, slow_down: float = 0.0
) -> dict[str, Any]:
    """Orders completing at ``rate``/s over 20 s, each emitted ``latency`` s later (plus
    ``slow_down`` s per second elapsed: a growing backlog)."""
    n = int(rate * 20)
    last = {f"o{i}": 100.0 + i / rate for i in range(n)}
    kept = int(n * delivered)
    outputs = [(o, t + latency + slow_down * (t - 100.0)) for o, t in list(last.items())[:kept]]
    return evaluate(rate, 20.0, set(last), last, outputs, 100.0)


def test_a_point_is_sustained_when_delivered_fast_and_keeping_up() -> None:
    p = _point(500, 0.05)
    assert p["sustained"] and p["delivered"] == 1.0
    assert p["p99_ms"] == pytest.approx(50, abs=1)
    assert abs(p["backlog_growth_per_s"]) < 0.02 * 500


def test_a_point_fails_on_losses_latency_or_a_growing_backlog() -> None:
    assert not _point(500, 0.05, delivered=0.95)["sustained"]
    slow = _point(500, 1.5)
    assert not slow["sustained"] and not slow["growing"]  # slow but keeping up
    behind = _point(500, 0.05, slow_down=0.1)  # falls 10% behind
    assert behind["growing"] and not behind["sustained"]


def test_slope() -> None:
    assert slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert slope([1], [5]) == 0.0


def test_breakdown_times_each_stage_per_traced_record() -> None:
    produced = [100.0 + i * 0.001 for i in range(1000)]
    offsets = {  # seconds after produce at each boundary; seq 800 on is 10 ms slower in count
        "events.appended": 0.004, "events.polled": 0.010, "events.emitted": 0.011,
        "count.in": 0.020, "count.out": 0.022, "sink.in": 0.030, "sink.out": 0.031,
    }  # fmt: skip
    rows = []
    for seq in range(0, 1000, 10):
        slow = 0.010 if seq >= 800 else 0.0
        for stage, off in offsets.items():
            extra = slow if stage.startswith(("count.out", "sink")) else 0
            rows.append((stage, seq, produced[seq] + off + extra))
    rows.append(("count.in", 100, 999.0))  # a second mark (a replay): the first counts
    received = [(seq, produced[seq] + 0.040 + (0.010 if seq >= 800 else 0)) for seq in range(1000)]
    result = breakdown(rows, produced, [(s, r, r - 0.005) for s, r in received], first=100)
    stages = {s["stage"]: s for s in result["stages"]}
    assert [s["stage"] for s in result["stages"]] == [s[0] for s in STAGES]
    assert result["traced"] == 90  # the warm-up is left out
    assert stages["broker ingress"]["p50_ms"] == pytest.approx(4, abs=0.01)
    assert stages["source fetch"]["p50_ms"] == pytest.approx(6, abs=0.01)
    assert stages["netlayer to count"]["p99_ms"] == pytest.approx(9, abs=0.01)
    op = stages["operator + state"]
    assert op["p50_ms"] == pytest.approx(2, abs=0.01)
    assert op["p99_ms"] == pytest.approx(12, abs=0.01)
    assert stages["delivery + commit"]["p50_ms"] == pytest.approx(9, abs=0.01)
    assert result["ages"]["received"]["p99_ms"] == pytest.approx(50, abs=0.01)
    assert result["ages"]["kafka"]["samples"] == 90
    assert result["job"]["p50_ms"] == pytest.approx(36, abs=0.01)  # received - appended
    assert result["job"]["p99_ms"] == pytest.approx(46, abs=0.01)


def test_summary_against_the_targets() -> None:
    ceiling = summarize_ceiling(
        [
            {"variant": "defaults", "processes": 2, "rate": 200e3, "cpu_per_record_us": 3.0},
            {"variant": "tuned", "processes": 2, "rate": 600e3, "cpu_per_record_us": 3.0},
            {"variant": "tuned", "processes": 2, "rate": 700e3, "cpu_per_record_us": 3.0},
            {"variant": "tuned", "processes": 1, "rate": 900e3, "cpu_per_record_us": 3.0},
        ]
    )
    assert ceiling["ceiling"] == {"variant": "tuned/2", "rate": 650e3}
    count = summarize_count(
        {
            "at_least_once": [
                {"rate": 200e3, "overall_rate": 1, "cpu_per_record_us": 7.0},
                {"rate": 210e3, "overall_rate": 1, "cpu_per_record_us": 7.5},
            ],
            "exactly_once": [{"rate": 150e3, "overall_rate": 1, "cpu_per_record_us": 9.0}],
        },
        650e3,
    )
    points = {
        "streamer": [{"run": 0, "rate": 2000.0, "p50_ms": 20, "p99_ms": 80}],
        "faust": [{"run": 0, "rate": 350.0, "p50_ms": 9, "p99_ms": 70}],
    }
    join = summarize_join(
        {
            "rates": [250.0, 2000.0, 2800.0],
            "points": points,
            "max_sustained": {"streamer": [2000.0], "faust": [350.0]},
            "fails_at": {"streamer": [2800.0], "faust": [500.0]},
            "half_load": {"streamer": [{"rate": 1000.0, "p50_ms": 10, "p99_ms": 90}]},
        }
    )
    assert join["streamer"]["p99_ms_at_max"] == 80
    met = {t["target"]: t["met"] for t in targets({"count": count, "join": join})}
    assert met["keyed count at-least-once >= 30% of the tuned 2-process ceiling"] is True
    assert met["keyed count at-least-once CPU per record <= 8 us"] is True
    assert met["keyed count exactly-once within 15% of at-least-once"] is False
    assert met["keyed count at half load, p99 <= 50 ms (at-least-once)"] is None
    assert met["order join max sustained >= 5x the Faust peer's"] is True
    assert met["order join p99 <= 100 ms at half its own max"] is True
    # `bench latency` runs only the traced half-load runs: their end to end is judged
    traced = {"at_least_once": {"end_to_end": {"p50_ms": 20.0, "p99_ms": 45.0}}}
    met = {t["target"]: t["met"] for t in targets({"breakdown": traced})}
    assert met["keyed count at half load, p99 <= 50 ms (at-least-once)"] is True
    traced["at_least_once"]["end_to_end"]["p99_ms"] = 880.0
    shown = {t["target"]: t for t in targets({"breakdown": traced})}
    assert shown["keyed count at half load, p99 <= 50 ms (at-least-once)"]["met"] is False
