"""The coordinator scale model (bench/scale_model.py), run tiny and without latencies.

Structure and sanity only: which tasks restart, who gets which message, that
every failover ends ``done``. Never timings.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from streamer.graph import ExchangeType

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tests/unit is not a package: the repo root is not on the path
    sys.path.insert(0, str(REPO))

from bench.scale_model import (  # noqa: E402
    STRATEGIES,
    Latencies,
    load_shape_graph,
    run_one,
    shape_for,
)

ZERO = Latencies(deploy=0.0, cancel=0.0, update=0.0)
SIZE = 100


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, Any]]:
    return {s: run_one(SIZE, s, latencies=ZERO, keep_messages=True) for s in STRATEGIES}


def test_shape_is_the_join_of_the_issue() -> None:
    shape = shape_for(SIZE)
    assert (shape.parallelism, shape.sources, shape.sinks) == (64, 8, 8)
    assert shape.tasks == 96
    eg = load_shape_graph(shape)
    assert len(eg.tasks) == shape.tasks
    assert str(shape.failed) == "join#32"
    assert len(eg.producers_of(shape.failed)) == 3 * shape.sources
    assert len(eg.consumers_of(shape.failed)) == shape.sinks
    assert all(g.edge.is_all_to_all for t in eg.tasks for g in eg.input_gates(t))
    assert shape_for(4000).tasks == 3996


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_failover_ends_done_with_the_job_running(
    runs: dict[str, dict[str, Any]], strategy: str
) -> None:
    run = runs[strategy]
    assert run["errors"] == []
    assert run["job_state"] == "RUNNING"
    assert run["not_running_after"] == []
    failover = run["failover"]
    assert failover["status"] == "done"
    assert failover["record"]["status"] == "done"
    assert failover["record"]["strategy"] == strategy
    assert failover["fell_back"] is False
    assert run["deploy"]["messages_by_kind"]["deploy_task"] == run["tasks"]
    assert run["deploy"]["messages_by_kind"]["task_plan"] == run["tasks"]
    for key in ("wall_s", "process_cpu_s", "sim_cpu_s", "coordinator_cpu_s"):
        assert failover[key] >= 0.0
        assert run["deploy"][key] >= 0.0
    assert failover["bytes_sent"] > 0


def test_individual_restarts_one_task_and_updates_only_its_consumers(
    runs: dict[str, dict[str, Any]],
) -> None:
    run = runs["individual"]
    shape = shape_for(SIZE)
    eg = load_shape_graph(shape)
    failed = shape.failed
    failover = run["failover"]
    assert failover["tasks_restarted"] == 1
    kinds = failover["messages_by_kind"]
    assert kinds["deploy_task"] == 1
    assert kinds["task_plan"] == 1
    assert "cancel_task" not in kinds
    consumers = eg.consumers_of(failed, ExchangeType.PIPELINED)
    producers = eg.producers_of(failed, ExchangeType.PIPELINED)
    channels = sum(len(eg.channels_between(failed, c)) for c in consumers)
    assert failover["channel_updates"] == channels == shape.sinks
    sent = [tuple(m) for m in run["failover_messages"]]
    updated = sorted(peer for kind, peer in sent if kind == "update_partition_info")
    assert updated == sorted(f"{c}@0" for c in consumers)
    told_producer_failed = sorted(peer for kind, peer in sent if kind == "producer_failed")
    assert told_producer_failed == sorted(f"{c}@0" for c in consumers)
    told_consumer_failed = sorted(peer for kind, peer in sent if kind == "consumer_failed")
    assert told_consumer_failed == sorted(f"{p}@0" for p in producers)
    assert failover["messages"] == len(consumers) * 2 + len(producers) + 2


@pytest.mark.parametrize("strategy", ["region", "full"])
def test_region_and_full_restart_every_task_of_this_all_to_all_job(
    runs: dict[str, dict[str, Any]], strategy: str
) -> None:
    run = runs[strategy]
    failover = run["failover"]
    assert failover["tasks_restarted"] == run["tasks"]
    kinds = failover["messages_by_kind"]
    assert kinds["cancel_task"] == run["tasks"]
    assert kinds["deploy_task"] == run["tasks"]
    assert kinds["task_plan"] == run["tasks"]
    assert failover["channel_updates"] == 0
    assert "update_partition_info" not in kinds
    assert "producer_failed" not in kinds
