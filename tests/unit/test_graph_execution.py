"""ExecutionGraph: tasks, exact channels per partitioner, multi-input gates."""

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
)


def T(text: str) -> TaskId:
    return TaskId.parse(text)


def Ts(*texts: str) -> tuple[TaskId, ...]:
    return tuple(T(t) for t in texts)


def vertex(vid: str, p: int, kind: OperatorKind = OperatorKind.MAP, **config: Any) -> JobVertex:
    return JobVertex(vid, vid, (OperatorSpec(vid, vid, kind, config),), p)


@pytest.fixture
def eg() -> ExecutionGraph:
    """a(3) -forward-> b(3); b -hash-> c(2); b -broadcast-> d(2)."""
    jg = JobGraph(
        "job",
        (
            vertex("a", 3, OperatorKind.KAFKA_SOURCE),
            vertex("b", 3),
            vertex("c", 2, OperatorKind.PROCESS, inputs=1),
            vertex("d", 2),
        ),
        (
            JobEdge("a", "b", Partitioner.FORWARD),
            JobEdge("b", "c", Partitioner.HASH, key_fn_uid="c/key0"),
            JobEdge("b", "d", Partitioner.BROADCAST),
        ),
    )
    return ExecutionGraph.from_job_graph(jg)


def test_task_id() -> None:
    t = TaskId("join", 3)
    assert str(t) == "join#3"
    assert TaskId.parse("join#3") == t
    assert TaskId.parse("a#b#12") == TaskId("a#b", 12)
    assert sorted([TaskId("b", 0), TaskId("a", 10), TaskId("a", 2)]) == [
        TaskId("a", 2),
        TaskId("a", 10),
        TaskId("b", 0),
    ]
    assert len({TaskId("a", 1), TaskId("a", 1)}) == 1
    for bad in ("join", "#3", "join#", "join#x", "join#-1"):
        with pytest.raises(GraphError, match="bad task id"):
            TaskId.parse(bad)


def test_tasks_in_topological_then_subtask_order(eg: ExecutionGraph) -> None:
    assert eg.tasks == Ts("a#0", "a#1", "a#2", "b#0", "b#1", "b#2", "c#0", "c#1", "d#0", "d#1")
    assert eg.tasks_of("c") == Ts("c#0", "c#1")
    assert eg.vertex_of(T("d#1")).vertex_id == "d"


def test_forward_channels(eg: ExecutionGraph) -> None:
    for i in range(3):
        (gate,) = eg.input_gates(TaskId("b", i))
        assert gate.channels == (TaskId("a", i),)
        assert gate.subpartition == 0
        assert gate.gate_index == 0
        (part,) = eg.result_partitions(TaskId("a", i))
        assert part.subpartitions == (TaskId("b", i),)
        assert part.partition_id == f"a->b/0@{i}"
        assert eg.producers_of(TaskId("b", i)) == (TaskId("a", i),)
        assert eg.consumers_of(TaskId("a", i)) == (TaskId("b", i),)


def test_hash_channels_are_all_to_all(eg: ExecutionGraph) -> None:
    for j in range(2):
        (gate,) = eg.input_gates(TaskId("c", j))
        assert gate.channels == Ts("b#0", "b#1", "b#2")
        assert gate.subpartition == j
        assert gate.edge.key_fn_uid == "c/key0"
        assert gate.channel_of(T("b#2")) == 2
    to_c, to_d = eg.result_partitions(T("b#1"))
    assert to_c.subpartitions == Ts("c#0", "c#1")
    assert to_c.subpartition_of(T("c#1")) == 1
    assert to_c.partition_id == "b->c/0@1"
    assert to_d.subpartitions == Ts("d#0", "d#1")
    with pytest.raises(GraphError, match=r"^c#0 does not read partition b->d/0@1$"):
        to_d.subpartition_of(T("c#0"))
    with pytest.raises(GraphError, match=r"^a#0 does not feed gate 0 of c#0$"):
        eg.input_gates(T("c#0"))[0].channel_of(T("a#0"))


def test_broadcast_channels_are_all_to_all(eg: ExecutionGraph) -> None:
    assert eg.producers_of(T("d#0")) == Ts("b#0", "b#1", "b#2")
    assert eg.input_gates(T("d#1"))[0].subpartition == 1
    assert eg.consumers_of(T("b#2")) == Ts("c#0", "c#1", "d#0", "d#1")
    assert eg.consumers_of(T("d#0")) == ()
    assert eg.producers_of(T("a#0")) == ()


def test_upstream_and_downstream(eg: ExecutionGraph) -> None:
    assert eg.upstream(T("c#1")) == frozenset(Ts("a#0", "a#1", "a#2", "b#0", "b#1", "b#2"))
    assert eg.downstream(T("a#1")) == frozenset(Ts("b#1", "c#0", "c#1", "d#0", "d#1"))
    assert eg.upstream(T("a#0")) == frozenset()


def test_unknown_task(eg: ExecutionGraph) -> None:
    with pytest.raises(GraphError, match=r"^unknown task z#0 in job 'job'$"):
        eg.input_gates(T("z#0"))
    with pytest.raises(GraphError, match=r"^unknown task a#3 in job 'job'$"):
        eg.producers_of(T("a#3"))


def _join_job() -> ExecutionGraph:
    env = StreamEnvironment("j")
    orders = env.from_kafka("orders", name="orders", parallelism=2).key_by(lambda r: r["id"])
    pays = env.from_kafka("pays", name="pays", parallelism=3).key_by(lambda r: r["oid"])
    ships = (
        env.from_kafka("ships", name="ships", parallelism=1)
        .exchange("kafka", topic="ships-x")
        .key_by(lambda r: r["oid"])
    )
    orders.interval_join(pays, ships, lower_ms=0, upper_ms=10, name="join", parallelism=4)
    return env.build().execution_graph()


def test_multi_input_join_has_one_gate_per_input() -> None:
    eg = _join_job()
    for j in range(4):
        gates = eg.input_gates(TaskId("join", j))
        assert [g.gate_index for g in gates] == [0, 1, 2]
        assert [g.channels for g in gates] == [
            Ts("orders#0", "orders#1"),
            Ts("pays#0", "pays#1", "pays#2"),
            Ts("ships#0"),
        ]
        assert [g.edge.key_fn_uid for g in gates] == ["join/key0", "join/key1", "join/key2"]
        assert [g.exchange for g in gates] == [
            ExchangeType.PIPELINED,
            ExchangeType.PIPELINED,
            ExchangeType.KAFKA,
        ]
        assert {g.subpartition for g in gates} == {j}
    assert eg.result_partitions(T("pays#2"))[0].subpartitions == Ts(
        "join#0", "join#1", "join#2", "join#3"
    )


def test_exchange_filter_for_the_recovery_protocol() -> None:
    eg = _join_job()
    join0 = T("join#0")
    assert eg.producers_of(join0) == Ts(
        "orders#0", "orders#1", "pays#0", "pays#1", "pays#2", "ships#0"
    )
    assert eg.producers_of(join0, ExchangeType.PIPELINED) == Ts(
        "orders#0", "orders#1", "pays#0", "pays#1", "pays#2"
    )
    assert eg.producers_of(join0, ExchangeType.KAFKA) == Ts("ships#0")
    assert eg.consumers_of(T("ships#0"), ExchangeType.PIPELINED) == ()
    assert len(eg.consumers_of(T("ships#0"))) == 4


def test_self_join_feeds_two_gates_from_the_same_producer() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    ks = env.from_kafka("x", name="x").key_by(lambda r: r)
    ks.connect(ks).process(lambda *a: None, name="self")
    eg = env.build().execution_graph()
    assert eg.channels_between(T("x#1"), T("self#0")) == ((0, 1), (1, 1))
    assert eg.producers_of(T("self#0")) == Ts("x#0", "x#1")
    assert [p.partition_id for p in eg.result_partitions(T("x#0"))] == [
        "x->self/0@0",
        "x->self/1@0",
    ]
    assert eg.channels_between(T("self#0"), T("x#0")) == ()
