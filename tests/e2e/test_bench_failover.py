"""A short end-to-end run of `streamer bench failover`: structure and sanity, never timings."""

from __future__ import annotations

import pytest

from streamer.bench.failover import run_streamer

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [("lossless", 1), ("individual", 1), ("region", 16), ("full", 16)],
)
def test_a_short_failover_run_measures_each_strategy(
    strategy: str, restarted: int, kafka_bootstrap: str
) -> None:
    result = run_streamer(
        strategy,
        kafka_bootstrap,
        rate=60.0,
        duration=11.0,
        kill_at=7.0,
        victim=3,
        seed=5,
        window=3.0,
    )
    assert result["strategy"] == strategy
    assert result["tasks_restarted"] == restarted
    assert result["fell_back"] is False
    assert result["detection_s"] >= 0
    assert result["recovery_s"] is not None and result["recovery_s"] > 0
    phases = result["phases_s"]
    assert 0 <= phases["detected_at"] <= phases["deployed_at"] <= phases["running_at"]
    assert result["expected"] > 500
    assert result["duplicated"] == 0
    if strategy == "individual":
        assert result["lost"] >= 0  # the killed task's key groups may lose records
    else:
        assert result["lost"] == 0  # checkpoints and the exactly-once sink (or a replay)
    assert result["latency_s"]["p50"] is not None
    assert len(result["series"]["failed"]) == len(result["series"]["others_per_task"]) > 10
