"""Pipelined regions (FLIP-1): exact regions for the seed shapes and a kafka cut."""

from __future__ import annotations

from typing import Any

import pytest

from streamer.api import StreamEnvironment
from streamer.graph import (
    ExchangeType,
    ExecutionGraph,
    GraphError,
    JobEdge,
    JobGraph,
    JobVertex,
    OperatorKind,
    OperatorSpec,
    Partitioner,
    TaskId,
    pipelined_regions,
    region_of,
    regions_by_task,
)


def ident(x: Any) -> Any:
    return x


def R(*texts: str) -> frozenset[TaskId]:
    return frozenset(TaskId.parse(t) for t in texts)


def vertex(vid: str, p: int, kind: OperatorKind = OperatorKind.MAP) -> JobVertex:
    return JobVertex(vid, vid, (OperatorSpec(vid, vid, kind),), p)


def test_source_map_sink_forward_unchained_gives_one_region_per_subtask() -> None:
    """FLIP-1 'independent pipelines': source(4) -forward-> map(4) -forward-> sink(4)."""
    jg = JobGraph(
        "job",
        (
            vertex("src", 4, OperatorKind.KAFKA_SOURCE),
            vertex("map", 4),
            vertex("sink", 4, OperatorKind.KAFKA_SINK),
        ),
        (JobEdge("src", "map", Partitioner.FORWARD), JobEdge("map", "sink", Partitioner.FORWARD)),
    )
    regions = pipelined_regions(ExecutionGraph.from_job_graph(jg))
    assert regions == [R(f"src#{i}", f"map#{i}", f"sink#{i}") for i in range(4)]


def test_chained_pipeline_gives_one_single_task_region_per_subtask() -> None:
    env = StreamEnvironment("j", default_parallelism=4)
    env.from_kafka("in", name="src").map(ident).to_kafka("out")
    regions = pipelined_regions(env.build().execution_graph())
    assert regions == [R("src#0"), R("src#1"), R("src#2"), R("src#3")]


def test_two_independent_pipelines() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    s = env.from_kafka("in", name="s")
    s.map(ident, name="m1").to_kafka("a")  # fan-out: s, m1, m2 are separate vertices
    s.map(ident, name="m2").to_kafka("b")
    env.from_kafka("other", name="t", parallelism=1).map(ident).to_kafka("c")
    regions = pipelined_regions(env.build().execution_graph())
    assert regions == [
        R("s#0", "m1#0", "m2#0"),
        R("s#1", "m1#1", "m2#1"),
        R("t#0"),  # map and sink inherit t's parallelism 1 and chain into it
    ]


def test_all_to_all_exchange_gives_one_region() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    env.from_kafka("in", name="src").key_by(lambda r: r["k"]).process(
        ident, name="proc", parallelism=3
    ).to_kafka("out", name="sink", parallelism=3)
    eg = env.build().execution_graph()
    assert pipelined_regions(eg) == [R("src#0", "src#1", "proc#0", "proc#1", "proc#2")]
    assert set(eg.tasks) == R("src#0", "src#1", "proc#0", "proc#1", "proc#2")


def test_rebalance_and_broadcast_are_all_to_all_too() -> None:
    for how in ("rebalance", "broadcast"):
        env = StreamEnvironment("j", default_parallelism=2)
        stream = env.from_kafka("in", name="src")
        stream = stream.rebalance() if how == "rebalance" else stream.broadcast()
        stream.map(ident, name="m").to_kafka("out")
        assert pipelined_regions(env.build().execution_graph()) == [
            R("src#0", "src#1", "m#0", "m#1")
        ], how


def test_kafka_exchange_cuts_regions() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    (
        env.from_kafka("in", name="src")
        .key_by(lambda r: r["k"])
        .process(ident, name="p1")
        .exchange("kafka", topic="internal")
        .key_by(lambda r: r["k"])
        .process(ident, name="p2", parallelism=3)
        .key_by(lambda r: r["k"])
        .process(ident, name="p3", parallelism=2)
        .to_kafka("out")
    )
    eg = env.build().execution_graph()
    assert pipelined_regions(eg) == [
        R("src#0", "src#1", "p1#0", "p1#1"),
        R("p2#0", "p2#1", "p2#2", "p3#0", "p3#1"),
    ]


def test_kafka_exchange_with_nothing_pipelined_after_it() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    env.from_kafka("in", name="src").exchange("kafka", topic="t").key_by(ident).process(
        ident, name="proc", parallelism=3
    ).to_kafka("out")
    regions = pipelined_regions(env.build().execution_graph())
    assert regions == [R("src#0"), R("src#1"), R("proc#0"), R("proc#1"), R("proc#2")]


def test_kafka_exchange_forward_edge() -> None:
    jg = JobGraph(
        "job",
        (vertex("a", 2, OperatorKind.KAFKA_SOURCE), vertex("b", 2), vertex("c", 2)),
        (
            JobEdge("a", "b", Partitioner.FORWARD, ExchangeType.KAFKA, topic="t"),
            JobEdge("b", "c", Partitioner.REBALANCE),
        ),
    )
    assert pipelined_regions(ExecutionGraph.from_job_graph(jg)) == [
        R("a#0"),
        R("a#1"),
        R("b#0", "b#1", "c#0", "c#1"),
    ]


def test_region_of_and_regions_by_task() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    s = env.from_kafka("in", name="s")
    s.map(ident, name="m1").to_kafka("a")
    s.map(ident, name="m2").to_kafka("b")
    eg = env.build().execution_graph()
    assert region_of(eg, TaskId("m2", 1)) == R("s#1", "m1#1", "m2#1")
    by_task = regions_by_task(eg)
    assert set(by_task) == set(eg.tasks)
    assert by_task[TaskId("s", 0)] == R("s#0", "m1#0", "m2#0")
    with pytest.raises(GraphError, match=r"^unknown task x#0 in job 'j'$"):
        region_of(eg, TaskId("x", 0))


def test_regions_partition_the_tasks() -> None:
    env = StreamEnvironment("j", default_parallelism=3)
    a = env.from_kafka("a", name="a").key_by(ident)
    b = env.from_kafka("b", name="b", parallelism=2).exchange("kafka", topic="t").key_by(ident)
    a.interval_join(b, lower_ms=0, upper_ms=1, name="join").to_kafka("out")
    eg = env.build().execution_graph()
    regions = pipelined_regions(eg)
    assert regions == [R("a#0", "a#1", "a#2", "join#0", "join#1", "join#2"), R("b#0"), R("b#1")]
    assert sum(len(r) for r in regions) == len(eg.tasks)
