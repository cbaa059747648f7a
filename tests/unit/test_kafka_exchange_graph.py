"""The kafka exchange in the graphs: region cuts, where checkpoints start, the topics
it needs, and the shapes the runtime refuses (one line each)."""

from __future__ import annotations

from typing import Any

import pytest

from streamer.api import StreamEnvironment
from streamer.graph import ExecutionGraph, GraphError, JobGraph, TaskId, pipelined_regions
from streamer.graph.exchanges import (
    check_kafka_exchanges,
    exchange_topics,
    has_kafka_exchange,
    starts_checkpoints,
)
from tests.graphs import ident, keyed_job_graph


def exchange_job() -> JobGraph:
    """src(2) -hash-> tag(3) =kafka, hash=> count(4) -rebalance-> sink(2)."""
    return keyed_job_graph("kx", middle="count", kafka_exchange="mid")


def tasks(*specs: tuple[str, int]) -> frozenset[TaskId]:
    return frozenset(TaskId(v, i) for v, n in specs for i in range(n))


def test_the_exchange_cuts_two_regions_and_its_consumer_starts_checkpoints() -> None:
    jg = exchange_job()
    check_kafka_exchanges(jg)
    eg = ExecutionGraph.from_job_graph(jg)
    assert pipelined_regions(eg) == [
        tasks(("src", 2), ("tag", 3)),
        tasks(("count", 4), ("sink", 2)),
    ]
    starting = {str(t) for t in eg.tasks if starts_checkpoints(eg, t)}
    assert starting == {"src#0", "src#1", "count#0", "count#1", "count#2", "count#3"}
    assert exchange_topics(jg) == {"mid": 4} and has_kafka_exchange(jg)


def two_outputs() -> JobGraph:
    env = StreamEnvironment("kx", default_parallelism=2)
    s = env.from_kafka("in", name="src").map(ident, name="m", parallelism=3)
    s.exchange("kafka", topic="mid").map(ident, name="a").to_kafka("o1", name="k1")
    s.map(ident, name="b").to_kafka("o2", name="k2")
    return env.build().job_graph


def reused_topic() -> JobGraph:
    env = StreamEnvironment("kx", default_parallelism=2)
    (
        env.from_kafka("in", name="src")
        .exchange("kafka", topic="in")
        .map(ident, name="m")
        .to_kafka("out", name="sink")
    )
    return env.build().job_graph


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            two_outputs,
            "the kafka exchange m -> a (topic 'mid') is one of several outputs of 'm': a "
            "kafka exchange must be its producer's only output (add a map after it for the "
            "other outputs)",
        ),
        (
            reused_topic,
            "the kafka exchange src -> m (topic 'in'): topic 'in' is used elsewhere in the "
            "job; give each kafka exchange a topic of its own",
        ),
    ],
)
def test_shapes_the_runtime_cannot_run_are_one_line(build: Any, message: str) -> None:
    with pytest.raises(GraphError) as info:
        check_kafka_exchanges(build())
    assert str(info.value) == message
